"""The pipeline on a torchvision model started from a weights file (issue 24): the analysis and a
D3M retrain run end to end on a binary and a multi-class dataset; the stored checkpoints rebuild
without the weights file; bad model options fail in one line before anything runs."""
from __future__ import annotations

import pytest
import torch
from torchvision import models

from core.cli import main
from core.pipeline.analysis import start_analysis
from core.pipeline.preflight import check_analysis
from core.runs.store import RunStore
from core.train.checkpoints import load_checkpoint
from core.train.models import Normalized
from tests.conftest import tiny_config
from tests.pipeline.test_pipeline import debias


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["tiny_sample", "tiny_multiclass"])
def test_resnet18_from_a_weights_file_runs_the_pipeline(dataset, request, tmp_path):
    root = request.getfixturevalue(dataset)
    torch.manual_seed(0)
    weights = tmp_path / "r18.pt"
    torch.save(models.resnet18().state_dict(), weights)
    cfg = tiny_config(root, arch="resnet18", weights=str(weights), steps=2, batch_size=32, proj_dim=64, n_models=1)
    assert cfg.train.augment == "auto" and cfg.model.normalize == "auto"
    run = start_analysis(RunStore(tmp_path / "workdir"), cfg, inline=True)
    assert run.status()["state"] == "done"
    n_val, n_train = len(run.read_array("val_ids")), len(run.read_array("train_ids"))
    assert run.read_array("scores").shape == (n_val, n_train)
    assert run.read_array("erm_logits_val").shape[1] == (3 if dataset == "tiny_multiclass" else 2)

    weights.unlink()  # a checkpoint holds every weight: the file it started from is not needed again
    erm = load_checkpoint(run.file("erm/model.pt"))
    assert isinstance(erm, Normalized) and erm.net.fc.out_features == run.read_array("erm_logits_val").shape[1]
    torch.save(models.resnet18().state_dict(), weights)  # D3M retrains from the same start
    _, d3m = debias(run, "d3m")
    assert d3m.status()["state"] == "done" and len(d3m.read_array("removed_ids")) > 0


def test_bad_model_options_fail_in_one_line_before_anything_runs(tiny_sample, tmp_path, capsys):
    workdir = tmp_path / "workdir"
    for argv, expected in (
            (["--arch", "resnet19"], "unknown model arch 'resnet19'"),
            (["--arch", "alexnet", "--image-size", "32"], "model alexnet cannot take 32 px images"),
            (["--arch", "resnet18", "--weights", str(tmp_path / "none.pt")], "none.pt does not exist"),
            (["--optimizer", "lbfgs"], "invalid choice: 'lbfgs'"),
            (["--image-size", "32", "--resize", "16"], "data.resize must be a whole number >= image_size 32")):
        with pytest.raises(SystemExit) as info:
            main(["analyze", "--data", str(tiny_sample), "--workdir", str(workdir), *argv])
        err = capsys.readouterr().err.strip() or str(info.value.code)  # argparse prints, main exits with it
        assert expected in err.splitlines()[-1], err  # the one line (argparse prints its usage above)
    assert not (workdir / "runs").exists() or not any((workdir / "runs").iterdir())


def test_imagenet_offline_fails_before_a_run_folder_exists(tiny_sample, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("D3M_OFFLINE", "1")
    cfg = tiny_config(tiny_sample, arch="resnet18", weights="imagenet")
    with pytest.raises(ValueError, match="not in the torch cache.*--weights /path/to/resnet18-f37072fd.pth"):
        check_analysis(cfg, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()  # nothing was decoded: the weights are checked first
