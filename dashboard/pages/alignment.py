"""Page 3: the group alignment A_i of every training example; flag examples for removal."""
import numpy as np
import plotly.express as px
import streamlit as st

from core.runs import annotations

from core.views import data as views, selection as vs
from dashboard import context, jobs_panel, widgets

PLOT_MAX = 5000  # points in the lasso plot: the most negative scores of the filtered examples

ctx = context.current()
st.title("Alignment")
analysis = jobs_panel.require_analysis(ctx)
data = context.dataset(ctx)
score = st.radio("Scores", ["alignment", "auto_alignment"], horizontal=True, key="align_score",
                 format_func={"alignment": "D3M (true validation groups)",
                              "auto_alignment": "Auto-D3M (pseudo-groups)"}.get)
table = context.train_table(ctx, score)
summary = vs.alignment_summary(table["alignment"].to_numpy())
st.caption("A_i < 0: training on example i lowers the model's margin on the high-loss validation groups "
           "(equation 3). Removing these examples is D3M's default.")
c1, c2, c3 = st.columns(3)
c1.metric("training examples", f"{summary['n']:,}")
c2.metric("A_i < 0", f"{summary['negative']:,}", help="the default k")
c3.metric("flagged for removal", len(views.persisted(analysis, "flagged", [])))

fig = widgets.histogram_figure(vs.histogram(table["alignment"].to_numpy(), table["class"].to_numpy(), 60),
                               f"Distribution of A_i over the training examples ({summary['negative']:,} with A_i < 0)",
                               "group alignment A_i", "training examples", "class")
fig.add_vline(x=0, line_dash="dash", annotation_text="A_i = 0", annotation_position="top right")
st.plotly_chart(fig, width="stretch")

st.subheader("Training examples")
f1, f2, f3 = st.columns(3)
classes = f1.multiselect("Class", data.class_names, key="align_classes")
attr = f2.selectbox("Attribute", ["(any)", *data.attributes], key="align_attr")
values = (f3.multiselect(f"{attr} is", sorted(table[attr].unique()), key=f"align_values_{attr}")
          if attr != "(any)" else [])
lo, hi = float(table["alignment"].min()), float(table["alignment"].max())
score_range = st.slider("A_i between", lo, hi, (lo, hi), format="%.2e", key=f"align_range_{score}")
shown = vs.filter_examples(table, classes, {attr: values} if values else None, score_range)

points = shown.nsmallest(PLOT_MAX, "alignment")
scatter = px.scatter(points, x="alignment", y="class", color="group", custom_data=["id"], hover_data=data.attributes,
                     title=f"Lasso or box-select points to flag them ({len(points):,} of {len(shown):,} shown: "
                           "the most negative)", labels={"alignment": "group alignment A_i"})
scatter.update_traces(marker={"size": 6, "opacity": 0.6})
scatter.update_layout(dragmode="lasso", height=320)
event = st.plotly_chart(scatter, on_select="rerun", selection_mode=["lasso", "box"], key=f"align_plot_{score}",
                        width="stretch")
lassoed = vs.ids_from_points(event.selection.points) if event else []

s1, s2, s3, s4 = st.columns([2, 2, 1, 1])
sort_by = s2.selectbox("Sort by", ["alignment", "id", "class", "group", *data.attributes], key="align_sort")
ascending = s3.toggle("Ascending", True, key="align_asc")
size = s4.selectbox("Rows per page", [25, 50, 100], key="align_size")
pages = vs.n_pages(len(shown), size)
page = s1.number_input(f"Page (of {pages}; {len(shown):,} examples match)", 1, pages, 1, key="align_page")
rows = vs.sorted_page(shown, sort_by, ascending, min(int(page), pages), size) if len(shown) else shown
rows = rows.assign(image=[views.thumbnail_uri(data.images[i]) for i in rows["id"]])
selection = st.dataframe(rows[["image", *[c for c in rows.columns if c != "image"]]], hide_index=True,
                         on_select="rerun", selection_mode="multi-row", key=f"align_table_{score}",
                         width="stretch",
                         column_config={"image": st.column_config.ImageColumn("image", width="small"),
                                        "alignment": st.column_config.NumberColumn("A_i", format="%.3e")})
picked = rows["id"].iloc[selection.selection.rows].tolist() if selection else []

b1, b2, b3, b4 = st.columns(4)
if b1.button(f"Flag {len(picked) + len(lassoed)} selected", disabled=not (picked or lassoed), key="flag_selected"):
    annotations.update_id_set(analysis, "flagged", add=picked + lassoed)
    st.rerun()
if b2.button(f"Flag all {len(shown):,} matching", key="flag_all", disabled=shown.empty):
    annotations.update_id_set(analysis, "flagged", add=shown["id"].tolist())
    st.rerun()
if b3.button("Unflag selected", disabled=not (picked or lassoed), key="unflag_selected"):
    annotations.update_id_set(analysis, "flagged", remove=picked + lassoed)
    st.rerun()
if b4.button("Clear all flags", key="flag_clear"):
    annotations.update_id_set(analysis, "flagged", remove=views.persisted(analysis, "flagged", []))
    st.rerun()

flagged = np.asarray(views.persisted(analysis, "flagged", []), dtype=np.int64)
with st.expander(f"Flagged examples ({len(flagged)}): retrain without them on the Debias page"):
    widgets.image_grid(data, flagged, key="flagged_grid")
