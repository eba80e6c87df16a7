"""Study files (loader errors name the key and its line), cells, plan, and `d3m ablate --plan`."""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from core.config import PROJECT_ROOT
from core.cli import main
from core.methods import METHODS
from core.studies.grid import cells, plan, tasks
from core.studies.spec import StudyError, load_study

ROOT = PROJECT_ROOT
BASE = """\
title = "tiny"
seeds = [0, 1]
methods = ["d3m", "jtt"]

[analysis]
data = "{data}"
epochs = 1
n_models = 1

[params.jtt]
upweight = 5.0

[grid]
"d3m.beta" = [1.0, 2.0]
"""


def write(tmp_path: Path, text: str, data: Path) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(text.format(data=data))
    return path


@pytest.mark.parametrize("change, key, line, says", [
    (('"d3m.beta" = [1.0, 2.0]', '"d3m.beta" = [1.0, 2.0]\n"d3m.gamma" = [1]'), "d3m.gamma", 15, "no parameter 'gamma'"),
    (("epochs = 1", 'epochs = "ten"'), "epochs", 7, "is not int"),
    (('"d3m.beta" = [1.0, 2.0]', '"d3m.beta" = []'), "d3m.beta", 14, "non-empty list"),
    (("upweight = 5.0", 'upweight = "lots"'), "upweight", 11, "is not a number"),
    (("n_models = 1", "n_models = 1\nwidthh = 2"), "widthh", 9, "unknown analysis setting 'widthh'"),
    (('seeds = [0, 1]', 'seeds = [0, 1]\nrepeat = 3'), "repeat", 3, "unknown key"),
    (('"d3m.beta"', '"pgd.q"'), "pgd.q", 14, "neither 'analysis' nor one of the study's methods"),
])
def test_loader_errors_name_key_and_line(tmp_path, tiny_sample, change, key, line, says):
    text = BASE.replace(*change)
    path = write(tmp_path, text, tiny_sample)
    # the line as a person counts it in the file
    assert key.split(".")[-1] in text.format(data=tiny_sample).splitlines()[line - 1]
    with pytest.raises(StudyError) as err:
        load_study(path)
    message = str(err.value)
    assert message.startswith(f"{path}:{line}: {key}: "), message
    assert says in message and "\n" not in message


def test_cells_are_methods_times_grid_with_fixed_options(tmp_path, tiny_sample):
    study = load_study(write(tmp_path, BASE, tiny_sample))
    got = cells(study)
    # the grid key is d3m's: jtt does not vary with it, so it is one cell, not two
    assert [(c.method, c.params) for c in got] == [
        ("d3m", {"beta": 1.0}), ("d3m", {"beta": 2.0}), ("jtt", {"upweight": 5.0})]
    assert [c.label for c in got] == ["d3m: beta=1.0", "d3m: beta=2.0", "jtt: default"]
    all_tasks = tasks(study)
    assert len(all_tasks) == 3 * 2
    cfg = all_tasks[1].analysis_config()
    assert (cfg.train.seed, cfg.train.epochs, cfg.trak.n_models) == (1, 1, 1)
    assert all_tasks[1].params() == {"beta": 1.0, "seed": 1}
    assert Path(cfg.data.root) == tiny_sample.resolve()


def test_variants_times_grid(tmp_path, tiny_sample):
    text = BASE.replace('methods = ["d3m", "jtt"]', 'methods = ["d3m"]').replace(
        "[params.jtt]\nupweight = 5.0\n", "") + '\n[[variants]]\nlabel = "T=1"\n\n[[variants]]\nlabel = "T=3"\n"analysis.n_models" = 3\n'
    study = load_study(write(tmp_path, text, tiny_sample))
    got = cells(study)
    assert [(c.label, c.settings["n_models"], c.params["beta"]) for c in got] == [
        ("T=1, beta=1.0", 1, 1.0), ("T=1, beta=2.0", 1, 2.0), ("T=3, beta=1.0", 3, 1.0), ("T=3, beta=2.0", 3, 2.0)]


def test_plan_counts_shared_analyses_once(tmp_path, tiny_sample):
    study = load_study(write(tmp_path, BASE, tiny_sample))
    frame, seconds = plan(study, workers=1)
    assert len(frame) == 6
    per_seed = frame.groupby("seed")
    # 3 cells per seed share one analysis: counted once per seed, not three times
    expected = sum(g["estimated_analysis_s"].iloc[0] + g["estimated_method_s"].sum() for _, g in per_seed)
    assert seconds == pytest.approx(expected, rel=0.01)
    _, on_two = plan(study, workers=2)
    assert on_two == pytest.approx(seconds / 2)


@pytest.mark.parametrize("path", sorted((ROOT / "studies").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_studies_load(path):
    methods = tomllib.loads(path.read_text()).get("methods", [])
    missing = [m for m in methods if m not in METHODS]
    if missing:
        pytest.skip(f"methods {missing} are not registered on this branch")
    study = load_study(path)
    assert len(tasks(study)) == len(cells(study)) * len(study.seeds) > 0


def test_d3m_study_varies_one_thing_at_a_time():
    study = load_study(ROOT / "studies" / "d3m.toml")
    got = {c.label: c for c in cells(study)}
    base = got["defaults (T=5, last layer, A<0, width 1)"]
    assert base.settings["data"] == str((ROOT / "sample_data").resolve()) and base.params == {}
    assert got["T=1"].settings["n_models"] == 1 and got["scope all layers"].settings["scope"] == "all"
    assert got["k by val sweep"].params == {"k_sweep": [500, 1000, 1500, 2000]}
    assert got["proxy width 1/2"].settings["proxy_width"] == 2


def test_cli_plan(tmp_path, tiny_sample, capsys):
    main(["ablate", "--plan", str(write(tmp_path, BASE, tiny_sample)), "--workdir", str(tmp_path / "w")])
    out = capsys.readouterr().out
    assert "d3m: beta=2.0" in out and "3 cells x 2 seeds = 6 tasks" in out
    assert not (tmp_path / "w").exists()  # nothing ran


def test_cli_bad_study_is_one_line(tmp_path, tiny_sample):
    path = write(tmp_path, BASE.replace("epochs = 1", "epochs = 1.5"), tiny_sample)
    with pytest.raises(SystemExit) as err:
        main(["ablate", "--plan", str(path)])
    assert str(err.value) == f"error: {path}:7: epochs: 1.5 is not int"


def test_a_study_generates_its_missing_dataset(tmp_path):
    """`generate` in [analysis]: a missing data folder is made by make_sample.py with those
    arguments when the study is planned (or run); a bad command line is refused at load."""
    import pandas as pd
    text = BASE.replace("epochs = 1", 'epochs = 1\ngenerate = "--classes 3 --bias-values 3 --conflict 0.1 --scale 0.05"')
    study = load_study(write(tmp_path, text, tmp_path / "colour"))
    assert not (tmp_path / "colour").exists() and study.generate.startswith("--classes 3")
    frame, _ = plan(study)
    meta = pd.read_csv(tmp_path / "colour" / "metadata.csv")
    assert set(meta["colour"]) == {"crimson", "teal", "yellow"} and len(frame) == len(tasks(study))
    bad = write(tmp_path, BASE.replace("epochs = 1", 'epochs = 1\ngenerate = "--bias-valuez 3"'), tmp_path / "x")
    with pytest.raises(StudyError, match="generate: '--bias-valuez 3' is not a valid make_sample.py command line"):
        load_study(bad)
