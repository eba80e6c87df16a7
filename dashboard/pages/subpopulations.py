"""Page 4: mean A_i per (class, attribute value) cell; open a cell, exclude cells from training."""
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.data import categories
from core.runs import annotations

from core.views import data as views, distributions, selection as vs
from dashboard import context, jobs_panel, widgets

ctx = context.current()
st.title("Subpopulations")
analysis = jobs_panel.require_analysis(ctx)
data = context.dataset(ctx)
subpop = context.csv(analysis, "subpopulations.csv")
if subpop.empty:
    st.info("This dataset has no attribute columns, so there are no subpopulations to show.")
    st.stop()
st.caption("Mean group alignment A_i (D3M) of the training examples in each class x attribute-value cell. "
           f"Strongly negative cells hold examples that hurt the worst groups. Cells with fewer than "
           f"{vs.LOW_COUNT} examples are marked ⚠: their mean is noisy.")
attribute = st.selectbox("Attribute", categories.order(subpop["attribute"].unique()), key="sub_attr")
hm = vs.heatmap(subpop, attribute, class_names=data.class_names)
mean, count, low = hm["mean"], hm["count"], hm["low"]
text = np.where(low.to_numpy(), "⚠ n=" + count.astype(str).to_numpy(), "n=" + count.astype(str).to_numpy())
factor, unit = distributions.unit(mean.to_numpy()[np.isfinite(mean.to_numpy())])  # e.g. ×10⁻⁶
limit = 1.6 * factor * float(np.nanmax(np.abs(mean.to_numpy()))) or 1.0  # headroom: cell labels stay readable
fig = go.Figure(go.Heatmap(
    z=factor * mean.to_numpy(), x=list(mean.columns), y=list(mean.index), text=text, texttemplate="%{text}",
    colorscale="RdBu", zmid=0, zmin=-limit, zmax=limit, hoverinfo="skip",
    colorbar={"title": "mean A_i" + (f"<br>({unit})" if unit else "")}))
# Invisible markers on the cell centres carry the hover text and make a click on a cell select it
# (a heatmap trace itself is not selectable); customdata[0] is the cell's key.
vi, ci = [a.ravel() for a in np.meshgrid(np.arange(len(mean.index)), np.arange(len(mean.columns)), indexing="ij")]
fig.add_scatter(x=mean.columns[ci], y=mean.index[vi], mode="markers", marker={"size": 40, "opacity": 0},
                showlegend=False, customdata=np.stack([
                    [vs.cell_key({"attribute": attribute, "value": mean.index[v], "class": mean.columns[c]})
                     for v, c in zip(vi, ci)], mean.to_numpy()[vi, ci], count.to_numpy()[vi, ci]], axis=1),
                hovertemplate="%{customdata[0]}<br>mean A_i %{customdata[1]:.3e}<br>%{customdata[2]} examples"
                              "<extra></extra>")
fig.update_layout(title=f"Mean A_i by class and {attribute}", xaxis_title="class", yaxis_title=attribute,
                  height=max(320, 50 * len(mean.index) + 180))
fig.update_xaxes(tickangle=-30 if len(mean.columns) > 12 else 0, automargin=True)
fig.update_yaxes(automargin=True)
widgets.category_axis(fig, "x", list(mean.columns))  # classes 0 and 1 are two columns, not an axis from -0.5
widgets.category_axis(fig, "y", list(mean.index))
event = st.plotly_chart(fig, on_select="rerun", selection_mode="points", key=f"sub_heatmap_{attribute}",
                        width="stretch")

clicked = [p["customdata"][0] for p in (event.selection.points if event else []) if p.get("customdata")]
if clicked and clicked[0] != st.session_state.get(f"sub_clicked_{attribute}"):
    # a new click on the heatmap picks that cell in the selectbox below (once: the selectbox stays free)
    st.session_state[f"sub_clicked_{attribute}"] = st.session_state[f"sub_cell_{attribute}"] = clicked[0]
by_key = {vs.cell_key(c): c for c in vs.cells_of(hm, attribute)}
chosen = by_key[st.selectbox("Cell (most negative first; or click the heatmap)", list(by_key),
                             key=f"sub_cell_{attribute}")]
ids = vs.cell_ids(data, context.array(analysis, "train_ids"), chosen)
c1, c2 = st.columns(2)
c1.metric("training examples in the cell", f"{len(ids):,}")
c2.metric("mean A_i", f"{mean.loc[chosen['value'], chosen['class']]:.3e}")
excluded = [categories.cell(c["attribute"], c["value"], c["class"])
            for c in views.persisted(analysis, "excluded_cells", [])]
is_excluded = st.toggle("Exclude this subpopulation from training", value=chosen in excluded,
                        key=f"sub_exclude_{vs.cell_key(chosen)}")
if is_excluded != (chosen in excluded):
    excluded = jobs_panel.attempt(annotations.toggle_cell, analysis, chosen, is_excluded)
widgets.image_grid(data, ids, key="sub_grid")

st.subheader(f"Excluded subpopulations ({len(excluded)})")
if excluded:
    st.dataframe(subpop.merge(pd.DataFrame(excluded), on=["attribute", "value", "class"]),
                 hide_index=True, column_config={"mean_alignment": st.column_config.NumberColumn("mean A_i",
                                                                                                 format="%.3e")})
    st.caption("Retrain without them on the Debias page (method: Excluded subpopulations).")
else:
    st.caption("None yet: choose a cell and switch on 'Exclude this subpopulation from training'.")
