"""Page 3: the group alignment A_i of every training example; flag examples for removal."""
import numpy as np
import streamlit as st

from core.runs import annotations

from core.views import data as views, distributions, selection as vs
from dashboard import context, jobs_panel, widgets

PLOT_MAX = 5000  # points in the lasso plot: the extremes of the filtered examples and an even sample between
PLOT_EXTREMES = 1000  # the most negative and the most positive kept in the plot, each

ctx = context.current()
st.title("Alignment")
analysis = jobs_panel.require_analysis(ctx)
data = context.dataset(ctx)
score = st.radio("Scores", ["alignment", "auto_alignment"], horizontal=True, key="align_score",
                 format_func={"alignment": "D3M (true validation groups)",
                              "auto_alignment": "Auto-D3M (pseudo-groups)"}.get)
table = context.train_table(ctx, score)
summary = vs.alignment_summary(table["alignment"].to_numpy())
hist = context.alignment_histogram(ctx, score)
factor, unit = hist["factor"], hist["unit"]
axis_title = f"group alignment A_i ({unit})" if unit else "group alignment A_i"
st.caption("A_i < 0: training on example i lowers the model's margin on the high-loss validation groups "
           "(equation 3). Removing these examples is D3M's default."
           + (f" A_i is shown {unit} (so 2.5 on an axis is 2.5{unit})." if unit else ""))
c1, c2, c3 = st.columns(3)
c1.metric("training examples", f"{summary['n']:,}")
c2.metric("A_i < 0", f"{summary['negative']:,}", help="the default k")
c3.metric("flagged for removal", len(views.persisted(analysis, "flagged", [])))

fig = widgets.histogram_figure(hist["bins"], f"Distribution of A_i over the training examples "
                               f"({summary['negative']:,} with A_i < 0)", axis_title, "training examples",
                               "class", scale=factor, order=data.class_names)
fig.add_vline(x=0, line_dash="dash", annotation_text="A_i = 0", annotation_position="top right")
st.plotly_chart(fig, width="stretch")

st.subheader("Training examples")
f1, f2, f3 = st.columns(3)
classes = f1.multiselect("Class", data.class_names, key="align_classes")
attr = f2.selectbox("Attribute", ["(any)", *data.attributes], key="align_attr")
values = (f3.multiselect(f"{attr} is", context.options(ctx, score, attr), key=f"align_values_{attr}")
          if attr != "(any)" else [])
pct = st.slider("A_i percentile between (0: the most negative)", 0.0, 100.0, (0.0, 100.0), step=0.5,
                format="%.1f", key=f"align_pct_{score}")
lo, hi = distributions.percentile_range(table["alignment"].to_numpy(), *pct)
mask = vs.filter_mask(table, classes, {attr: values} if values else None, pct)
positions = np.flatnonzero(mask)  # the matching rows (no copy of the 160,000-row table)
n_shown = len(positions)
st.caption(f"{n_shown:,} examples match: A_i from {lo * factor:.3g} to {hi * factor:.3g}"
           + (f" ({unit})" if unit else "") + f", i.e. {lo:.3e} to {hi:.3e}.")

plotted = positions[distributions.downsample(table["alignment"].to_numpy()[positions], PLOT_MAX, PLOT_EXTREMES)]
points = table.iloc[plotted].assign(shown_alignment=lambda t: t["alignment"] * factor)
sampled = len(points) < n_shown
rows_shown = [c for c in data.class_names if c in set(points["class"])]  # the classes plotted, in order
scatter = widgets.lasso_scatter(
    points.assign(A_i=points["alignment"].map("{:.3e}".format)), "shown_alignment", "class", "group",
    ["A_i", *data.attributes], f"Lasso or box-select points to flag them ({len(points):,} of {n_shown:,} shown"
    + (f": the {PLOT_EXTREMES:,} most negative and most positive, an even sample between)" if sampled else ")"),
    axis_title, rows_shown)
scatter.update_layout(dragmode="lasso", height=max(320, 120 + 40 * len(rows_shown)))
event = st.plotly_chart(scatter, on_select="rerun", selection_mode=["lasso", "box"], key=f"align_plot_{score}",
                        width="stretch")
lassoed = vs.ids_from_points(event.selection.points) if event else []

s1, s2, s3, s4 = st.columns([2, 2, 1, 1])
sort_by = s2.selectbox("Sort by", ["alignment", "id", "class", "group", *data.attributes], key="align_sort")
ascending = s3.toggle("Ascending", True, key="align_asc")
size = s4.selectbox("Rows per page", [25, 50, 100], key="align_size")
pages = vs.n_pages(n_shown, size)
page = s1.number_input(f"Page (of {pages}; {n_shown:,} examples match)", 1, pages, 1, key="align_page")
order = context.sort_order(ctx, score, sort_by, ascending)
rows = vs.sorted_page(table, sort_by, ascending, min(int(page), pages), size, order, mask) if n_shown else table[:0]
rows = rows.assign(image=[views.thumbnail_uri(data.images[i]) for i in rows["id"]])
selection = st.dataframe(rows[["image", *[c for c in rows.columns if c != "image"]]], hide_index=True,
                         on_select="rerun", selection_mode="multi-row", key=f"align_table_{score}",
                         width="stretch",
                         column_config={"image": st.column_config.ImageColumn("image", width="small"),
                                        "alignment": st.column_config.NumberColumn("A_i", format="%.3e"),
                                        "percentile": st.column_config.NumberColumn(
                                            "A_i percentile", format="%.1f",
                                            help="0: the most negative A_i of the training examples")})
picked = rows["id"].iloc[selection.selection.rows].tolist() if selection else []

b1, b2, b3, b4 = st.columns(4)
if b1.button(f"Flag {len(picked) + len(lassoed)} selected", disabled=not (picked or lassoed), key="flag_selected"):
    jobs_panel.attempt(annotations.update_id_set, analysis, "flagged", add=picked + lassoed)
    st.rerun()
if b2.button(f"Flag all {n_shown:,} matching", key="flag_all", disabled=not n_shown):
    jobs_panel.attempt(annotations.update_id_set, analysis, "flagged", add=table["id"].to_numpy()[positions].tolist())
    st.rerun()
if b3.button("Unflag selected", disabled=not (picked or lassoed), key="unflag_selected"):
    jobs_panel.attempt(annotations.update_id_set, analysis, "flagged", remove=picked + lassoed)
    st.rerun()
if b4.button("Clear all flags", key="flag_clear"):
    jobs_panel.attempt(annotations.update_id_set, analysis, "flagged",
                       remove=views.persisted(analysis, "flagged", []))
    st.rerun()

flagged = np.asarray(views.persisted(analysis, "flagged", []), dtype=np.int64)
with st.expander(f"Flagged examples ({len(flagged)}): retrain without them on the Debias page"):
    widgets.image_grid(data, flagged, key="flagged_grid")
