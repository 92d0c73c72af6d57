"""DetectionModule and SmearDataModule: Mask R-CNN training on CPU, mask mAP, checkpoints, CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

from leukemia_wbc.smear import (
    DETECTION_OPTIM,
    DetectionModule,
    MaskRCNNCellDetector,
    SmearDataModule,
    SyntheticSmear,
    create_mask_rcnn,
    detection_collate,
)
from leukemia_wbc.tasks import OptimConfig


class _Losses(pl.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(
        self, trainer: pl.Trainer, module: Any, outputs: Any, *args: Any
    ) -> None:
        self.losses.append(float(outputs["loss"]))


def _loader(n: int, seed: int, shuffle: bool) -> DataLoader[dict[str, Any]]:
    smears = SyntheticSmear(n, size=160, seed=seed, cells_per_field=(2, 3), n_patients=2)
    return DataLoader(smears, batch_size=2, shuffle=shuffle, collate_fn=detection_collate)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[DetectionModule, _Losses, Path]:
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("det")
    losses = _Losses()
    module = DetectionModule(
        optim=DETECTION_OPTIM.replace(lr=2e-3), box_head_size=64, mask_head_layers=(32,)
    )
    trainer = pl.Trainer(
        max_epochs=6, accelerator="cpu", devices=1, logger=False, callbacks=[losses],
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        default_root_dir=root, limit_val_batches=1,
    )  # fmt: skip
    trainer.fit(module, _loader(4, 0, True), _loader(2, 1, False))
    ckpt = root / "det.ckpt"
    trainer.save_checkpoint(ckpt)
    assert 0.0 <= float(trainer.callback_metrics["val_map"]) <= 1.0
    return module, losses, ckpt


def test_training_lowers_the_loss(trained: tuple[DetectionModule, _Losses, Path]) -> None:
    _, losses, _ = trained
    assert len(losses.losses) == 12
    first, last = sum(losses.losses[:3]) / 3, sum(losses.losses[-3:]) / 3
    assert last < 0.8 * first, losses.losses


def test_checkpoint_restores_the_network(trained: tuple[DetectionModule, _Losses, Path]) -> None:
    module, _, ckpt = trained
    again = DetectionModule.load_from_checkpoint(ckpt, map_location="cpu")
    assert again.box_head_size == 64 and again.mask_head_layers == (32,)
    assert again.optim == DETECTION_OPTIM.replace(lr=2e-3)
    state, restored = module.model.state_dict(), again.model.state_dict()
    assert all(torch.equal(state[k].cpu(), restored[k]) for k in state)
    # the Lightning checkpoint also loads as plain detector weights ("model." prefix)
    net = create_mask_rcnn(weights=ckpt, box_head_size=64, mask_head_layers=(32,))
    assert torch.equal(net.state_dict()["roi_heads.box_predictor.cls_score.weight"],
                       restored["roi_heads.box_predictor.cls_score.weight"])  # fmt: skip
    detector = again.detector(tile=128, overlap=32)
    assert isinstance(detector, MaskRCNNCellDetector) and detector.model is again.model
    assert detector.score_threshold == again.score_threshold


def test_class_aware_targets() -> None:
    module = DetectionModule(class_agnostic=False, num_classes=4, box_head_size=32,
                             mask_head_layers=(16,))  # fmt: skip
    assert module.model.roi_heads.box_predictor.cls_score.out_features == 5
    targets = module._targets([{"boxes": torch.zeros(2, 4), "masks": torch.zeros(2, 8, 8),
                                "labels": torch.tensor([0, 3])}])  # fmt: skip
    assert targets[0]["labels"].tolist() == [1, 4]


def test_default_optimisation_and_plateau_refused() -> None:
    module = DetectionModule(box_head_size=32, mask_head_layers=(16,))
    assert (
        module.optim
        == DETECTION_OPTIM
        == OptimConfig(
            lr=1e-3, weight_decay=1e-4, optimizer="adamw", scheduler="onecycle", warmup_fraction=0.1
        )
    )
    assert DetectionModule(optim=None, box_head_size=32, mask_head_layers=(16,)).optim == (
        DETECTION_OPTIM
    )
    with pytest.raises(ValueError, match=r"optim\.scheduler=.plateau. watches val_loss"):
        DetectionModule(optim=OptimConfig())
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="plateau"):
        DetectionModule(scheduler="plateau")


def test_the_step_is_the_public_hook() -> None:
    """Validation and test go through ``shared_step`` (no loss, the mAP), not step overrides."""
    assert "validation_step" not in vars(DetectionModule)
    assert "test_step" not in vars(DetectionModule)
    torch.manual_seed(0)
    module = DetectionModule(box_head_size=32, mask_head_layers=(16,)).eval()
    batch = detection_collate([SyntheticSmear(1, size=96, seed=2, cells_per_field=(1, 2))[0]])
    with torch.no_grad():
        assert module.validation_step(batch, 0) is None
    result = module.val_map.compute()
    assert -1.0 <= float(result["map"]) <= 1.0  # the batch reached the validation metric


def test_smear_datamodule_splits_whole_patients() -> None:
    smears = SyntheticSmear(12, size=96, seed=0, n_patients=6, cells_per_field=(1, 2))
    dm = SmearDataModule(smears, val_fraction=0.25, batch_size=3, seed=1)
    assert dm.classes == smears.classes
    dm.setup("fit")
    assert dm.split is not None
    dm.split.check(len(smears), smears.groups)  # disjoint, complete, no patient on both sides
    again = SmearDataModule(smears, val_fraction=0.25, seed=1)
    again.setup("fit")
    assert again.split is not None and dm.split.val.tolist() == again.split.val.tolist()
    batch = next(iter(dm.val_dataloader()))
    assert isinstance(batch["image"], list) and batch["image"][0].shape == (3, 96, 96)
    assert {"boxes", "masks", "labels"} <= set(batch["targets"][0])
    assert sum(len(b["image"]) for b in dm.train_dataloader()) == len(dm.split.train)
    with pytest.raises(ValueError, match="2 patients cannot be split"):
        SmearDataModule(SyntheticSmear(4, size=96, n_patients=2), val_fraction=0.2).setup()
    with pytest.raises(ValueError, match="'val_fraction'"):
        SmearDataModule(smears, val_fraction=1.0)


#: Tiny fields and network for ``leukemia-wbc fit --model DetectionModule`` (a few seconds).
TINY_DETECTION_FIT = [
    "--model.init_args.box_head_size", "32", "--model.init_args.mask_head_layers", "[16]",
    "--data.dataset.n", "6", "--data.dataset.size", "96", "--data.dataset.n_patients", "6",
    "--data.dataset.cells_per_field", "[1, 2]", "--data.val_fraction", "0.34",
    "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false",
]  # fmt: skip


def test_fit_command_trains_the_detector(tmp_path: Path) -> None:
    from leukemia_wbc.cli import main

    code = main(["fit", "--model", "DetectionModule", "--data", "SmearDataModule",
                 "--model.init_args.optim.lr", "0.002", *TINY_DETECTION_FIT,
                 "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip
    assert code == 0
    (ckpt,) = tmp_path.rglob("*.ckpt")
    (metrics,) = tmp_path.rglob("metrics.csv")
    assert "val_map" in metrics.read_text().splitlines()[0]
    module = DetectionModule.load_from_checkpoint(ckpt, map_location="cpu")
    assert module.box_head_size == 32 and module.optim == DETECTION_OPTIM.replace(lr=0.002)
    assert isinstance(module.detector(tile=96, overlap=16), MaskRCNNCellDetector)
