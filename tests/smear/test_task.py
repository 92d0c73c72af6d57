"""DetectionModule: Mask R-CNN training with a real Trainer on CPU, mask mAP, checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

from leukemia_wbc.smear import (
    DetectionModule,
    MaskRCNNCellDetector,
    SyntheticSmear,
    create_mask_rcnn,
    detection_collate,
)


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
    module = DetectionModule(lr=2e-3, box_head_size=64, mask_head_layers=(32,))
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


def test_plateau_is_refused() -> None:
    with pytest.raises(ValueError, match="plateau"):
        DetectionModule(scheduler="plateau")
