"""Every registered method and every option with a domain (tests/option_cases.py): a value outside
it in a study file is refused by `d3m ablate --plan` (and so by `d3m ablate` and the Ablations
page, which load the file the same way) with the file, the line and the key, before any run."""
from __future__ import annotations

from pathlib import Path

import pytest

from core.cli import main
from tests.option_cases import Case, cases
from tests.pipeline.test_option_refusals import says

CASES = cases()

STUDY = """\
title = "domains"
seeds = [0]
methods = ["{method}"]

[analysis]
data = "{data}"
epochs = 1
{tables}"""


def plan_refused(capsys, tmp_path: Path, text: str) -> tuple[Path, str]:
    path = tmp_path / "study.toml"
    path.write_text(text)
    workdir = tmp_path / "wd"
    with pytest.raises(SystemExit) as exit_info:
        main(["ablate", "--plan", str(path), "--workdir", str(workdir)])
    assert capsys.readouterr().out == ""  # no plan printed
    assert not (workdir / "runs").exists()
    return path, str(exit_info.value.code)


def line_number(text: str, start: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith(start))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_fixed_option_refused_with_file_line_and_key(capsys, tmp_path, tiny_sample, case: Case):
    text = STUDY.format(method=case.method, data=tiny_sample,
                        tables=f"\n[params.{case.method}]\n{case.name} = {case.toml}\n")
    path, err = plan_refused(capsys, tmp_path, text)
    where = f"error: {path}:{line_number(text, f'{case.name} =')}: {case.name}: "
    assert err.startswith(where), err
    says(err.removeprefix(where), case)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_grid_value_refused_with_file_line_and_key(capsys, tmp_path, tiny_sample, case: Case):
    key = f"{case.method}.{case.name}"
    text = STUDY.format(method=case.method, data=tiny_sample, tables=f'\n[grid]\n"{key}" = [{case.toml}]\n')
    path, err = plan_refused(capsys, tmp_path, text)
    where = f"error: {path}:{line_number(text, chr(34) + key)}: {key}: "
    assert err.startswith(where), err
    says(err.removeprefix(where), case)


def test_a_negative_seed_is_refused_with_its_line(capsys, tmp_path, tiny_sample):
    text = STUDY.format(method="jtt", data=tiny_sample, tables="").replace("seeds = [0]", "seeds = [0, -1]")
    path, err = plan_refused(capsys, tmp_path, text)
    assert err == f"error: {path}:2: seeds: jtt parameter seed=-1 is not allowed: a whole number >= 0"
