"""Small display helpers shared by the pages (no computation: that is in core/views*)."""
from __future__ import annotations

import numpy as np
import streamlit as st

from core import views
from core.dataset import Dataset

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
        page = st.number_input(f"Page (of {pages}, {len(ids)} examples)", 1, pages, 1, key=f"{key}_page")
        start = (int(page) - 1) * page_size
    shown = ids[start:start + page_size]
    caps = captions[start:start + page_size] if captions is not None else [f"#{i}" for i in shown]
    st.image([views.thumbnail(data.images[i], width) for i in shown], caption=caps, width=width)
