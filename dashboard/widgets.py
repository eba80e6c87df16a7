"""Small display helpers shared by the pages (no computation: that is in core/views*)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.views import data as views
from core.data.dataset import Dataset
from core.methods.options import Option

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


def category_axis(fig: go.Figure, axis: str, order: list | None = None) -> go.Figure:
    """Make an axis categorical (in `order` when given): class, group and attribute names such
    as "0" and "1" are categories, never a continuous axis from -0.5 to 1.5."""
    update = fig.update_xaxes if axis == "x" else fig.update_yaxes
    settings = {"type": "category"}
    if order is not None:
        settings.update(categoryorder="array", categoryarray=[str(v) for v in order])
    update(**settings)
    return fig


TOP_LEGEND = {"orientation": "h", "yanchor": "bottom", "y": 1.02, "xanchor": "left", "x": 0}


def histogram_figure(bins: pd.DataFrame, title: str, x_title: str, y_title: str, legend: str,
                     colors: dict | None = None, scale: float = 1.0, order: list | None = None) -> go.Figure:
    """Overlaid bars of core.views.distributions.histogram output (one trace per colour, in
    `order` when given), x multiplied by `scale`; the tail bars of a clipped histogram are
    hatched and labelled with how many examples they count and over what range."""
    fig = go.Figure()
    names = list(dict.fromkeys(bins["colour"]))
    if order is not None:
        names = [c for c in order if c in set(names)] + [c for c in names if c not in set(order)]
    has_tails = "side" in bins and (bins["side"] != "").any()
    for name in names:
        part = bins[bins["colour"] == name]
        body = part[part["side"] == ""] if has_tails else part
        fig.add_bar(x=body["center"] * scale, y=body["count"], width=body["width"] * scale, name=str(name),
                    opacity=0.65, marker_color=(colors or {}).get(name), legendgroup=str(name),
                    customdata=body[["left", "right"]] * scale,
                    hovertemplate="%{customdata[0]:.3g} to %{customdata[1]:.3g}: %{y}<extra>" + str(name) + "</extra>")
        if has_tails:
            tails = part[part["side"] != ""]
            fig.add_bar(x=tails["center"] * scale, y=tails["count"], width=tails["width"] * scale, name=str(name),
                        opacity=0.65, marker_color=(colors or {}).get(name), legendgroup=str(name), showlegend=False,
                        marker_pattern_shape="/", customdata=tails[["left", "right"]] * scale,
                        hovertemplate="tail, %{customdata[0]:.3g} to %{customdata[1]:.3g}: %{y}<extra>"
                                      + str(name) + "</extra>")
    if has_tails:
        _label_tails(fig, bins, scale)
    fig.update_layout(barmode="overlay", title={"text": title, "y": 0.98, "yanchor": "top"}, xaxis_title=x_title,
                      yaxis_title=y_title, legend_title=legend, bargap=0,
                      legend={**TOP_LEGEND, "y": 1.08, "xanchor": "center", "x": 0.5}, margin={"t": 120})
    return fig


def _label_tails(fig: go.Figure, bins: pd.DataFrame, scale: float) -> None:
    """A label over each tail bar, just above the plot area (clear of the bars and of lines
    labelled inside it), reading inwards: how many examples lie beyond the bins, and their
    range; the x range ends just past the tail bars (annotations would widen it)."""
    width = float(bins["width"].iloc[0])
    lo, hi = bins["center"].min() - width, bins["center"].max() + width
    for side, anchor in (("below", "left"), ("above", "right")):
        part = bins[bins["side"] == side]
        count = int(part["count"].sum())
        if count == 0:
            continue
        left, right = part["left"].min() * scale, part["right"].max() * scale
        where = f"< {right:.3g} (down to {left:.3g})" if side == "below" else f"> {left:.3g} (up to {right:.3g})"
        fig.add_annotation(x=(lo if side == "below" else hi) * scale, y=1.0, yref="paper", yanchor="bottom",
                           xanchor=anchor, text=f"{count:,} {where}", showarrow=False, font={"size": 11})
    fig.update_xaxes(range=[lo * scale, hi * scale])


def lasso_scatter(points: pd.DataFrame, x: str, y: str, colour: str, hover: list[str], title: str,
                  x_title: str, rows: list) -> go.Figure:
    """One marker trace per `colour` value (x: `x`, y: the category `y` in the order `rows`);
    each point's customdata[0] is its example id (core.views.selection.ids_from_points; a plain
    list: a numpy array would travel as a typed array and come back from a selection as a dict)
    and its hover text the `hover` columns. Built with graph_objects rather than plotly express, which
    took 0.4 s for 5,000 points."""
    fig = go.Figure()
    text = pd.Series("", index=points.index)
    for c in hover:
        text = text + f"{c}: " + points[c].astype(str) + "<br>"
    for name, part in points.groupby(colour, sort=False):
        fig.add_scatter(x=part[x].to_numpy(), y=part[y].to_numpy(), mode="markers", name=str(name),
                        customdata=[[int(i)] for i in part["id"]], text=text[part.index].tolist(),
                        marker={"size": 6, "opacity": 0.6},
                        hovertemplate="%{text}id %{customdata[0]}<extra>%{fullData.name}</extra>")
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y, legend_title=colour)
    category_axis(fig, "y", rows)
    return fig


def group_bars(bars: pd.DataFrame, title: str, legend: str = "run") -> go.Figure:
    """Horizontal grouped bars of core.views.data.per_group_accuracy output, the worst group on top
    (core.views.data.group_order), tall enough that each of many groups keeps a readable label;
    the legend above the plot, clear of the axis labels."""
    order = views.group_order(bars)
    runs = list(dict.fromkeys(bars["run"]))
    fig = go.Figure()
    for run in runs:
        part = bars[bars["run"] == run].set_index("group").reindex(order)
        fig.add_bar(y=order, x=part["accuracy"], name=str(run), orientation="h", customdata=part[["examples"]],
                    hovertemplate="%{y}: %{x:.1%} of %{customdata[0]} examples<extra>" + str(run) + "</extra>")
    fig.update_layout(barmode="group", title={"text": title, "y": 0.98, "yanchor": "top"}, legend_title=legend,
                      legend=TOP_LEGEND, height=180 + len(order) * (8 + 10 * len(runs)) + 22 * len(runs) // 3,
                      margin={"l": 10, "t": 90 + 22 * (len(runs) // 3)})
    fig.update_xaxes(tickformat=".0%", range=[0, 1], title="accuracy")
    fig.update_yaxes(autorange="reversed", title=None, automargin=True)
    category_axis(fig, "y")
    return fig


def option_inputs(method: str, options: dict[str, Option]) -> tuple[dict, list[str]]:
    """An input per method option, built from its declared domain, its default preset: a select
    box for a choice, a number input within the option's bounds, comma-separated text for a list
    of numbers (checked as it is typed). Returns the values and the one-line problems found."""
    values, problems = {}, []
    for name, option in options.items():
        key, hint = f"option_{method}_{name}", " ".join(filter(None, (option.help, f"(allowed: {option.allowed()})")))
        if option.choices:
            choices = list(option.choices)
            values[name] = st.selectbox(name, choices, index=choices.index(option.default), key=key, help=hint)
        elif option.kind in (int, float):
            low, high = option.bounds()
            values[name] = st.number_input(name, low, high, option.default, key=key, help=hint,
                                           format="%d" if option.kind is int else "%g")
        else:
            default = option.default
            text = st.text_input(name, ", ".join(f"{v:g}" for v in default) if isinstance(default, list) else default,
                                 key=key, help=hint)
            try:
                values[name] = option.parse(method, name, text)
            except ValueError as exc:
                st.error(str(exc))
                problems.append(str(exc))
    return values, problems
