"""Every registered method and every option with a domain (tests/option_cases.py): a value outside
it is refused by `d3m pipeline` and `d3m debias` in one line naming the method, the option, the
value and what is allowed, before any run folder exists (and, for the pipeline, before the
analysis: no image is read)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from core.cli import main
from core.runs.store import Run
from tests.option_cases import Case, cases
from tests.pipeline.test_bad_inputs import refused

CASES = cases()


def says(err: str, case: Case) -> None:
    """The one line names the method, the option and the value as given, then what is allowed."""
    line = err.removeprefix("error: ").strip()
    prefix = f"{case.method} parameter {case.name}="
    assert "\n" not in line and line.startswith(prefix) and " is not allowed: " in line, line
    shown, _, allowed = line.removeprefix(prefix).partition(" is not allowed: ")
    if isinstance(case.value, list):
        assert [float(v) for v in shown.split(",") if v.strip()] == [float(v) for v in case.value], line
    elif isinstance(case.value, str):
        assert shown == repr(case.value), line
    else:
        assert float(shown) == case.value, line
    assert allowed.startswith(("one of ", "a ")), line


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_pipeline_refuses_before_the_analysis(capsys, tmp_path, tiny_sample, case):
    err = refused(capsys, tmp_path / "wd", "pipeline", "--data", str(tiny_sample), "--device", "cpu",
                  "--method", case.method.replace("_", "-"), "--param", f"{case.name}={case.text}")
    says(err, case)
    assert not (tmp_path / "wd" / "cache").exists()  # refused before a single image was decoded


@pytest.fixture(scope="module")
def workdir(tiny_analysis: Run, tmp_path_factory) -> tuple[Path, str]:
    """A copy of the tiny analysis's work directory and the analysis id."""
    root = tmp_path_factory.mktemp("refusals") / "work"
    shutil.copytree(tiny_analysis.path.parent.parent, root)
    return root, tiny_analysis.id


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_debias_refuses_before_a_run_folder(capsys, workdir, case):
    root, analysis = workdir
    before = sorted(p.name for p in (root / "runs").iterdir())
    with pytest.raises(SystemExit) as exit_info:
        main(["debias", "--analysis", analysis, "--workdir", str(root), "--method", case.method,
              "--param", f"{case.name}={case.text}"])
    says(str(exit_info.value.code), case)
    assert sorted(p.name for p in (root / "runs").iterdir()) == before
