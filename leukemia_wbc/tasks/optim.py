"""Optimisers and learning-rate schedules of :class:`~leukemia_wbc.tasks.base.BaseTask`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import torch
from torch import nn

__all__ = [
    "OPTIMIZERS",
    "SCHEDULERS",
    "OptimizerKind",
    "SchedulerKind",
    "build_optimizer",
    "build_scheduler",
    "check_choices",
    "parameter_groups",
]

#: ``"adam"`` (the paper's) or ``"adamw"`` (decoupled weight decay).
OptimizerKind = Literal["adam", "adamw"]
#: ``"plateau"``: ReduceLROnPlateau on the monitored metric, once per epoch (the paper's).
#: ``"onecycle"``: OneCycleLR stepped every batch, peaking at ``lr``.
#: ``"cosine"``: cosine decay from ``lr`` to 0 over the run, stepped every batch.
SchedulerKind = Literal["plateau", "onecycle", "cosine"]
OPTIMIZERS: tuple[OptimizerKind, ...] = ("adam", "adamw")
SCHEDULERS: tuple[SchedulerKind, ...] = ("plateau", "onecycle", "cosine")


def check_choices(optimizer: str, scheduler: str) -> None:
    """Refuse an unknown optimiser or scheduler name.

    Args:
        optimizer: The optimiser name to check against :data:`OPTIMIZERS`.
        scheduler: The scheduler name to check against :data:`SCHEDULERS`.

    Raises:
        ValueError: Either name is not one of the choices; the message names the argument.
    """
    for argument, value, choices in (
        ("optimizer", optimizer, OPTIMIZERS),
        ("scheduler", scheduler, SCHEDULERS),
    ):
        if value not in choices:
            raise ValueError(f"argument {argument!r}: expected one of {choices}, got {value!r}")


def parameter_groups(
    named: Iterable[tuple[str, nn.Parameter]], weight_decay: float
) -> list[dict[str, Any]]:
    """Trainable parameters split into a decayed and a non-decayed group.

    Biases and normalisation weights (every parameter with fewer than two dimensions) get no
    weight decay, the usual practice (timm's ``param_groups_weight_decay`` does the same).
    Frozen parameters are left out.

    Args:
        named: ``module.named_parameters()``.
        weight_decay: Decay of the weight matrices and kernels.

    Returns:
        Optimiser parameter groups, named ``"decay"`` and ``"no_decay"`` (Lightning's
        learning-rate monitor logs ``lr-<optimiser>/<name>``); an empty group is dropped, and
        with ``weight_decay=0`` all parameters form one unnamed group.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for _, param in named:
        if param.requires_grad:
            (decay if param.ndim > 1 else no_decay).append(param)
    if weight_decay == 0:  # one group: the learning-rate monitor logs one "lr-<optimiser>"
        return [{"params": decay + no_decay, "weight_decay": 0.0}] if decay or no_decay else []
    groups = [
        {"params": decay, "weight_decay": weight_decay, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(
    module: nn.Module, kind: OptimizerKind, lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    """Adam or AdamW over the trainable parameters of ``module``.

    Args:
        module: The task (or network) whose trainable parameters are optimised.
        kind: ``"adam"`` or ``"adamw"``.
        lr: Learning rate (the peak for ``"onecycle"``).
        weight_decay: Weight decay of weight matrices and kernels (see
            :func:`parameter_groups`).

    Returns:
        The optimiser.

    Raises:
        ValueError: An unknown ``kind``, or no trainable parameter.
    """
    if kind not in OPTIMIZERS:
        raise ValueError(f"argument 'optimizer': expected one of {OPTIMIZERS}, got {kind!r}")
    groups = parameter_groups(module.named_parameters(), weight_decay)
    if not groups:
        raise ValueError(f"{type(module).__name__} has no trainable parameter to optimise")
    if kind == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    return torch.optim.Adam(groups, lr=lr)


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    kind: SchedulerKind,
    *,
    lr: float,
    total_steps: int,
    monitor: str,
    patience: int,
    factor: float,
    warmup_fraction: float,
) -> dict[str, Any]:
    """The Lightning ``lr_scheduler`` entry for ``kind``.

    Args:
        optimizer: The optimiser to schedule.
        kind: ``"plateau"``, ``"onecycle"`` or ``"cosine"`` (see :data:`SchedulerKind`).
        lr: Peak learning rate (``"onecycle"``).
        total_steps: Optimiser steps of the whole run (``"onecycle"``, ``"cosine"``);
            Lightning's ``trainer.estimated_stepping_batches``.
        monitor: Metric watched by ``"plateau"``.
        patience: Epochs without improvement before ``"plateau"`` reduces the rate.
        factor: Factor of each ``"plateau"`` reduction.
        warmup_fraction: Share of the run spent rising to ``lr`` (``"onecycle"``).

    Returns:
        ``{"scheduler": ..., "interval": ..., ...}`` as ``configure_optimizers`` returns it.

    Raises:
        ValueError: An unknown ``kind``, or a per-step schedule with no known step count
            (a Trainer with neither ``max_epochs`` nor ``max_steps``).
    """
    if kind not in SCHEDULERS:
        raise ValueError(f"argument 'scheduler': expected one of {SCHEDULERS}, got {kind!r}")
    if kind == "plateau":
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=factor, patience=patience
        )
        return {"scheduler": plateau, "monitor": monitor, "interval": "epoch"}
    if not 0 < total_steps < 2**62:
        raise ValueError(
            f"scheduler {kind!r} needs the run's length: give the Trainer max_epochs or "
            f"max_steps (estimated steps: {total_steps})"
        )
    if kind == "onecycle":
        pct = warmup_fraction
        if abs(pct * total_steps - 1) < 1e-9:  # a one-step warm-up divides by zero in torch
            pct = min(1.5 / total_steps, 0.75)
        sched: torch.optim.lr_scheduler.LRScheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=lr, total_steps=total_steps, pct_start=pct,
            div_factor=25.0, final_div_factor=1e3,
        )  # fmt: skip
    else:
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    return {"scheduler": sched, "interval": "step"}
