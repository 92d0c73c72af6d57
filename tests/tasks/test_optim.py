"""Optimisers and schedules of BaseTask: parameter groups, rate trajectories, bad arguments."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from leukemia_wbc.tasks import CellClassifier, SegmentationModule
from leukemia_wbc.tasks.optim import build_optimizer, build_scheduler, parameter_groups


class _RateRecorder(pl.Callback):
    """Records the learning rate of the first parameter group before every step."""

    def __init__(self) -> None:
        self.rates: list[float] = []

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        self.rates.append(float(trainer.optimizers[0].param_groups[0]["lr"]))


def _loader(n: int = 32) -> DataLoader[Any]:
    images = torch.randint(0, 255, (n, 3, 32, 32), dtype=torch.uint8)
    labels = torch.arange(n) % 2

    def collate(items: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return {
            "image": torch.stack([i for i, _ in items]).float() / 255,
            "label": torch.stack([lab for _, lab in items]),
        }

    return DataLoader(TensorDataset(images, labels), batch_size=4, collate_fn=collate)


def _rates(scheduler: str, epochs: int = 2, **kwargs: Any) -> list[float]:
    model = CellClassifier("resnet10t", num_classes=2, lr=1e-2, scheduler=scheduler, **kwargs)
    recorder = _RateRecorder()
    pl.Trainer(
        accelerator="cpu", max_epochs=epochs, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[recorder],
    ).fit(model, train_dataloaders=_loader(), val_dataloaders=_loader(8))  # fmt: skip
    return recorder.rates


def test_no_weight_decay_on_biases_and_norms() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    net(torch.zeros(1, 3, 8, 8))
    net[1].weight.requires_grad_(False)
    decay, no_decay = parameter_groups(net.named_parameters(), 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(net[0].weight), id(net[3].weight)}
    # the frozen norm weight is left out; the biases are not decayed
    assert {id(p) for p in no_decay["params"]} == {id(net[0].bias), id(net[1].bias),
                                                   id(net[3].bias)}  # fmt: skip
    assert [g["name"] for g in (decay, no_decay)] == ["decay", "no_decay"]
    (single,) = parameter_groups(net.named_parameters(), 0.0)  # nothing to split
    assert len(single["params"]) == 5 and "name" not in single
    optimizer = build_optimizer(net, "adamw", 1e-3, 0.05)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.05, 0.0]


def test_onecycle_warms_up_to_the_peak_then_anneals() -> None:
    rates = _rates("onecycle", epochs=2, optimizer="adamw", warmup_fraction=0.25)
    assert len(rates) == 16  # 8 batches x 2 epochs
    peak = max(range(len(rates)), key=rates.__getitem__)
    assert peak in (3, 4)  # a quarter of 16 steps
    assert rates[peak] == pytest.approx(1e-2, rel=1e-3)
    assert rates[0] == pytest.approx(1e-2 / 25, rel=1e-3)
    assert rates[-1] < 1e-3 and rates == sorted(rates[: peak + 1]) + rates[peak + 1 :]


def test_cosine_decays_every_step_and_plateau_keeps_the_rate_per_epoch() -> None:
    cosine = _rates("cosine", epochs=2)
    assert cosine[0] == pytest.approx(1e-2) and all(a > b for a, b in pairwise(cosine))
    plateau = _rates("plateau", epochs=2)  # patience 5: no reduction in 2 epochs
    assert set(plateau) == {1e-2}


def test_per_step_schedule_needs_a_run_length() -> None:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="needs the run's length"):
        build_scheduler(optimizer, "onecycle", lr=0.1, total_steps=0, monitor="val_loss",
                        patience=1, factor=0.1, warmup_fraction=0.3)  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"optimizer": "sgd"}, "argument 'optimizer': expected one of"),
        ({"scheduler": "step"}, "argument 'scheduler': expected one of"),
        ({"warmup_fraction": 1.0}, r"warmup_fraction must lie in \(0, 1\)"),
    ],
)
def test_bad_optimisation_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CellClassifier("resnet10t", num_classes=2, **kwargs)
    with pytest.raises(ValueError, match=message):
        SegmentationModule(encoder="resnet18", **kwargs)


def test_schedule_is_saved_with_the_checkpoint_hyperparameters() -> None:
    model = CellClassifier("resnet10t", num_classes=2, optimizer="adamw", scheduler="onecycle")
    assert model.hparams["optimizer"] == "adamw" and model.hparams["scheduler"] == "onecycle"
    seg = SegmentationModule(encoder="resnet18", scheduler="cosine")
    assert seg.scheduler_kind == "cosine" and seg.optimizer_kind == "adam"


@pytest.mark.parametrize("total_steps", [1, 2, 3, 4, 8, 20, 40])
def test_onecycle_with_a_one_step_warm_up_runs(total_steps: int) -> None:
    """torch's OneCycleLR divides by zero when the warm-up is exactly one step (0.25 x 4)."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = build_scheduler(optimizer, "onecycle", lr=0.1, total_steps=total_steps,
                                monitor="val_loss", patience=1, factor=0.1,
                                warmup_fraction=1 / total_steps)["scheduler"]  # fmt: skip
    rates = []
    for _ in range(total_steps - 1):
        optimizer.step()
        scheduler.step()
        rates.append(optimizer.param_groups[0]["lr"])
    assert all(0 < r <= 0.1 + 1e-12 for r in rates)
