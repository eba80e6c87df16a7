"""Page 6: every run of the analysis side by side; charts, overlap, export, delete."""
import plotly.express as px
import streamlit as st

from core.views import data as views, runs as vr

from dashboard import context, jobs_panel, widgets

OVERLAP_MAX = 12  # runs in the overlap heatmap at once (its cells stay readable at 1400 px)

ctx = context.current()
st.title("Compare runs")
analysis = jobs_panel.require_analysis(ctx)
table = context.run_views(ctx)["table"]
st.dataframe(table.drop(columns=["name"]), hide_index=True, width="stretch", key="compare_table", column_config={
    "test_wga": st.column_config.NumberColumn("test WGA", format="percent"),
    "val_wga": st.column_config.NumberColumn("val WGA", format="percent"),
    "test_acc": st.column_config.NumberColumn("test average acc.", format="percent"),
    "test_balanced_acc": st.column_config.NumberColumn("test balanced acc.", format="percent"),
    "test_macro_f1": st.column_config.NumberColumn("test macro-F1", format="percent"),
    "seconds": st.column_config.NumberColumn("time (s)", format="%.1f"),
    "n_removed": st.column_config.NumberColumn("n removed"),
    "control_of": st.column_config.TextColumn("control of")})

points, erm_wga = vr.wga_vs_k(table)
if not points.empty:
    fig = px.scatter(points, x="n_removed", y="test_wga", color="method", symbol="method", hover_data=["run", "seed"],
                     title="Test worst-group accuracy vs examples removed",
                     labels={"n_removed": "training examples removed (k)", "test_wga": "test worst-group accuracy"})
    fig.update_traces(marker={"size": 11})
    if erm_wga is not None:
        fig.add_hline(y=erm_wga, line_dash="dash", annotation_text="ERM (no removal)",
                      annotation_position="top left")
    fig.update_yaxes(tickformat=".0%", range=[0, 1.05])
    fig.update_xaxes(rangemode="tozero")
    st.plotly_chart(fig, width="stretch")

for report, rows in context.run_views(ctx)["reports"]:
    st.subheader(report.title)
    st.caption(report.caption)
    pct = st.column_config.NumberColumn(format="percent")
    st.dataframe(rows, hide_index=True, width="stretch", key=f"compare_report_{report.title}",
                 column_config={c: pct for c in rows.columns if c == "sparsity" or " acc " in c or c in report.percent})

done = table[table["state"] == "done"]
names = dict(zip(done["run"], done["name"]))
st.subheader("Per-group test accuracy")
picked = st.multiselect("Runs", list(names), default=list(names)[:4], format_func=names.get, key="compare_runs")
if picked:
    bars = views.per_group_accuracy({names[r]: ctx.store.get(r).read_json("metrics") for r in picked})
    st.plotly_chart(widgets.group_bars(bars, "Test accuracy per group (worst first)"), width="stretch")

removal = [r for r in names if r != analysis.id]
if len(removal) >= 2:
    st.subheader("Overlap of the removal sets (Jaccard)")
    chosen = [r for r in picked if r != analysis.id]
    shown = chosen if len(chosen) >= 2 else removal[:OVERLAP_MAX]
    if len(shown) > OVERLAP_MAX:
        st.caption(f"The first {OVERLAP_MAX} of the {len(shown)} runs picked above.")
        shown = shown[:OVERLAP_MAX]
    elif len(chosen) < 2:
        st.caption(f"Runs: the first {len(shown)} of {len(removal)}; pick runs above to compare others.")
    jac = context.jaccard(ctx, shown).rename(index=names, columns=names)
    fig = px.imshow(jac, text_auto=".2f", zmin=0, zmax=1, color_continuous_scale="Blues",
                    labels={"color": "Jaccard"}, aspect="auto")
    widgets.category_axis(fig, "x")
    widgets.category_axis(fig, "y")
    st.plotly_chart(fig, width="stretch")

others = table[table["run"] != analysis.id]
if not others.empty:
    st.subheader("Export or delete a run")
    labels = dict(zip(others["run"], [f"{n} ({s})" for n, s in zip(others["name"], others["state"])]))
    run_id = st.selectbox("Run", list(labels), format_func=labels.get, key="compare_export_run")
    run = ctx.store.get(run_id)
    c1, c2, c3 = st.columns(3)
    if run.has("removed.csv") and run.has("metrics.json"):
        c1.download_button("Removed ids (CSV)", run.file("removed.csv").read_bytes(), f"{run.id}-removed.csv",
                           "text/csv", key="dl_removed")
        c2.download_button("Metrics (CSV)", vr.metrics_long(run.read_json("metrics")).to_csv(index=False),
                           f"{run.id}-metrics.csv", "text/csv", key="dl_metrics")
    else:
        c1.caption("Not finished: nothing to export.")
    sure = c3.checkbox("I am sure", key=f"delete_sure_{run_id}")
    if c3.button("Delete run", disabled=not sure, key="delete_run"):
        jobs_panel.attempt(ctx.store.delete, run_id)
        st.rerun()
