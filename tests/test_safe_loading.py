"""Files and configs cannot run code; checkpoints do not need the files they started from.

The crafted files of issue 17, each through the entry point a user calls (``leukemia-wbc
classify``, ``leukemia-wbc fit``, ``load_from_checkpoint``, ``TrainedModel``): refused with one
line that names the file, and the marker file the payload would create never appears.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from leukemia_wbc.cli import main
from leukemia_wbc.data import SyntheticWBC, WBCDataModule
from leukemia_wbc.inference import TrainedModel
from leukemia_wbc.models import read_state_dict
from leukemia_wbc.tasks import CellClassifier, SegmentationModule

SIZE = 32


def _trainer() -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, max_epochs=1,
                      limit_train_batches=1, limit_val_batches=1)  # fmt: skip


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A classifier and a U-Net checkpoint (one step each) and one cell image."""
    root = tmp_path_factory.mktemp("safe")
    dm = WBCDataModule(SyntheticWBC(40, size=SIZE, seed=1, n_patients=10), size=SIZE,
                       split="holdout", batch_size=8)  # fmt: skip
    small = {"encoder_depth": 3, "decoder_channels": [16, 8, 8]}
    seg = SegmentationModule("unet", "resnet18", net_kwargs=small)
    trainer = _trainer()
    trainer.fit(seg, datamodule=dm)
    trainer.save_checkpoint(root / "unet.ckpt")
    clf = CellClassifier("resnet10t", head_hidden=(8,))
    trainer = _trainer()
    trainer.fit(clf, datamodule=dm)
    trainer.save_checkpoint(root / "clf.ckpt")
    image = root / "cell.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (SIZE, SIZE, 3), np.uint8)).save(
        image
    )
    return {"unet": root / "unet.ckpt", "clf": root / "clf.ckpt", "image": image, "root": root}


def _tampered(source: Path, target: Path, **hparams: Any) -> Path:
    ckpt = torch.load(source, map_location="cpu", weights_only=True)
    ckpt = copy.deepcopy(ckpt)
    ckpt["hyper_parameters"].update(hparams)
    torch.save(ckpt, target)
    return target


def _popen(marker: Path) -> dict[str, Any]:
    return {"class_path": "subprocess.Popen",
            "init_args": {"args": f"touch {marker}", "shell": True}}  # fmt: skip


class _Payload:
    """Pickles as a call of ``os.system``: what a crafted pickle does on load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_segmenter_checkpoint_with_a_class_path_is_refused_by_classify(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned"
    for i, net_kwargs in enumerate([_popen(marker), {"encoder_depth": _popen(marker)}]):
        evil = _tampered(files["unet"], tmp_path / f"evil{i}.ckpt", net_kwargs=net_kwargs)
        out = tmp_path / f"out{i}.csv"
        code = main(["classify", str(files["clf"]), str(files["image"]), "--segmenter",
                     str(evil), "--out", str(out)])  # fmt: skip
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 1 and len(err) == 1
        assert f"evil{i}.ckpt" in err[0] and "names a class to import" in err[0]
        assert not out.exists()
        with pytest.raises(ValueError, match="names a class to import"):
            SegmentationModule.load_from_checkpoint(evil)
    assert not marker.exists()


def test_lightning_instantiator_entries_are_ignored(files: dict[str, Path], tmp_path: Path) -> None:
    """``_instantiator`` / ``_class_path`` (LightningCLI's) never choose what is imported."""
    path = _tampered(files["clf"], tmp_path / "cli.ckpt",
                     _instantiator="lightning.pytorch.cli.instantiate_module",
                     _class_path="this.Foo")  # fmt: skip
    before = "this" in sys.modules
    task = CellClassifier.load_from_checkpoint(path)
    assert type(task) is CellClassifier and ("this" in sys.modules) == before
    assert TrainedModel.from_checkpoint(path, device="cpu").classes == task.classes


def test_pickled_code_in_any_checkpoint_is_refused(files: dict[str, Path], tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    ckpt = torch.load(files["clf"], map_location="cpu", weights_only=True)
    ckpt["extra"] = _Payload(marker)
    evil = tmp_path / "evil.ckpt"
    torch.save(ckpt, evil)
    refused = r"evil\.ckpt .*loading them could run code: refused"
    with pytest.raises(ValueError, match=refused):
        CellClassifier.load_from_checkpoint(evil)
    with pytest.raises(ValueError, match=refused):
        TrainedModel.from_checkpoint(evil, device="cpu")
    with pytest.raises(ValueError, match=refused):
        read_state_dict(evil)
    assert not marker.exists()


def test_not_a_checkpoint_never_advises_weights_only_false(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    noise = tmp_path / "noise.ckpt"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(files["clf"].read_bytes()[:5000])
    for bad in (noise, truncated):
        assert main(["classify", str(bad), str(files["image"]), "--out",
                     str(tmp_path / "o.csv")]) == 1  # fmt: skip
        err = capsys.readouterr().err
        assert bad.name in err and "not the zip archive torch.save writes" in err
        assert "weights_only" not in err
        with pytest.raises(ValueError) as info:
            CellClassifier.load_from_checkpoint(bad)
        assert "weights_only" not in str(info.value) and bad.name in str(info.value)


def test_load_from_checkpoint_refuses_another_task_by_name(files: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match=r"holds a SegmentationModule, not a CellClassifier"):
        CellClassifier.load_from_checkpoint(files["unet"])
    with pytest.raises(ValueError, match="weights_only=False is refused"):
        CellClassifier.load_from_checkpoint(files["clf"], weights_only=False)


def test_config_cannot_build_a_class_through_net_kwargs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``net_kwargs`` takes plain values: a ``class_path`` there is an error, nothing imported."""
    marker = tmp_path / "pwned"
    # one fresh process reads both configs (a module imported by an earlier test would hide
    # an import here), each `fit` in turn, then says whether `this` was imported
    code = (
        "import sys\n"
        "from leukemia_wbc.cli import main\n"
        "for config in sys.argv[1:]:\n"
        "    status = main(['fit', '--config', config])\n"
        "    print(f'status {status}', file=sys.stderr)\n"
        "print('imported this' if 'this' in sys.modules else 'clean', file=sys.stderr)\n"
    )
    payloads = [_popen(marker), {"decoder_attention_type": {"class_path": "this.Foo"}}]
    configs = []
    for i, value in enumerate(payloads):
        config = tmp_path / f"evil{i}.yaml"
        config.write_text(yaml.safe_dump({
            "model": {"class_path": "leukemia_wbc.tasks.SegmentationModule",
                      "init_args": {"encoder": "resnet18", "net_kwargs": value}},
            "data": {"class_path": "leukemia_wbc.data.WBCDataModule",
                     "init_args": {"dataset": {"class_path": "leukemia_wbc.data.SyntheticWBC",
                                               "init_args": {"n": 8}}, "size": SIZE}},
            "trainer": {"fast_dev_run": True, "default_root_dir": str(tmp_path / "run")},
        }))  # fmt: skip
        configs.append(str(config))
    run = subprocess.run(
        [sys.executable, "-c", code, *configs],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
        cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stderr.strip().splitlines() if line.strip()]
    assert lines[-1] == "clean" and "Beautiful is better" not in run.stdout
    statuses = [i for i, line in enumerate(lines) if line.startswith("status ")]
    assert [lines[i] for i in statuses] == ["status 1", "status 1"], run.stderr
    for i in statuses:  # each refusal is one line naming the argument, just before its status
        assert "model.init_args.net_kwargs" in lines[i - 1]
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_fit_names_the_command_for_a_cross_validation_config(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["fit", "--config", "resnet50_baseline"]) == 1
    err = capsys.readouterr().err.strip()
    assert (
        "a cross-validation config" in err and "leukemia-wbc cv --config resnet50_baseline" in err
    )
    assert "expected null" not in err


def test_checkpoint_does_not_need_the_weights_file_it_started_from(tmp_path: Path) -> None:
    """Trained from a local pretrained file, then the file is gone: the checkpoint still loads."""
    start = tmp_path / "pretrained.pt"
    torch.save(CellClassifier("resnet10t", num_classes=4).net.backbone.state_dict(), start)
    task = CellClassifier("resnet10t", head_hidden=(8,), weights=str(start))
    dm = WBCDataModule(SyntheticWBC(40, size=SIZE, seed=2, n_patients=10), size=SIZE,
                       split="holdout", batch_size=8)  # fmt: skip
    trainer = _trainer()
    trainer.fit(task, datamodule=dm)
    path = tmp_path / "trained.ckpt"
    trainer.save_checkpoint(path)
    start.unlink()
    loaded = CellClassifier.load_from_checkpoint(path)
    model = TrainedModel.from_checkpoint(path, device="cpu")
    assert loaded.classes == task.classes == model.classes
    state = task.state_dict()
    assert all(torch.equal(state[k], v) for k, v in loaded.state_dict().items())
    assert all(torch.equal(state[k], v) for k, v in model.task.state_dict().items())
