"""Self-supervised pretraining: the loss falls, the weights load into every model, outputs safe."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any, ClassVar

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from leukemia_wbc.data import SyntheticWBC, UnlabelledImages, WBCDataModule
from leukemia_wbc.experiments import CrossValidator
from leukemia_wbc.experiments.pretraining import BACKBONE_FILE, pretrain, pretrain_split
from leukemia_wbc.models import HandcraftedSVM
from leukemia_wbc.report import write_report
from leukemia_wbc.tasks import (
    CellClassifier,
    DualBranchClassifier,
    NucleusClassifier,
    PretrainModule,
    SegmentationModule,
)
from leukemia_wbc.transforms import CellViews

SIZE = 32
SMALL = {"hidden_dim": 32, "projection_dim": 16}


@pytest.fixture(scope="module")
def cells() -> SyntheticWBC:
    return SyntheticWBC(30, size=SIZE, seed=3, n_patients=6)


@pytest.fixture(scope="module")
def finished(cells: SyntheticWBC, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-epoch pretraining run's folder."""
    out = tmp_path_factory.mktemp("pretrain") / "run"
    dm = WBCDataModule(cells, batch_size=8, n_splits=3, fold=1)
    pretrain(PretrainModule("resnet10t", **SMALL), dm, out, max_epochs=2, progress=False)
    return out


def test_views_differ_keep_the_size_and_stay_in_range() -> None:
    torch.manual_seed(0)
    x = torch.rand(6, 3, 40, 40)
    views = CellViews((40, 40))
    a, b = views(x), views(x)
    assert a.shape == b.shape == x.shape
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    assert float((a - b).abs().mean()) > 0.02  # two random views, not one
    with pytest.raises(ValueError, match="crop_scale"):
        CellViews((40, 40), crop_scale=(0.9, 0.5))


@pytest.mark.parametrize("method", ["simclr", "byol"])
def test_the_loss_falls_on_a_fixed_batch(method: str) -> None:
    torch.manual_seed(0)
    module = PretrainModule("resnet10t", method=method, **SMALL)
    data = SyntheticWBC(8, size=SIZE, seed=1)
    batch = torch.stack([data[i]["image"] for i in range(8)])
    assert batch.dtype == torch.uint8
    opt = torch.optim.Adam(module.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        torch.manual_seed(1)  # the same views every step: the loss can only fall by learning
        first, second = module.views(module.pixels(batch))
        loss, _ = module._objective(first, second)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-3:]) < losses[0] - 0.05, losses


def test_byol_target_follows_the_online_network() -> None:
    module = PretrainModule("resnet10t", method="byol", momentum=0.5, **SMALL)
    with torch.no_grad():
        for p in module.backbone.parameters():
            p.add_(1.0)
    before = next(module.momentum_backbone.parameters()).clone()
    online = next(module.backbone.parameters())

    class _Trainer:
        estimated_stepping_batches = 10
        global_step = 0

    module.trainer = _Trainer()  # type: ignore[assignment]
    module.on_train_batch_start(None, 0)
    after = next(module.momentum_backbone.parameters())
    assert torch.allclose(after, 0.5 * before + 0.5 * online)


def test_weights_load_into_every_model(finished: Path) -> None:
    file = finished / BACKBONE_FILE
    saved = torch.load(file, map_location="cpu", weights_only=True)
    key = "conv1.0.weight"
    expected = saved[key]
    cell = CellClassifier("resnet10t", weights=str(file), num_classes=4)
    nucleus = NucleusClassifier("resnet10t", weights=str(file), num_classes=4, nucleus_size=32)
    dual = DualBranchClassifier("resnet10t", "resnet10t", cell_weights=str(file),
                                nucleus_weights=str(file), num_classes=4)  # fmt: skip
    depth3 = {"encoder_depth": 3, "decoder_channels": [16, 8, 4]}
    unet = SegmentationModule(encoder="tu-resnet10t", encoder_weights=str(file),
                              net_kwargs=depth3)  # fmt: skip
    tensors = {
        "cell": dict(cell.branches()["cell"].module.named_parameters())[key],
        "nucleus": dict(nucleus.branches()["nucleus"].module.named_parameters())[key],
        "dual cell": dict(dual.net.cell_branch.named_parameters())[key],
        "dual nucleus": dict(dual.net.nucleus_branch.named_parameters())[key],
        "unet": dict(unet.net.encoder.model.named_parameters())[key],
    }
    for where, tensor in tensors.items():
        assert torch.equal(tensor.detach(), expected), where
    # the task says which arguments take the file, and refuses another architecture
    assert dual.pretrained_arguments("w.pt", "resnet10t") == {
        "cell_weights": "w.pt", "nucleus_weights": "w.pt"}  # fmt: skip
    with pytest.raises(ValueError, match=r"fit none of its parts \(weights: 'resnet18'\)"):
        CellClassifier("resnet18").pretrained_arguments("w.pt", "resnet10t")


def test_a_finished_run_records_what_it_trained_on(finished: Path, cells: SyntheticWBC) -> None:
    summary = json.loads((finished / "pretrain.json").read_text())
    split = WBCDataModule(cells, n_splits=3, fold=1).make_split()
    assert summary["train_samples"] == len(split.train)
    assert summary["val_samples"] == len(split.val)
    assert summary["excluded"] == len(split.test) > 0
    assert summary["epochs"] == 2 and len(summary["history"]) == 2
    assert not (finished / "checkpoints" / "last.ckpt").exists()


def test_outputs_are_never_replaced_and_bad_folders_are_refused(
    finished: Path, cells: SyntheticWBC, tmp_path: Path
) -> None:
    dm = WBCDataModule(cells, batch_size=8, n_splits=3)
    module = PretrainModule("resnet10t", **SMALL)
    before = (finished / BACKBONE_FILE).read_bytes()
    with pytest.raises(FileExistsError, match=rf"{BACKBONE_FILE} exists.*overwrite"):
        pretrain(module, dm, finished, max_epochs=1, progress=False)
    assert (finished / BACKBONE_FILE).read_bytes() == before
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        pretrain(module, dm, afile, max_epochs=1, progress=False)
    damaged = tmp_path / "damaged"
    (damaged / "checkpoints").mkdir(parents=True)
    (damaged / "checkpoints" / "last.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"last\.ckpt: cannot resume"):
        pretrain(module, dm, damaged, max_epochs=1, progress=False)
    assert not (damaged / BACKBONE_FILE).exists()
    with pytest.raises(ValueError, match="'devices': pretraining runs on one device"):
        pretrain(module, dm, tmp_path / "ddp", devices=2, progress=False)
    assert not (tmp_path / "ddp").exists()


def test_a_live_run_holds_the_folder(cells: SyntheticWBC, tmp_path: Path) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    lock = {"pid": os.getppid(), "host": socket.gethostname(), "started": "now", "run": "x"}
    (out / "fold.lock").write_text(json.dumps(lock))
    dm = WBCDataModule(cells, batch_size=8, n_splits=3)
    with pytest.raises(RuntimeError, match="another pretraining run writes into"):
        pretrain(PretrainModule("resnet10t", **SMALL), dm, out, max_epochs=1, progress=False)


class _Killed(PretrainModule):
    """Dies at the start of the second epoch, the first time."""

    kill = True

    def on_train_epoch_start(self) -> None:
        if self.current_epoch == 1 and _Killed.kill:
            _Killed.kill = False
            raise RuntimeError("killed")


def test_a_killed_run_resumes_and_other_settings_are_refused(
    cells: SyntheticWBC, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    dm = WBCDataModule(cells, batch_size=8, n_splits=3)
    with pytest.raises(RuntimeError, match="killed"):
        pretrain(_Killed("resnet10t", **SMALL), dm, out, max_epochs=2, progress=False)
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert not (out / BACKBONE_FILE).exists()
    with pytest.raises(ValueError, match=r"other settings .*hidden_dim"):
        pretrain(PretrainModule("resnet10t", hidden_dim=64, projection_dim=16), dm, out,
                 max_epochs=2, progress=False)  # fmt: skip
    result = pretrain(_Killed("resnet10t", **SMALL), dm, out, max_epochs=2, progress=False)
    assert result.epochs == 2 and result.backbone.is_file()
    assert (out / "logs_1" / "metrics.csv").is_file()  # the restart logs beside the first start
    assert len(result.history) == 2


def test_unlabelled_data_validates_on_held_out_groups(tmp_path: Path) -> None:
    SyntheticWBC(12, size=SIZE, seed=2, n_patients=4).to_folder(tmp_path / "cells")
    ds = UnlabelledImages(tmp_path / "cells", exclude=r"^masks/", size=SIZE)
    assert len(ds) == 12 and set(ds.labels.tolist()) == {-1} and ds.classes == ()
    by_file = UnlabelledImages(tmp_path / "cells", exclude=r"^masks/", group_by="file")
    assert len(set(by_file.groups)) == 12
    split, excluded = pretrain_split(WBCDataModule(ds), val_fraction=0.3)
    assert excluded == 0 and len(split.train) + len(split.val) == 12 and len(split.val) > 0
    assert not set(np.asarray(ds.groups)[split.train]) & set(np.asarray(ds.groups)[split.val])
    with pytest.raises(ValueError, match=r"no image under .* \(after excluding"):
        UnlabelledImages(tmp_path / "cells", exclude=".")


@pytest.mark.slow  # the fast run of `cv --pretrain_epochs` is test_documented_commands.py's
def test_cross_validation_pretrains_each_fold_without_its_test_cells(
    cells: SyntheticWBC, tmp_path: Path
) -> None:
    dm = WBCDataModule(cells, batch_size=8)
    cv = CrossValidator(CellClassifier("resnet10t", head_hidden=(8,)), dm, tmp_path / "cv",
                        n_splits=3, max_epochs=1, mask_cache=False,
                        pretrain=PretrainModule("resnet10t", **SMALL), pretrain_epochs=1,
                        trainer_kwargs={"enable_progress_bar": False,
                                        "enable_model_summary": False})  # fmt: skip
    result = cv.run(folds=[0])
    summary = json.loads((tmp_path / "cv" / "fold_0" / "pretrain" / "pretrain.json").read_text())
    split = cv.split(0)
    assert summary["train_samples"] == len(split.train)
    assert summary["excluded"] == len(split.test) == len(result.predictions.index)
    assert cv.config["training"]["pretrain"]["backbone"] == "resnet10t"
    ckpt: Any = torch.load(tmp_path / "cv" / "fold_0" / "checkpoints" / "best.ckpt",
                           map_location="cpu", weights_only=True)  # fmt: skip
    assert ckpt["hyper_parameters"]["weights"].endswith(f"fold_0/pretrain/{BACKBONE_FILE}")
    page = write_report([result], tmp_path / "report").markdown.read_text()
    assert "resnet10t backbone was first pretrained without labels (SimCLR, 1 epoch)" in page
    with pytest.raises(ValueError, match="pretrain: HandcraftedSVM has no backbone"):
        CrossValidator(HandcraftedSVM(), dm, tmp_path / "svm", n_splits=3,
                       pretrain=PretrainModule("resnet10t"))  # fmt: skip


class _Seen(PretrainModule):
    """Records the colour modes at each step; fails at the second when told to."""

    seen: ClassVar[list[tuple[str, str]]] = []
    fail = False

    def shared_step(self, batch: dict[str, Any], stage: Any) -> Any:
        pipeline = self.trainer.datamodule.pipeline  # type: ignore[attr-defined]
        _Seen.seen.append((self.colour_mode, pipeline.colour))
        if _Seen.fail and len(_Seen.seen) > 1:
            raise RuntimeError("failed")
        return super().shared_step(batch, stage)


def test_the_data_colour_mode_applies_to_each_view(cells: SyntheticWBC) -> None:
    dm = WBCDataModule(cells, batch_size=8, n_splits=3, colour="grayscale")
    quiet = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
             "enable_model_summary": False, "limit_val_batches": 0}  # fmt: skip
    module = _Seen("resnet10t", **SMALL)
    pl.Trainer(max_epochs=1, limit_train_batches=2, **quiet).fit(module, datamodule=dm)
    assert _Seen.seen[0] == ("grayscale", "rgb")  # the views get the colour, then lose it
    assert dm.pipeline.colour == "grayscale" and module.colour_mode == "rgb"  # given back
    module.colour_mode = "grayscale"
    first, _ = module.views(torch.rand(4, 3, SIZE, SIZE))
    restored = module.pixels(first)
    assert torch.allclose(restored[:, 0], restored[:, 1], atol=1e-5)  # a gray view
    _Seen.fail = True
    with pytest.raises(RuntimeError, match="failed"):
        pl.Trainer(max_epochs=1, **quiet).fit(_Seen("resnet10t", **SMALL), datamodule=dm)
    assert dm.pipeline.colour == "grayscale"  # given back after a failed fit too
