"""Starting the analysis job, and the self-refreshing progress panel of any job."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.runs import jobs

from core.views import data as views
from core.pipeline.analysis import start_analysis
from core.config import AnalysisConfig, analysis_config
from core.errors import describe
from core.runs.store import Run, RunStore
from dashboard.context import Ctx


@st.fragment(run_every=1)
def progress_panel(workdir: str, run_id: str, title: str) -> None:
    """Stage, percent and elapsed time of a job, refreshed every second; cancel button.

    When the job ends, the whole page reruns so its results appear without a reload.
    """
    run = RunStore(workdir).get(run_id)
    info = views.job_progress(run, jobs.refresh(run))
    if not info["active"]:
        st.rerun()
    with st.container(border=True):
        left, right = st.columns([5, 1])
        left.progress(info["percent"] / 100, text=f"**{title}** ({info['state']}): {info['stage']}")
        left.caption(f"{info['percent']:.0f}% done, {views.format_seconds(info['elapsed_s'])} elapsed. "
                     f"Log: `{info['log']}`")
        if right.button("Cancel", key=f"cancel-{run_id}"):
            attempt(jobs.cancel, run)
            st.rerun()


def show_failure(run: Run) -> None:
    """A failed or cancelled run's error, with a Resume button (from its last finished stage)."""
    info = views.job_progress(run, run.status())
    if info["state"] not in jobs.RESUMABLE:
        return
    left, right = st.columns([5, 1])
    if info["state"] == "failed":
        left.error(f"The {run.kind} run {run.id} failed: {info['error']}\n\nLog: `{info['log']}`")
    else:
        left.warning(f"The {run.kind} run {run.id} was cancelled.")
    if right.button("Resume", key=f"resume-{run.id}", help="Continue from its last finished stage."):
        attempt(jobs.resume, run)
        st.rerun()


def attempt(action, *args, **kwargs):
    """Call `action`; an error is shown in one line (what failed and the path or value at
    fault) and the page stops, instead of a traceback."""
    try:
        return action(*args, **kwargs)
    except Exception as exc:
        st.error(describe(exc))
        st.stop()


def analysis_starter(ctx: Ctx, label: str = "Start analysis") -> None:
    """Settings expander and the one button that starts the analysis job."""
    base = AnalysisConfig()
    with st.expander("Analysis settings"):
        c1, c2, c3, c4 = st.columns(4)
        n_models = c1.number_input("Models (T)", 1, 100, base.trak.n_models, key="set_models",
                                   help="Size of the TRAK ensemble.")
        epochs = c2.number_input("Epochs", 1, 500, base.train.epochs, key="set_epochs")
        image_size = c3.number_input("Image size (px)", 8, 512, base.data.image_size, key="set_image_size")
        proj_dim = c4.number_input("Projection dim", 16, 65536, base.trak.proj_dim, step=256, key="set_proj_dim")
    if st.button(label, type="primary", key="start_analysis"):
        cfg = analysis_config(ctx.data_root, ctx.group_attribute, n_models=int(n_models), epochs=int(epochs),
                                    image_size=int(image_size), proj_dim=int(proj_dim))
        with st.spinner("Checking the settings and every image…"):
            attempt(start_analysis, ctx.store, cfg)
        st.rerun()


def analysis_jobs(ctx: Ctx) -> list[Run]:
    """Progress panels of this dataset's running analyses; returns them."""
    active = views.active_analyses(ctx.store, ctx.data_root, ctx.group_attribute)
    for run in active:
        progress_panel(str(ctx.workdir), run.id, "Analysis")
    return active


def require_analysis(ctx: Ctx, stop: bool = True) -> Run | None:
    """The selected finished analysis; otherwise progress or the start button, and stop the
    page (or, with stop=False, return None so the page can show what needs no analysis)."""
    if ctx.issues:
        st.error("The dataset folder has problems (see the Data and model page).")
        st.stop()
    active = analysis_jobs(ctx)
    if ctx.analysis is not None:
        return ctx.analysis
    ended = views.analyses_for(ctx.store, ctx.data_root, ctx.group_attribute, ("failed", "cancelled"))
    if ended:
        show_failure(ended[0])
    if not active:
        st.info(f"No analysis of **{Path(ctx.data_root).name}** in `{ctx.workdir}` yet. The analysis trains "
                "the ERM model and the TRAK ensemble in the background; the pages fill in when it is done.")
        analysis_starter(ctx)
    if stop:
        st.stop()
    return None
