"""Page 2 (Auto-D3M): per class, validation examples along the top principal component of
their attributions, the 35% split, and the examples at both poles."""
import streamlit as st

from core.runs import annotations

from core.views import distributions, selection as vs
from dashboard import context, jobs_panel, widgets

ctx = context.current()
st.title("Extremes per class (Auto-D3M)")
analysis = jobs_panel.require_analysis(ctx)
data = context.dataset(ctx)
auto = analysis.read_json("auto")
names = vs.pseudo_group_names(analysis)
st.caption("For each class, the validation examples are projected on the top principal component of their "
           f"TRAK attribution rows. The {auto['fraction']:.0%} side with the higher ERM loss becomes a "
           "pseudo-group: no group labels are used. Auto-D3M then debiases against these pseudo-groups.")

args = (data, context.array(analysis, "val_ids"), context.array(analysis, "auto_projection"),
        context.array(analysis, "auto_groups"), context.array(analysis, "erm_logits_val"), names)
overview = vs.extremes_overview(*args)
with st.expander(f"All {data.n_classes} classes at a glance (lowest low-side accuracy first)",
                 expanded=data.n_classes > 2):
    st.dataframe(overview, hide_index=True, width="stretch", key="extremes_overview",
                 column_config={"low: ERM accuracy": widgets.PERCENT, "high: ERM accuracy": widgets.PERCENT})
c1, c2 = st.columns(2)
cls_name = c1.selectbox("Class (lowest low-side accuracy first)", list(overview["class"]), key="extremes_class")
cls = data.class_names.index(cls_name)
n = c2.slider("Examples shown per pole", 4, 32, 8, step=4, key="extremes_n")
ex = vs.class_extremes(*args, cls, n)
threshold = auto["thresholds"][str(cls)]
frame = ex["frame"]
projection = frame["projection"].to_numpy()
factor, unit = distributions.unit(projection)
fig = widgets.histogram_figure(distributions.histogram(projection, frame["pseudo_group"].to_numpy(), 40, tail=context.TAIL),
                               f"{cls_name}: validation examples along the top principal component",
                               "projection on the top principal component" + (f" ({unit})" if unit else ""),
                               "validation examples", "pseudo-group",
                               {names[2 * cls]: "#d62728", names[2 * cls + 1]: "#1f77b4"}, scale=factor)
fig.add_vline(x=threshold * factor, line_dash="dash", annotation_text=f"{auto['fraction']:.0%} threshold")
st.plotly_chart(fig, width="stretch")

for col, side in zip(st.columns(2), ("low", "high")):
    pole = ex["poles"][side]
    with col:
        st.subheader(pole["name"])
        a, b = st.columns(2)
        a.metric("ERM accuracy on this side", widgets.pct(pole["accuracy"]))
        b.metric("validation examples", pole["count"])
        if data.n_groups > data.n_classes:
            st.caption("True-group make-up: " + ", ".join(f"{g}: {c}" for g, c in pole["make_up"].items()))
        end = "lowest" if side == "low" else "highest"
        st.caption(f"The {len(pole['ids'])} examples with the {end} projection:")
        widgets.image_grid(data, pole["ids"], [data.group_names[data.groups[i]] for i in pole["ids"]],
                           key=f"pole_{side}")

st.divider()
st.subheader("Name the pseudo-groups")
st.caption("Names are stored with the analysis and used on the Debias page.")
with st.form(f"rename_{cls}"):
    new = {g: st.text_input(f"Pseudo-group {g}", value=names[g], key=f"name_{analysis.id}_{g}")
           for g in (2 * cls, 2 * cls + 1)}
    save, reset = st.columns([1, 5])
    if save.form_submit_button("Save names"):
        jobs_panel.attempt(annotations.rename_pseudo_groups, analysis, new)
        st.rerun()
    if reset.form_submit_button("Reset to the default names"):
        jobs_panel.attempt(annotations.reset_pseudo_group_names, analysis, list(new))
        for g in new:
            st.session_state.pop(f"name_{analysis.id}_{g}", None)  # the boxes show the defaults again
        st.rerun()
match = auto.get("match", {})
if match:
    st.caption(f"Agreement of the pseudo-groups with the true groups (adjusted Rand index): "
               f"{match['ari_overall']:.2f} overall.")
