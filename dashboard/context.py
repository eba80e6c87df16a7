"""The sidebar (dataset folder, work directory, analysis) and the cached loads every page shares.

Defaults come from the environment: D3M_DATA (dataset folder, else the built-in sample) and
D3M_WORKDIR (else ./workdir). Loads are cached by run id + file mtime, so a new or rewritten
artifact is read again and a page change re-reads nothing.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from core.views import paths, data as views, selection as views_selection
from core.config import DEFAULT_DATA, DataConfig, analysis_config, from_dict
from core.data import categories
from core.data.dataset import Dataset, load_dataset
from core.methods import METHODS
from core.views import distributions, runs as views_runs
from core.errors import DatasetIssue
from core.data.validate import metadata_path, validate_dataset
from core.runs.store import Run, RunStore


@dataclass
class Ctx:
    data_root: str
    group_attribute: str | None
    workdir: Path
    store: RunStore
    issues: list[DatasetIssue]
    analysis: Run | None


def _mtime(path: Path) -> float:
    return path.stat().st_mtime if path.exists() else 0.0


@st.cache_data(max_entries=16, show_spinner=False)
def _validate(root: str, group_attribute: str | None, csv_mtime: float) -> list[DatasetIssue]:
    return validate_dataset(root, group_attribute, check_images=False)


def _confined(text: str, box: str) -> Path:
    """The path typed in a box, inside D3M_DATA_ROOT when set; else an error and stop."""
    try:
        return paths.confine(text, box)
    except ValueError as exc:
        st.error(str(exc))
        st.stop()


def sidebar() -> Ctx:
    """Render the sidebar and return what the pages work on (also kept in session state)."""
    with st.sidebar:
        st.subheader("Dataset")
        root = st.text_input("Dataset folder", value=os.environ.get("D3M_DATA", DEFAULT_DATA), key="data_root",
                             help="A folder with metadata.csv (filename, label, split[, group], attributes) "
                                  "and the images it names.").strip()
        root = str(_confined(root, "Dataset folder"))
        group_attribute = st.text_input(
            "Group attribute (optional)", key="group_attribute",
            help="Groups are (class, this attribute) when metadata.csv has no 'group' column.").strip() or None
        workdir = _confined(st.text_input("Work directory", value=os.environ.get("D3M_WORKDIR", "workdir"),
                                          key="workdir", help="Where analyses and runs are stored."),
                            "Work directory")
        issues = _validate(root, group_attribute, _mtime(metadata_path(root)))
        if issues:
            st.error(f"This dataset folder cannot be used: {len(issues)} problem(s). See the Data page.")
        store = RunStore(workdir)
        analyses = _analyses(str(workdir), root, group_attribute, store.version()) if not issues else []
        analysis = None
        if analyses:
            by_id = {r.id: r for r in analyses}
            seen = st.session_state.get("_analysis_ids")
            if seen is not None and analyses[0].id not in seen:  # one finished since: show it
                st.session_state["analysis_id"] = analyses[0].id
            st.session_state["_analysis_ids"] = list(by_id)
            chosen = st.selectbox("Analysis", list(by_id), format_func=lambda i: views.analysis_label(by_id[i]),
                                  key="analysis_id", help="Finished analyses of this dataset, newest first.")
            analysis = by_id.get(chosen, analyses[0])
            st.caption(f"Run `{analysis.id}`")
        elif not issues:
            st.caption("No finished analysis of this dataset in this work directory yet.")
    ctx = Ctx(root, group_attribute, workdir, store, issues, analysis)
    st.session_state["_ctx"] = ctx
    return ctx


@st.cache_resource(max_entries=8, show_spinner=False)
def _analyses(workdir: str, root: str, group_attribute: str | None, version: tuple) -> list[Run]:
    return views.analyses_for(RunStore(workdir), root, group_attribute)


def current() -> Ctx:
    return st.session_state["_ctx"]


def data_config(ctx: Ctx) -> DataConfig:
    """The analysis's data config, or the sidebar's (default image size) before any analysis."""
    return views.data_config_of(ctx.analysis) if ctx.analysis else analysis_config(
        ctx.data_root, ctx.group_attribute).data


@st.cache_resource(max_entries=4, show_spinner="Loading the dataset…")
def _dataset(cfg_json: str, workdir: str, csv_mtime: float) -> Dataset:
    return load_dataset(from_dict(DataConfig, json.loads(cfg_json)), cache_dir=Path(workdir) / "cache")


def dataset(ctx: Ctx) -> Dataset:
    """The dataset (images as a cached memmap); raises DatasetError on invalid data."""
    cfg = data_config(ctx)
    return _dataset(json.dumps(cfg.__dict__, sort_keys=True), str(ctx.workdir.resolve()),
                    _mtime(metadata_path(cfg.root, cfg.metadata)))


@st.cache_data(max_entries=64, show_spinner=False)
def _array(path: str, mtime: float) -> np.ndarray:
    return np.load(path)


def array(run: Run, name: str) -> np.ndarray:
    path = run.file(f"{name}.npy", create_parent=False)
    return _array(str(path), _mtime(path))


@st.cache_data(max_entries=16, show_spinner=False)
def _csv(path: str, mtime: float) -> pd.DataFrame:
    return categories.read_table(path)  # classes and values as names: "0" stays "0"


def csv(run: Run, name: str) -> pd.DataFrame:
    path = run.file(name, create_parent=False)
    return _csv(str(path), _mtime(path))


@st.cache_resource(max_entries=4, show_spinner="Building the example table…")
def _train_table(run_id: str, score: str, mtime: float, _ctx: Ctx) -> pd.DataFrame:
    run = _ctx.store.get(run_id)
    return views_selection.train_table(dataset(_ctx), array(run, "train_ids"), array(run, score))


def train_table(ctx: Ctx, score: str) -> pd.DataFrame:
    """Training examples with their scores (shared, read-only: filter it, never modify it)."""
    path = ctx.analysis.file(f"{score}.npy", create_parent=False)
    return _train_table(ctx.analysis.id, score, _mtime(path), ctx)


def _table_key(ctx: Ctx, score: str) -> tuple:
    return ctx.analysis.id, score, _mtime(ctx.analysis.file(f"{score}.npy", create_parent=False))


@st.cache_resource(max_entries=16, show_spinner=False)
def _sort_order(run_id: str, score: str, mtime: float, column: str, ascending: bool, _ctx: Ctx) -> np.ndarray:
    return views_selection.sort_order(_train_table(run_id, score, mtime, _ctx), column, ascending)


def sort_order(ctx: Ctx, score: str, column: str, ascending: bool) -> np.ndarray:
    """The training-example table's rows sorted by a column: computed once per analysis and column."""
    return _sort_order(*_table_key(ctx, score), column, ascending, ctx)


TAIL = 0.005  # the alignment histogram's bins span the 0.5%-99.5% quantiles; the tails get a bar each


@st.cache_data(max_entries=8, show_spinner=False)
def _alignment_histogram(run_id: str, score: str, mtime: float, bins: int, _ctx: Ctx) -> dict:
    values = _train_table(run_id, score, mtime, _ctx)["alignment"].to_numpy()
    classes = _train_table(run_id, score, mtime, _ctx)["class"].to_numpy()
    factor, unit = distributions.unit(values)
    return {"bins": distributions.histogram(values, classes, bins, tail=TAIL), "factor": factor, "unit": unit}


def alignment_histogram(ctx: Ctx, score: str, bins: int = 60) -> dict:
    """The histogram of A_i per class (tails clipped and counted) and the unit to show A_i in
    (distributions.unit: factor and label), once per analysis and score."""
    return _alignment_histogram(*_table_key(ctx, score), bins, ctx)


@st.cache_data(max_entries=8, show_spinner=False)
def _options(run_id: str, score: str, mtime: float, column: str, _ctx: Ctx) -> list[str]:
    return categories.order(_train_table(run_id, score, mtime, _ctx)[column].unique())


def options(ctx: Ctx, score: str, column: str) -> list[str]:
    """The distinct names in a column of the example table, in the table's order."""
    return _options(*_table_key(ctx, score), column, ctx)


@st.cache_resource(max_entries=8, show_spinner=False)
def _run_views(workdir: str, analysis_id: str, version: tuple) -> dict:
    store = RunStore(workdir)
    table = views_runs.compare_table(store, analysis_id, METHODS)
    table["name"] = views_runs.run_names(table)
    latest = views_runs.latest_result(store, analysis_id)
    return {"table": table, "sweep": views_runs.sweep_curves(store, analysis_id), "latest": latest,
            "reports": views_runs.method_reports(store, analysis_id, METHODS)}


def run_views(ctx: Ctx) -> dict:
    """The analysis's runs as the Debias and Compare pages show them (compare table with names,
    k-sweep curves, latest result, method reports), read again only when the store changes
    (RunStore.version); a job that died unseen is marked failed first."""
    views_ = _run_views(str(ctx.workdir), ctx.analysis.id, ctx.store.version())
    table = views_["table"]
    for run_id in table.loc[table["state"].isin(("queued", "running")), "run"]:
        ctx.store.get(run_id).status()  # marks a dead job failed, which changes the version
    return _run_views(str(ctx.workdir), ctx.analysis.id, ctx.store.version())


@st.cache_resource(max_entries=8, show_spinner=False)
def _jaccard(workdir: str, run_ids: tuple[str, ...], version: tuple) -> pd.DataFrame:
    store = RunStore(workdir)
    return views_runs.jaccard_matrix([store.get(r) for r in run_ids])


def jaccard(ctx: Ctx, run_ids: list[str]) -> pd.DataFrame:
    """Overlap of the removal sets of some runs (core.views.runs.jaccard_matrix), cached."""
    return _jaccard(str(ctx.workdir), tuple(run_ids), ctx.store.version())
