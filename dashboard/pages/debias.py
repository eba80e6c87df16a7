"""Page 5: retrain without a chosen set of training examples (one click), with a random control."""
import plotly.express as px
import streamlit as st

from core.views import data as views, runs as vr, selection as vs
from core.pipeline.debias import start_debias
from core.methods import METHODS
from core.methods.selection import parse_k_sweep
from core.views.summary import pipeline_summary
from dashboard import context, jobs_panel, widgets

ctx = context.current()
st.title("Debias")
analysis = jobs_panel.require_analysis(ctx)
flagged = views.persisted(analysis, "flagged", [])
cells = views.persisted(analysis, "excluded_cells", [])
choices = {c["name"]: c for c in vr.method_choices(METHODS, flagged, cells, context.dataset(ctx))}
name = st.radio("Method", list(choices), key="debias_method",
                format_func=lambda n: f"{choices[n]['title']}  ·  group labels train/val: {choices[n]['group_info']}",
                help="Group labels each method uses on the training / validation split (as in the paper's Table 1).")
choice = choices[name]
st.caption(f"{choice['title']} trains on {choice['trains_on']}.")
n_train = len(context.array(analysis, "train_ids"))
k, k_sweep = None, []
if choice["needs"] == "k":
    default_k = vs.alignment_summary(context.array(analysis, choice["alignment"]))["negative"]
    k = st.columns([3, 2])[0].slider("k: training examples to remove", 0, n_train, default_k, key=f"debias_k_{name}",
                  help=f"Default: the A_i < 0 heuristic (k = {default_k}).")
    st.caption(f"A_i < 0 heuristic: k = **{default_k:,}** of {n_train:,} training examples"
               f" ({default_k / n_train:.1%}).")
    if not choice["control"]:
        text = st.text_input("Or sweep k (comma-separated); the k with the best validation worst-group "
                             "accuracy is kept", key=f"debias_sweep_{name}", placeholder="e.g. 20, 50, 100")
        try:
            k_sweep = parse_k_sweep(text)
        except ValueError as exc:
            st.error(str(exc))
            st.stop()
    curve = context.run_views(ctx)["sweep"]
    if not curve.empty:
        fig = px.line(curve, x="k", y="val_wga", color="method", line_group="run", markers=True,
                      title="Validation worst-group accuracy of the k sweeps run so far",
                      labels={"val_wga": "validation worst-group accuracy", "k": "k (examples removed)"})
        fig.add_vline(x=default_k, line_dash="dash", annotation_text="A_i < 0 heuristic")
        fig.add_vline(x=k, line_dash="dot", line_color="green", annotation_text="chosen k",
                      annotation_position="bottom right")
        fig.update_yaxes(tickformat=".0%")
        st.plotly_chart(fig, width="stretch")
elif choice["needs"] == "flagged":
    st.caption(f"Removes the {len(flagged):,} examples flagged on the Alignment page.")
elif choice["needs"] == "cells":
    st.caption(f"Removes every training example of the {len(cells)} excluded subpopulation(s): "
               + "; ".join(vs.cell_key(c) for c in cells))
if choice["alignment"] == "auto_alignment":
    st.caption("Pseudo-groups: " + "; ".join(vs.pseudo_group_names(analysis)))
options, problems = {}, []
if choice["options"]:
    with st.expander(f"{choice['title']} settings (defaults preset)"):
        options, problems = widgets.option_inputs(name, choice["options"])
seeds = st.columns([3, 2])[0].multiselect("Seeds (one run each)", list(range(10)), default=[0], key="debias_seeds")
control = st.checkbox("Also train a random control (removes as many random examples)", value=True,
                      key="debias_control", disabled=not choice["removes"] or choice["control"])
if not choice["available"]:
    st.warning(f"{choice['title']}: {choice['note']}.")
if st.button("Retrain", type="primary", disabled=not (choice["available"] and seeds) or bool(problems),
             key="debias_start"):
    for seed in seeds:
        jobs_panel.attempt(start_debias, ctx.store, analysis.id, name,
                           vr.debias_params(choice, seed, k, k_sweep, flagged, cells, options), control=control)
    st.rerun()

run_views = context.run_views(ctx)
active = run_views["table"].query("state in ('queued', 'running') and run != @analysis.id")["run"]
for run in [ctx.store.get(r) for r in active]:
    jobs_panel.progress_panel(str(ctx.workdir), run.id, f"{run.label} (seed {run.config()['params'].get('seed')})")

latest = run_views["latest"]
if latest is not None:
    summary = pipeline_summary(ctx.store, latest)
    st.subheader(f"Latest result: {latest.label}, {summary['n_removed']:,} examples removed")
    table = vr.result_table(summary, latest.read_json("metrics")["title"])
    labels = {"test_wga": "test WGA", "test_acc": "test average acc.", "test_balanced_acc": "test balanced acc.",
              "test_macro_f1": "test macro-F1", "val_wga": "val WGA", "test_wga_change": "test WGA vs ERM"}
    st.dataframe(table, hide_index=True, width="stretch",
                 column_config={c: st.column_config.NumberColumn(label, format="percent") for c, label in labels.items()})
    st.caption("test WGA vs ERM: the change in test worst-group accuracy over the ERM model (percentage "
               "points). See Compare runs for all runs.")
for run in ctx.store.list("debias", parent=analysis.id)[-3:]:
    jobs_panel.show_failure(run)
