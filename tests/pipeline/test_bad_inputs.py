"""The catalogue of bad inputs beyond the dataset folder (tests/test_dataset.py has those):
each is refused with one line naming the culprit, no traceback, and no run folder left."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import PROJECT_ROOT
from core.views import paths
from core.cli import main

ROOT = PROJECT_ROOT


@pytest.fixture(scope="module")
def corrupt_sample(tiny_sample, tmp_path_factory) -> tuple[Path, str]:
    """A copy of the tiny sample with one image that does not decode."""
    root = tmp_path_factory.mktemp("corrupt") / "data"
    shutil.copytree(tiny_sample, root)
    name = sorted((root / "images").iterdir())[7].name
    (root / "images" / name).write_bytes(b"\xff\xd8\xff not really a jpeg")
    return root, name


def refused(capsys, workdir: Path, *argv: str) -> str:
    """Run `d3m argv`; it must exit non-zero with a one-line error, no traceback, no run."""
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, *(["--workdir", str(workdir)] if argv[0] not in ("validate",) else [])])
    err = str(exit_info.value.code) + capsys.readouterr().err
    assert exit_info.value.code not in (0, None)
    assert "Traceback" not in err
    runs = workdir / "runs"
    assert not (runs.is_dir() and any(runs.iterdir())), f"a run folder was left: {list(runs.iterdir())}"
    return err


# (arguments after "pipeline --data <tiny sample>", text the one-line error must contain)
PIPELINE_CASES = [
    (["--k", "100000"], "k 100000 is outside 0..299"),
    (["--k", "-5"], "k -5 is outside 0..299"),
    (["--k", "300"], "k 300 is outside 0..299"),
    (["--k-sweep", "10,abc"], "'abc' is not a whole number"),
    (["--k-sweep", "10,5000"], "k sweep value 5000 is outside"),
    (["--method", "jtt", "--param", "upweight=abc"], "upweight='abc' is not a number"),
    (["--param", "nosuch=1"], "no parameter 'nosuch'"),
    (["--method", "groupdro", "--param", "eta=x"], "eta='x'"),
    (["--group-attribute", "plumage"], "group_attribute 'plumage' is not an attribute column"),
    (["--epochs", "0"], "train.epochs must be a whole number >= 1, got 0"),
    (["--models", "0"], "trak.n_models must be a whole number >= 1, got 0"),
    (["--proj-dim", "-3"], "trak.proj_dim must be a whole number >= 1, got -3"),
    (["--image-size", "0"], "data.image_size must be a whole number >= 1, got 0"),
    (["--scope", "last:x"], "unknown gradient scope 'last:x'"),
    (["--weights", "/no/such/weights.pt"], "weights file /no/such/weights.pt does not exist"),
    (["--proxy-width", "0"], "proxy_width must be >= 1, got 0"),
    (["--arch", "resnet18", "--proxy-width", "2"], "proxy_width=2 needs arch small_cnn"),
]


@pytest.mark.parametrize("extra, culprit", PIPELINE_CASES, ids=[" ".join(c[0]) for c in PIPELINE_CASES])
def test_pipeline_refuses_before_any_run(capsys, tmp_path, tiny_sample, extra, culprit):
    err = refused(capsys, tmp_path / "wd", "pipeline", "--data", str(tiny_sample), "--device", "cpu", *extra)
    assert culprit in err


def test_missing_dataset_folder(capsys, tmp_path):
    err = refused(capsys, tmp_path / "wd", "pipeline", "--data", str(tmp_path / "nowhere"))
    assert str(tmp_path / "nowhere") in err


def test_corrupt_image_found_before_any_run(capsys, tmp_path, corrupt_sample):
    root, name = corrupt_sample
    err = refused(capsys, tmp_path / "wd", "pipeline", "--data", str(root), "--epochs", "1")
    assert name in err and "cannot be read" in err and "nothing was run" in err
    with pytest.raises(SystemExit):  # `d3m validate` decodes every image too
        main(["validate", "--data", str(root)])
    assert name in capsys.readouterr().out


@pytest.mark.parametrize("command", [["runs"], ["analyze"], ["show", "x"]])
def test_workdir_that_is_a_file(capsys, tmp_path, command):
    afile = tmp_path / "afile"
    afile.write_text("")
    for workdir in (afile, afile / "sub"):
        with pytest.raises(SystemExit) as exit_info:
            main([*command, "--workdir", str(workdir)])
        assert exit_info.value.code == f"error: not a directory (a file is in the way): {afile}"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_workdir_not_writable(capsys, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    err = refused(capsys, ro / "wd", "analyze")
    assert f"permission denied: {ro}" in err


@pytest.mark.parametrize("argv, culprit", [
    (["show", "nope"], "no run 'nope'"),
    (["cancel", "nope"], "no run 'nope'"),
    (["resume", "nope"], "no run 'nope'"),
    (["export", "nope", "--out", "x.csv"], "no run 'nope'"),
    (["debias", "--analysis", "nope"], "no run 'nope'"),
    (["show", "../etc"], "no run '../etc'"),
])
def test_unknown_run(capsys, tmp_path, argv, culprit):
    assert culprit in refused(capsys, tmp_path / "wd", *argv)


def test_debug_shows_the_traceback(capsys, tmp_path, monkeypatch):
    with pytest.raises(KeyError):
        main(["--debug", "show", "nope", "--workdir", str(tmp_path)])
    monkeypatch.setenv("D3M_DEBUG", "1")
    with pytest.raises(KeyError):
        main(["show", "nope", "--workdir", str(tmp_path)])


def test_broken_pipe_is_quiet(tmp_path):
    """`d3m methods | head -1`: the reader closes the pipe early; no traceback, no noise."""
    proc = subprocess.run(f"{sys.executable} -m core.cli methods | head -c 1", shell=True, cwd=ROOT,
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert len(proc.stdout) == 1 and proc.stderr == "", proc.stderr


def test_dashboard_paths_confined(tmp_path):
    root = (tmp_path / "team").resolve()
    (root / "data").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (root / "escape").symlink_to(tmp_path / "secret")
    assert paths.confine("data", "Dataset folder", root) == root / "data"
    assert paths.confine(str(root / "data"), "Dataset folder", root) == root / "data"
    bad = {"../secret": "'..' is not allowed", "data/../../secret": "'..' is not allowed",
           str(tmp_path / "secret"): "is outside", "/etc": "is outside", "escape": "leads out of",
           "escape/x": "leads out of", "  ": "empty"}
    for text, message in bad.items():
        with pytest.raises(ValueError) as info:
            paths.confine(text, "Work directory", root)
        assert message in str(info.value) and "Work directory" in str(info.value) and "\n" not in str(info.value)
    assert paths.confine("../anything", "Dataset folder", None) == Path("../anything")  # unset: local app
