"""OptimConfig and the schedules of BaseTask: groups, rate trajectories, bad settings, configs."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from leukemia_wbc.tasks import CellClassifier, OptimConfig, SegmentationModule
from leukemia_wbc.tasks.optim import (
    build_optimizer,
    build_scheduler,
    parameter_groups,
    upgrade_hparams,
)


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
    optim = OptimConfig(lr=1e-2, scheduler=scheduler, **kwargs)  # type: ignore[arg-type]
    model = CellClassifier("resnet10t", num_classes=2, optim=optim)
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
        ({"lr": 0.0}, "lr must be positive, got 0.0"),
        ({"lr_factor": 1.0}, r"lr_factor must lie in \(0, 1\)"),
        ({"weight_decay": -1.0}, "weight_decay and lr_patience must be >= 0"),
    ],
)
def test_bad_optimisation_settings(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OptimConfig(**kwargs)
    with pytest.raises(ValueError, match=message):
        OptimConfig().replace(**kwargs)
    with pytest.raises(ValueError, match=message):  # a saved mapping, checked the same way
        CellClassifier("resnet10t", num_classes=2, optim={**OptimConfig().to_dict(), **kwargs})  # type: ignore[arg-type]


def test_settings_are_saved_as_a_plain_dict() -> None:
    optim = OptimConfig(optimizer="adamw", scheduler="onecycle", lr=3e-3)
    model = CellClassifier("resnet10t", num_classes=2, optim=optim)
    assert model.optim is optim
    assert model.hparams["optim"] == optim.to_dict() == {
        "lr": 3e-3, "weight_decay": 0.0, "lr_patience": 5, "lr_factor": 0.1,
        "optimizer": "adamw", "scheduler": "onecycle", "warmup_fraction": 0.25,
    }  # fmt: skip
    assert model.hparams_initial["optim"] == optim.to_dict()  # what the loggers get
    assert not {"lr", "optimizer", "scheduler"} & set(model.hparams)
    seg = SegmentationModule(encoder="resnet18", optim=OptimConfig(scheduler="cosine"))
    assert seg.optim.scheduler == "cosine" and seg.optim.optimizer == "adam"
    assert SegmentationModule(encoder="resnet18").optim == OptimConfig()  # None: the default
    with pytest.raises(TypeError, match="OptimConfig has no setting 'momentum'"):
        optim.replace(momentum=0.9)


def test_flat_arguments_warn_and_still_work() -> None:
    """The flat arguments of 0.1 are read for one release, with a warning at the caller."""
    with pytest.warns(DeprecationWarning, match=r"flat optimiser arguments lr, scheduler") as got:
        model = CellClassifier("resnet10t", num_classes=2, lr=3e-3, scheduler="cosine")
    assert got[0].filename == __file__  # the warning points at the line that built the task
    assert model.optim == OptimConfig(lr=3e-3, scheduler="cosine")
    assert model.hparams["optim"]["lr"] == 3e-3 and "lr" not in model.hparams
    with pytest.warns(DeprecationWarning, match="optim=OptimConfig"):
        seg = SegmentationModule(encoder="resnet18", lr=1e-2)
    assert seg.optim.lr == 1e-2
    with pytest.raises(ValueError, match="CellClassifier: lr must be positive"):
        CellClassifier("resnet10t", num_classes=2, lr=-1.0)
    with pytest.raises(TypeError, match="unexpected keyword argument 'learning_rate'"):
        CellClassifier("resnet10t", num_classes=2, learning_rate=1e-3)
    with pytest.raises(TypeError, match="argument 'optim' must be an OptimConfig"):
        CellClassifier("resnet10t", num_classes=2, optim=0.1)  # type: ignore[arg-type]


def test_upgrade_hparams_gathers_flat_settings() -> None:
    old = {"backbone": "resnet50", "lr": 1e-4, "lr_patience": 5, "scheduler": "plateau"}
    assert upgrade_hparams(old) == {
        "backbone": "resnet50",
        "optim": {"lr": 1e-4, "lr_patience": 5, "scheduler": "plateau"},
    }
    new = {"backbone": "resnet50", "optim": OptimConfig().to_dict()}
    assert upgrade_hparams(new) == new and upgrade_hparams(new) is not new


def test_command_line_and_yaml_read_optim() -> None:
    """jsonargparse (LightningCLI's parser) reads ``optim`` as dotted options and as a mapping."""
    from jsonargparse import ArgumentParser

    from leukemia_wbc.smear import DETECTION_OPTIM
    from leukemia_wbc.tasks import BaseTask

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(BaseTask, "model")

    def optim(*argv: str) -> OptimConfig:
        config = parser.parse_args(list(argv))
        settings = parser.instantiate(config).model.optim
        assert isinstance(settings, OptimConfig)
        return settings

    common = ["--model", "CellClassifier", "--model.init_args.backbone", "resnet10t",
              "--model.init_args.num_classes", "2"]  # fmt: skip
    assert optim(*common) == OptimConfig()
    assert optim(*common, "--model.init_args.optim.lr", "0.01") == OptimConfig(lr=0.01)
    yaml = "{class_path: CellClassifier, init_args: {backbone: resnet10t, num_classes: 2, " \
        "optim: {lr: 0.005, optimizer: adamw, scheduler: onecycle}}}"  # fmt: skip
    assert optim("--model", yaml) == OptimConfig(lr=0.005, optimizer="adamw", scheduler="onecycle")
    with pytest.raises(Exception, match="lr must be positive"):
        optim(*common, "--model.init_args.optim.lr", "-1")
    with pytest.raises(Exception, match="lr"):  # the flat option is gone from the command line
        optim(*common, "--model.init_args.lr", "0.01")
    # the detector's own defaults stay under a partial override
    detector = ["--model", "DetectionModule", "--model.init_args.box_head_size", "32",
                "--model.init_args.mask_head_layers", "[16]"]  # fmt: skip
    assert optim(*detector) == DETECTION_OPTIM
    assert optim(*detector, "--model.init_args.optim.lr", "0.01") == DETECTION_OPTIM.replace(
        lr=0.01
    )


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
