"""Stain consistency: the loss between a cell's prediction and its restained copy's."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch import Tensor, nn

from leukemia_wbc.data import SyntheticWBC, WBCDataModule
from leukemia_wbc.data.datamodule import collate_samples
from leukemia_wbc.inference import TrainedModel
from leukemia_wbc.tasks import CellClassifier
from leukemia_wbc.tasks.consistency import StainConsistency


class _MeanColour(nn.Module):
    """A network that reads nothing but each image's mean colour (a pure stain shortcut)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 2)

    def forward(self, x: Tensor) -> Tensor:
        logits: Tensor = self.linear(x.mean((2, 3)) * 10)
        return logits


def _cells_batch(n: int = 8) -> dict[str, Tensor]:
    cells = SyntheticWBC(n, size=32, seed=1, n_patients=4)
    batch = collate_samples([cells[i] for i in range(n)])
    batch.pop("skipped")
    return batch


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="consistency must be at least 0"):
        CellClassifier("resnet10t", num_classes=2, consistency=-1.0)
    with pytest.raises(ValueError, match=r"strength must lie in \(0, 1\)"):
        StainConsistency(1.0, strength=1.5)
    assert CellClassifier("resnet10t", num_classes=2).consistency is None


def test_a_colour_shortcut_pays_and_its_gradient_flows() -> None:
    torch.manual_seed(0)
    task = CellClassifier("resnet10t", num_classes=2, consistency=1.0)
    task.net = _MeanColour()  # type: ignore[assignment]
    batch = _cells_batch()
    image = (batch["image"].float() / 255 - task.mean) / task.std
    normalised = {**batch, "image": image}
    logits = task.forward_batch(normalised)
    assert task.consistency is not None
    loss = task.consistency(task, normalised, logits)
    assert float(loss) > 1e-4  # the restained copy moves a colour-only network's answer
    loss.backward()
    assert task.net.linear.weight.grad is not None
    assert float(task.net.linear.weight.grad.abs().sum()) > 0
    task.net.linear.weight.data.zero_()  # a network blind to colour pays nothing
    task.net.linear.bias.data.zero_()
    blind = task.consistency(task, normalised, task.forward_batch(normalised))
    assert float(blind) == pytest.approx(0.0, abs=1e-7)


def test_training_with_consistency_saves_it(tmp_path: Path) -> None:
    pl.seed_everything(0)
    cells = SyntheticWBC(21, size=32, seed=2, n_patients=7)
    dm = WBCDataModule(cells, size=32, batch_size=8, split="holdout")
    task = CellClassifier("resnet10t", consistency=0.5)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path,
                         limit_train_batches=1, limit_val_batches=1)  # fmt: skip
    trainer.fit(task, datamodule=dm)
    assert torch.isfinite(trainer.callback_metrics["train_loss_epoch"])
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    loaded = TrainedModel.from_checkpoint(path, device="cpu")
    assert loaded.task.consistency is not None and loaded.task.consistency.weight == 0.5


def test_the_restaining_runs_under_bfloat16_autocast() -> None:
    """Training steps run under bf16 autocast where the CPU has it; the stain estimate must not."""
    task = CellClassifier("resnet10t", num_classes=2, consistency=1.0)
    task.net = _MeanColour()  # type: ignore[assignment]
    batch = _cells_batch(4)
    normalised = {**batch, "image": (batch["image"].float() / 255 - task.mean) / task.std}
    assert task.consistency is not None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = task.consistency(task, normalised, task.forward_batch(normalised))
    assert torch.isfinite(loss)
