"""Small display helpers shared by the pages (no computation: that is in core/views*)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.views import data as views
from core.data.dataset import Dataset

PERCENT = st.column_config.NumberColumn(format="percent")


def pct(x: float | None) -> str:
    return "n/a" if x is None or x != x else f"{100 * x:.1f}%"


def image_grid(data: Dataset, ids: np.ndarray, captions: list[str] | None = None, width: int = 72,
               key: str = "grid", page_size: int = 24) -> None:
    """Thumbnails of some examples, paged so only one page of images is ever sent."""
    ids = np.asarray(ids)
    if len(ids) == 0:
        st.caption("No examples.")
        return
    start = 0
    if len(ids) > page_size:
        pages = (len(ids) + page_size - 1) // page_size
        page = st.columns([1, 3])[0].number_input(f"Page (of {pages}; {len(ids):,} examples)", 1, pages, 1,
                                                  key=f"{key}_page")
        start = (int(page) - 1) * page_size
    shown = ids[start:start + page_size]
    caps = captions[start:start + page_size] if captions is not None else [f"#{i}" for i in shown]
    st.image([views.thumbnail(data.images[i], width) for i in shown], caption=caps, width=width)


def histogram_figure(bins: pd.DataFrame, title: str, x_title: str, y_title: str, legend: str,
                     colors: dict | None = None) -> go.Figure:
    """Overlaid bars of core.views.selection.histogram output (one trace per colour)."""
    fig = go.Figure()
    for name, part in bins.groupby("colour", sort=False):
        fig.add_bar(x=part["center"], y=part["count"], width=part["width"], name=str(name), opacity=0.65,
                    marker_color=(colors or {}).get(name), customdata=part[["left", "right"]],
                    hovertemplate="%{customdata[0]:.3g} to %{customdata[1]:.3g}: %{y}<extra>" + str(name) + "</extra>")
    fig.update_layout(barmode="overlay", title=title, xaxis_title=x_title, yaxis_title=y_title,
                      legend_title=legend, bargap=0)
    return fig


def group_bars(bars: pd.DataFrame, title: str, legend: str = "run") -> go.Figure:
    """Horizontal grouped bars of core.views.data.per_group_accuracy output, the worst group on top
    (core.views.data.group_order), tall enough that each of many groups keeps a readable label."""
    order = views.group_order(bars)
    runs = list(dict.fromkeys(bars["run"]))
    fig = go.Figure()
    for run in runs:
        part = bars[bars["run"] == run].set_index("group").reindex(order)
        fig.add_bar(y=order, x=part["accuracy"], name=str(run), orientation="h", customdata=part[["examples"]],
                    hovertemplate="%{y}: %{x:.1%} of %{customdata[0]} examples<extra>" + str(run) + "</extra>")
    fig.update_layout(barmode="group", title=title, legend_title=legend, legend={"orientation": "h", "y": -0.12},
                      height=140 + len(order) * (8 + 10 * len(runs)), margin={"l": 10})
    fig.update_xaxes(tickformat=".0%", range=[0, 1], title="accuracy")
    fig.update_yaxes(autorange="reversed", title=None, automargin=True)
    return fig


def option_inputs(method: str, options: dict) -> dict:
    """An input per method option (its default preset); lists are typed comma-separated."""
    values = {}
    for name, default in options.items():
        key = f"option_{method}_{name}"
        if isinstance(default, list):
            values[name] = st.text_input(name, ", ".join(f"{v:g}" for v in default), key=key)
        elif isinstance(default, str):
            values[name] = st.text_input(name, default, key=key)
        else:
            fmt = "%d" if isinstance(default, int) else "%g"
            values[name] = st.number_input(name, value=default, key=key, format=fmt)
    return values
