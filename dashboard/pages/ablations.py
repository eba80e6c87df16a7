"""Page 7: ablation studies: list the study files, start one on Ray (progress per cell, cancel),
the table, a bar chart per metric with error bars, and each cell's runs on the Compare page."""
import os

import plotly.express as px
import streamlit as st

from core.runs import jobs
from core.config import PROJECT_ROOT
from core.studies import study_runs as sr, table as tables
from core.studies.grid import plan
from dashboard import context, jobs_panel

ctx = context.current()
st.title("Ablations")
folder = st.text_input("Study folder", value=os.environ.get("D3M_STUDIES", str(PROJECT_ROOT / "studies")),
                       key="studies_folder", help="Every *.toml file here is a study (see studies/ and the README).")
files = sr.study_files(folder)
if not files:
    st.info(f"No study file (*.toml) in `{folder}`.")
    st.stop()
name = st.selectbox("Study", list(files), key="study_file",
                    format_func=lambda n: n if isinstance(files[n], str) else f"{files[n].title} ({n})")
study = files[name]
if isinstance(study, str):
    st.error(study)
    st.stop()

cells_plan, seconds = plan(study, ctx.store, workers=os.cpu_count() or 1)
st.caption(f"{cells_plan['cell'].nunique()} cells x {len(study.seeds)} seeds = {len(cells_plan)} tasks on "
           f"local Ray ({os.cpu_count()} cores): about {seconds / 60:.1f} min; finished cells are reused.")
with st.expander("Cells"):
    st.dataframe(cells_plan, hide_index=True, width="stretch")


@st.fragment(run_every=2)
def cell_progress(workdir: str, run_id: str) -> None:
    """Each task's state, refreshed while the study runs."""
    run = ctx.store.get(run_id)
    if not jobs.is_active(jobs.refresh(run)):
        st.rerun()
    st.dataframe(sr.cell_states(run), hide_index=True, width="stretch", key=f"cells_{run_id}")


runs = sr.runs_of(ctx.store, study)
active = [r for r in runs if jobs.is_active(jobs.refresh(r))]
for run in active:
    jobs_panel.progress_panel(str(ctx.workdir), run.id, f"Study {study.title}")
    cell_progress(str(ctx.workdir), run.id)
if not active and st.button("Start study", type="primary", key="start_study"):
    jobs_panel.attempt(sr.start_study, ctx.store, study)
    st.rerun()

finished = [r for r in runs if r.has("table.csv")]
if not finished:
    for run in runs[:1]:
        jobs_panel.show_failure(run)
    st.stop()
run = finished[0]
table = tables.read(run)
st.subheader(f"Table ({run.created_at[:16].replace('T', ' ')}, run `{run.id}`)")
st.dataframe(tables.formatted(table), hide_index=True, width="stretch", key="study_table")
failed = sr.cell_states(run).query("state != 'done'")
if len(failed):
    st.warning(f"{len(failed)} task(s) did not finish: " + "; ".join(
        f"{r.cell} (seed {r.seed}): {r.error}" for r in failed.itertuples()))
c1, c2 = st.columns(2)
c1.download_button("Table (CSV)", run.file("table.csv").read_bytes(), f"{study.name}.csv", "text/csv")
c2.download_button("Table (JSON)", run.file("table.json").read_bytes(), f"{study.name}.json", "application/json")

metrics = tables.metric_names(table)
metric = st.selectbox("Metric", metrics, key="study_metric")
data = sr.bars(table, metric)
fig = px.bar(data, x="cell", y="mean", error_y="std", title=f"{metric}: mean ± std over seeds",
             labels={"mean": metric + (" (%)" if metric in tables.ACCURACIES else ""), "cell": "cell"})
st.plotly_chart(fig, width="stretch")

st.subheader("A cell's runs")
done_cells = [c for c, n in zip(table["cell"], table["seeds"]) if n > 0]
if done_cells:
    cell = st.selectbox("Cell", done_cells, key="study_cell")
    target = sr.compare_target(ctx.store, table, cell)
    st.caption("Runs: " + ", ".join(f"`{r}`" for r in target["runs"]))

    def open_compare() -> None:
        st.session_state.update(data_root=target["data_root"], group_attribute=target["group_attribute"],
                                analysis_id=target["analysis_id"], _goto_compare=True)
        st.session_state.pop("_analysis_ids", None)  # keep this analysis selected

    st.button("Open on the Compare page", key="open_compare", on_click=open_compare)
if st.session_state.pop("_goto_compare", False):
    st.switch_page("dashboard/pages/compare.py")
