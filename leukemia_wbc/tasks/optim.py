"""Optimiser settings (:class:`OptimConfig`), optimisers and learning-rate schedules of tasks.

Every task of the library takes its optimiser settings as one ``optim`` argument: an
:class:`OptimConfig` in Python, a mapping in YAML (``optim: {lr: 0.001, scheduler: onecycle}``)
and dotted options on the command line (``--model.init_args.optim.lr 0.001``). In a checkpoint's
hyperparameters it is a plain dict (:meth:`OptimConfig.to_dict`).

The flat arguments of earlier releases (``lr=``, ``weight_decay=``, ``lr_patience=``,
``lr_factor=``, ``optimizer=``, ``scheduler=``, ``warmup_fraction=``) still work for one release,
from Python and from checkpoints saved with them: :func:`resolve_optim` turns them into an
:class:`OptimConfig` with a :class:`DeprecationWarning`. The command line and YAML configs take
``optim`` only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from .._deprecation import REMOVED_IN

__all__ = [
    "LEGACY_OPTIM_KEYS",
    "OPTIMIZERS",
    "SCHEDULERS",
    "OptimConfig",
    "OptimizerKind",
    "SchedulerKind",
    "build_optimizer",
    "build_scheduler",
    "check_choices",
    "legacy_optim_message",
    "parameter_groups",
    "resolve_optim",
    "upgrade_hparams",
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


@dataclass(frozen=True)
class OptimConfig:
    """The optimiser and learning-rate schedule of a task.

    The default is the paper's: Adam, and ReduceLROnPlateau on the task's monitored metric
    (``val_loss``). ``OptimConfig(optimizer="adamw", scheduler="onecycle", lr=5e-3,
    weight_decay=0.05)`` is the recipe of the CPU demo. Weight decay never applies to biases
    and normalisation weights (see :func:`parameter_groups`).

    Attributes:
        lr: Learning rate (the peak rate for ``scheduler="onecycle"``).
        weight_decay: Weight decay of weight matrices and kernels.
        lr_patience: Epochs without improvement of the monitored metric before the rate is
            reduced (``scheduler="plateau"``).
        lr_factor: Factor of each reduction (``scheduler="plateau"``).
        optimizer: ``"adam"`` or ``"adamw"``.
        scheduler: ``"plateau"`` (per epoch), ``"onecycle"`` or ``"cosine"`` (per step, over
            the Trainer's ``max_epochs`` / ``max_steps``).
        warmup_fraction: Share of the run rising to ``lr`` with ``scheduler="onecycle"``.

    Raises:
        ValueError: A non-positive learning rate, negative weight decay or patience, a factor
            or warm-up share outside ``(0, 1)``, or an unknown optimiser or scheduler.
    """

    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_patience: int = 5
    lr_factor: float = 0.1
    optimizer: OptimizerKind = "adam"
    scheduler: SchedulerKind = "plateau"
    warmup_fraction: float = 0.25

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.weight_decay < 0 or self.lr_patience < 0:
            raise ValueError(
                f"weight_decay and lr_patience must be >= 0, got {self.weight_decay}, "
                f"{self.lr_patience}"
            )
        if not 0 < self.lr_factor < 1:
            raise ValueError(f"lr_factor must lie in (0, 1), got {self.lr_factor}")
        check_choices(self.optimizer, self.scheduler)
        if not 0 < self.warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must lie in (0, 1), got {self.warmup_fraction}")

    def replace(self, **changes: Any) -> OptimConfig:
        """A copy with some settings changed (validated like a new one).

        Args:
            **changes: Settings to change, e.g. ``lr=1e-4``.

        Returns:
            The new settings.

        Raises:
            TypeError: A name that is not a setting.
            ValueError: A value out of range (see the class).
        """
        unknown = sorted(set(changes) - set(LEGACY_OPTIM_KEYS))
        if unknown:
            raise TypeError(
                f"OptimConfig has no setting {', '.join(map(repr, unknown))}; expected some of "
                f"{', '.join(LEGACY_OPTIM_KEYS)}"
            )
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (how checkpoints and configs record them).

        Returns:
            Setting name to value.
        """
        return dataclasses.asdict(self)

    @classmethod
    def from_mapping(
        cls, values: Mapping[str, Any], *, base: OptimConfig | None = None, where: str = "optim"
    ) -> OptimConfig:
        """Settings from a mapping (a checkpoint's ``optim`` dict, a YAML mapping).

        Args:
            values: Setting name to value; settings left out keep those of ``base``.
            base: The settings to start from (default: ``OptimConfig()``).
            where: How the mapping is named in messages (``"optim"``,
                ``"checkpoint hyper_parameters['optim']"``...).

        Returns:
            The settings.

        Raises:
            ValueError: A key that is not a setting, or a value out of range.
        """
        unknown = sorted(str(k) for k in values if k not in LEGACY_OPTIM_KEYS)
        if unknown:
            raise ValueError(
                f"{where}: unknown optimiser setting {', '.join(map(repr, unknown))}; expected "
                f"some of {', '.join(LEGACY_OPTIM_KEYS)}"
            )
        try:
            return dataclasses.replace(base or cls(), **dict(values))
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None


#: The settings of :class:`OptimConfig`, which earlier releases took as flat task arguments.
LEGACY_OPTIM_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(OptimConfig))


def legacy_optim_message(owner: str, keys: Iterable[str]) -> str:
    """The deprecation message for flat optimiser arguments given to ``owner``.

    Args:
        owner: The task class (or file) that was given them.
        keys: The flat arguments given.

    Returns:
        The message, naming the arguments and their replacement.
    """
    names = sorted(keys)
    example = ", ".join(f"{k}=..." for k in names)
    return (
        f"{owner}: the flat optimiser argument{'s' if len(names) > 1 else ''} "
        f"{', '.join(names)} {'are' if len(names) > 1 else 'is'} deprecated and will be "
        f"removed in leukemia_wbc {REMOVED_IN}; pass optim=OptimConfig({example}) (in YAML: "
        f"optim: {{{', '.join(f'{k}: ...' for k in names)}}}; on the command line: "
        f"--model.init_args.optim.{names[0]} ...)"
    )


def resolve_optim(
    optim: object, legacy: Mapping[str, Any], *, default: OptimConfig, owner: str
) -> tuple[OptimConfig, list[str]]:
    """A task's settings from its ``optim`` argument and deprecated flat arguments.

    The one place where the flat arguments of earlier releases (and the hyperparameters of
    checkpoints saved with them) become an :class:`OptimConfig`.

    Args:
        optim: The task's ``optim`` argument: an :class:`OptimConfig`, a mapping (a saved
            checkpoint's hyperparameter, whose missing settings keep ``default``'s), or
            ``None`` for ``default``.
        legacy: Further keyword arguments of the task; only flat optimiser settings are
            accepted, and they override those of ``optim``.
        default: The task class's default settings.
        owner: The task class name (for messages).

    Returns:
        The settings, and the flat arguments that were given (sorted; the caller warns about
        them, see :func:`legacy_optim_message`).

    Raises:
        TypeError: A keyword argument that is neither a flat optimiser setting nor known to the
            task, or an ``optim`` of another type.
        ValueError: A setting out of range (the message names it).
    """
    unknown = sorted(k for k in legacy if k not in LEGACY_OPTIM_KEYS)
    if unknown:
        raise TypeError(f"{owner}.__init__() got an unexpected keyword argument {unknown[0]!r}")
    if optim is None:
        config = default
    elif isinstance(optim, OptimConfig):
        config = optim
    elif isinstance(optim, Mapping):
        config = OptimConfig.from_mapping(optim, base=default, where=f"{owner} optim")
    else:
        raise TypeError(
            f"{owner}: argument 'optim' must be an OptimConfig, a mapping of its settings or "
            f"None, got {type(optim).__name__}"
        )
    if legacy:
        config = OptimConfig.from_mapping(legacy, base=config, where=owner)
    return config, sorted(legacy)


def upgrade_hparams(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """Saved hyperparameters with flat optimiser settings gathered into ``optim``.

    For records written before :class:`OptimConfig` (a checkpoint's ``hyper_parameters``, a
    cross-validation's ``config.json``), so that they compare equal to those of today's tasks.
    Settings the record leaves out are not filled in.

    Args:
        hparams: Saved hyperparameters.

    Returns:
        A new dict: ``optim`` holds the flat settings (over an ``optim`` already there), which
        are removed from the top level. Without flat settings, a plain copy.
    """
    out = dict(hparams)
    flat = {k: out.pop(k) for k in LEGACY_OPTIM_KEYS if k in out}
    if flat:
        saved = out.get("optim")
        out["optim"] = {**(dict(saved) if isinstance(saved, Mapping) else {}), **flat}
    return out


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
