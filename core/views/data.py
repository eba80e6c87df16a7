"""What the dashboard's pages show, as plain data: analyses, job progress, dataset counts,
ERM metrics and thumbnails. No Streamlit here: every function is testable on its own.

Selection views (extremes, alignment, subpopulations) are in core/views/selection.py,
debias and comparison views in core/views/runs.py.
"""
from __future__ import annotations

import base64
import io
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from core.runs import jobs
from core.config import AnalysisConfig, DataConfig, from_dict
from core.data.validate import SPLITS
from core.data.dataset import Dataset
from core.errors import DatasetIssue
from core.runs.store import ACTIVE_STATES, Run, RunStore


def data_config_of(run: Run) -> DataConfig:
    return from_dict(AnalysisConfig, run.config()).data


def _same_data(run: Run, data_root: str | Path, group_attribute: str | None) -> bool:
    data = run.config().get("data", {})
    return (Path(data.get("root", "")).resolve() == Path(data_root).resolve()
            and (data.get("group_attribute") or None) == (group_attribute or None))


def analyses_for(store: RunStore, data_root: str | Path, group_attribute: str | None = None,
                 states: tuple[str, ...] = ("done",)) -> list[Run]:
    """Analyses of this dataset (and group attribute) in one of `states`, newest first."""
    return [r for r in reversed(store.list("analysis"))
            if _same_data(r, data_root, group_attribute) and jobs.refresh(r).get("state") in states]


def active_analyses(store: RunStore, data_root: str | Path, group_attribute: str | None = None) -> list[Run]:
    return analyses_for(store, data_root, group_attribute, ACTIVE_STATES)


def analysis_label(run: Run) -> str:
    """How an analysis is named in the selectbox: when, T, epochs, projection dim."""
    cfg = run.config()
    when = run.created_at[:16].replace("T", " ")
    return (f"{when} · T={cfg['trak']['n_models']}, {cfg['train']['epochs']} epochs, "
            f"{cfg['data']['image_size']} px, proj. {cfg['trak']['proj_dim']}")


def _parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def job_progress(run: Run, status: dict, now: datetime | None = None) -> dict:
    """What a progress panel shows: state, stage, percent, elapsed seconds, error and log."""
    now = now or datetime.now(timezone.utc)
    started = _parse_time(status.get("started_at")) or _parse_time(run.created_at)
    end = _parse_time(status.get("finished_at")) or now
    active = status.get("state") in ACTIVE_STATES
    return {"state": status.get("state"), "stage": status.get("stage") or ("starting" if active else ""),
            "percent": round(100.0 * float(status.get("fraction") or 0.0), 1),
            "elapsed_s": max(0.0, (end - started).total_seconds()),
            "active": active, "error": status.get("error"),
            "log": str(run.path / "log.txt")}


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def issues_frame(issues: list[DatasetIssue]) -> pd.DataFrame:
    """Dataset problems as a table: the message first, then where it is."""
    return pd.DataFrame([{"problem": i.message, "file": Path(i.file).name, "line": i.row, "column": i.column,
                          "value": i.value} for i in issues], columns=["problem", "file", "line", "column", "value"])


def split_counts(data: Dataset) -> pd.DataFrame:
    """Examples per split."""
    return pd.DataFrame({"split": list(SPLITS), "examples": [int((data.split == s).sum()) for s in SPLITS]})


def counts_by(data: Dataset, by: str) -> pd.DataFrame:
    """Examples per value of `by` ('class', 'group' or an attribute) and split, plus a total."""
    if by == "class":
        values = np.asarray(data.class_names, dtype=object)[data.labels]
    elif by == "group":
        values = np.asarray(data.group_names, dtype=object)[data.groups]
    elif by in data.attributes:
        values = data.metadata[by].astype(str).to_numpy()
    else:
        raise ValueError(f"unknown column {by!r}: choose class, group or one of {data.attributes}")
    table = pd.crosstab(pd.Series(values, name=by), pd.Series(data.split, name="split"))
    table = table.reindex(columns=list(SPLITS), fill_value=0)
    table["total"] = table.sum(axis=1)
    return table.reset_index().rename_axis(columns=None)


def sample_ids(data: Dataset, split: str = "train", per_class: int = 6, seed: int = 0,
               classes: list[str] | None = None) -> dict[str, np.ndarray]:
    """A few example ids of each class in a split (for the sample thumbnails); `classes`
    (names) limits it to those classes."""
    rng = np.random.default_rng(seed)
    idx = data.idx(split)
    out = {}
    for c, name in enumerate(data.class_names):
        if classes is not None and name not in classes:
            continue
        ids = idx[data.labels[idx] == c]
        out[name] = np.sort(rng.choice(ids, min(per_class, len(ids)), replace=False))
    return out


def metrics_headline(metrics: dict) -> pd.DataFrame:
    """Average, worst-group and balanced accuracy (fractions), one row each, a column per split."""
    names = {"acc": "average accuracy", "wga": "worst-group accuracy", "balanced_acc": "balanced accuracy"}
    return pd.DataFrame([{"metric": label, "val": metrics["val"][k], "test": metrics["test"][k]}
                         for k, label in names.items()])


def per_group_accuracy(metrics_by_run: dict[str, dict], split: str = "test") -> pd.DataFrame:
    """Long table (run, group, accuracy, examples) of the per-group accuracies of some runs."""
    rows = [{"run": name, "group": g, "accuracy": acc, "examples": m[split]["group_counts"].get(g)}
            for name, m in metrics_by_run.items() for g, acc in m[split]["per_group"].items()]
    return pd.DataFrame(rows, columns=["run", "group", "accuracy", "examples"])


def group_order(bars: pd.DataFrame) -> list[str]:
    """The groups of a per_group_accuracy table, worst first: by their lowest accuracy over the
    runs shown (ties by name), so the groups some run fails lead a chart of many groups."""
    worst = bars.groupby("group")["accuracy"].min()
    return sorted(worst.index, key=lambda g: (worst[g], g))


def thumbnail(image: np.ndarray, size: int = 64) -> np.ndarray:
    """An example image scaled to size x size, uint8 RGB: enlarged by nearest neighbour (crisp
    pixels), shrunk by averaging (a 224 px image without aliasing)."""
    image = np.asarray(image, np.uint8)
    method = Image.NEAREST if image.shape[0] <= size else Image.BOX
    return np.asarray(Image.fromarray(image).resize((size, size), method))


def thumbnail_uri(image: np.ndarray, size: int = 64) -> str:
    """A PNG data URI of the thumbnail, for st.column_config.ImageColumn."""
    buf = io.BytesIO()
    Image.fromarray(thumbnail(image, size)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def persisted(run: Run, name: str, default):
    """A user choice stored with the analysis (flagged ids, excluded cells, names) or `default`."""
    return run.read_json(name) if run.has(f"{name}.json") else default
