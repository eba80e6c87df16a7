"""Page 1: what the data is and how well the ERM model does on each group."""
import pandas as pd
import streamlit as st

from core.views import data as views
from core.errors import DatasetError
from dashboard import context, jobs_panel, widgets

ctx = context.current()
st.title("Data and model")
if ctx.issues:
    st.error(f"The dataset folder `{ctx.data_root}` cannot be used: {len(ctx.issues)} problem(s). "
             "Fix them in metadata.csv (line numbers as a spreadsheet shows them) and reload.")
    st.dataframe(views.issues_frame(ctx.issues), hide_index=True, width="stretch")
    st.stop()
try:
    data = context.dataset(ctx)
except DatasetError as exc:
    st.error(f"The dataset folder `{ctx.data_root}` cannot be loaded: {len(exc.issues)} problem(s).")
    st.dataframe(views.issues_frame(exc.issues), hide_index=True, width="stretch")
    st.stop()

st.caption(f"Dataset `{data.root}`: {len(data.class_names)} classes, {data.n_groups} groups, "
           f"attributes: {', '.join(data.attributes) or 'none'}.")
splits = views.split_counts(data)
for col, row in zip(st.columns(len(splits)), splits.itertuples()):
    col.metric(f"{row.split} examples", f"{row.examples:,}")

st.header("ERM model")
analysis = jobs_panel.require_analysis(ctx, stop=False)
if analysis is not None:
    metrics = analysis.read_json("metrics")
    test = metrics["test"]
    c1, c2, c3 = st.columns(3)
    c1.metric("Test average accuracy", widgets.pct(test["acc"]))
    c2.metric("Test worst-group accuracy", widgets.pct(test["wga"]))
    c3.metric("Test balanced accuracy", widgets.pct(test["balanced_acc"]))
    st.caption(f"Worst group on test: **{test['worst_group']}**. Validation: "
               f"{widgets.pct(metrics['val']['wga'])} worst-group accuracy ({metrics['val']['worst_group']}).")
    left, right = st.columns([2, 3])
    left.dataframe(views.metrics_headline(metrics), hide_index=True, width="stretch",
                   column_config={"val": widgets.PERCENT, "test": widgets.PERCENT})
    groups = pd.concat([views.per_group_accuracy({split: metrics}, split) for split in ("val", "test")])
    right.plotly_chart(widgets.group_bars(groups, "ERM accuracy per group (worst first)", "split"), width="stretch")

left, right = st.columns([2, 3])
with left:
    st.subheader("Counts")
    by = st.selectbox("Count examples by", ["class", "group", *data.attributes], key="count_by")
    st.dataframe(views.counts_by(data, by), hide_index=True, width="stretch")
with right:
    st.subheader("Sample images")
    split = st.radio("Split", ["train", "val", "test"], horizontal=True, key="sample_split")
    shown = data.class_names
    if data.n_classes > 4:  # many classes: the user picks which, rather than a long stack
        shown = st.multiselect("Classes", data.class_names, default=data.class_names[:3], key="sample_classes")
    for name, ids in views.sample_ids(data, split, per_class=7, classes=shown).items():
        st.markdown(f"**{name}**")
        widgets.image_grid(data, ids, [data.group_names[data.groups[i]] for i in ids], width=64,
                           key=f"sample_{name}")

if analysis is not None:
    st.divider()
    st.subheader("Run another analysis")
    jobs_panel.analysis_starter(ctx, "Start a new analysis")
