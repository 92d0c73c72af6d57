"""``BaseTask``: the LightningModule skeleton every task of the library builds on."""

from __future__ import annotations

import inspect
import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import MutableMapping
from typing import Any, ClassVar, Literal

from torch import Tensor

from .._deprecation import REMOVED_IN
from ..transforms.pipeline import PIPELINE_KEY, DevicePipeline
from .loading import TASK_NAME_KEY, CheckpointLoading
from .optim import (
    OptimConfig,
    build_optimizer,
    build_scheduler,
    legacy_optim_message,
    resolve_optim,
)

__all__ = ["TASK_NAME_KEY", "BaseTask", "Stage"]

#: The stage a shared step runs for; also the prefix of its logged names.
Stage = Literal["train", "val", "test"]


def _init_depth(obj: object) -> int:
    """How many nested ``__init__`` calls of ``obj`` the caller is inside (itself included)."""
    frame = inspect.currentframe()
    frame = frame.f_back if frame is not None else None  # the caller
    depth = 0
    while frame is not None and frame.f_code.co_name == "__init__":
        if frame.f_locals.get("self") is not obj:
            break
        depth += 1
        frame = frame.f_back
    return depth


class BaseTask(CheckpointLoading, ABC):
    """Hyperparameters, model / loss / metric hooks, the optimiser and its schedule.

    A subclass sets its own typed attributes, then calls ``super().__init__(...)``, which saves
    every constructor argument of the chain as hyperparameters (so a checkpoint rebuilds the
    task) and calls, in order, :meth:`configure_models`, :meth:`configure_losses` and
    :meth:`configure_metrics`. Training, validation and test steps all go through one
    :meth:`shared_step`; a subclass overrides hooks, not the loop. :meth:`configure_models`,
    :meth:`configure_losses` and :meth:`shared_step` are abstract: a subclass that leaves one
    out cannot be instantiated.

    Logged names: ``train_loss``, ``val_loss``, ``test_loss`` and the metrics of
    :meth:`configure_metrics` with the stage as prefix (``val_accuracy``, ...).

    The optimisation is ``optim`` (an :class:`~leukemia_wbc.tasks.optim.OptimConfig`; ``None``
    for the class's :attr:`default_optim`, the paper's Adam with ReduceLROnPlateau on
    ``val_loss``). It is saved in the hyperparameters as a plain dict.

    Args:
        optim: The optimiser and schedule; ``None`` for :attr:`default_optim`.
        **legacy: Deprecated flat optimiser settings (``lr=``, ``weight_decay=``,
            ``lr_patience=``, ``lr_factor=``, ``optimizer=``, ``scheduler=``,
            ``warmup_fraction=``), also those of checkpoints saved before ``optim``: they
            override ``optim``'s and warn (:class:`DeprecationWarning`); removed in 0.3.

    Raises:
        TypeError: A keyword argument the task does not know.
        ValueError: A setting out of range or refused by the task (see
            :class:`~leukemia_wbc.tasks.optim.OptimConfig` and :meth:`check_optim`).
    """

    #: Constructor arguments not saved as hyperparameters (modules, tensors).
    hparams_ignore: tuple[str, ...] = ()
    #: Metric watched by the scheduler (and by the configs' checkpoint / early stopping).
    monitor: str = "val_loss"
    #: The optimisation of ``optim=None``.
    default_optim: ClassVar[OptimConfig] = OptimConfig()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Serve a subclass that still overrides the old ``_shared_step`` (one release)."""
        super().__init_subclass__(**kwargs)
        old = cls.__dict__.get("_shared_step")
        if old is not None and "shared_step" not in cls.__dict__:
            warnings.warn(
                f"{cls.__qualname__} overrides _shared_step, which is now the public "
                f"shared_step: rename it (the old name stops working in leukemia_wbc "
                f"{REMOVED_IN})",
                DeprecationWarning,
                stacklevel=3,
            )
            setattr(cls, "shared_step", old)  # noqa: B010  (mypy refuses assigning a method)

    def __init__(self, *, optim: OptimConfig | None = None, **legacy: Any) -> None:
        super().__init__()
        owner = type(self).__name__
        config, flat = resolve_optim(optim, legacy, default=self.default_optim, owner=owner)
        if flat:
            warnings.warn(
                legacy_optim_message(owner, flat),
                DeprecationWarning,
                stacklevel=_init_depth(self) + 1,  # the line that built the task
            )
        self.check_optim(config)
        #: The optimiser settings.
        self.optim: OptimConfig = config
        self.save_hyperparameters(ignore=[*self.hparams_ignore, "optim", *flat])
        # plain values in the checkpoint (read with weights_only=True) and for the loggers
        self.hparams["optim"] = config.to_dict()
        initial = getattr(self, "_hparams_initial", None)  # what Lightning gives the loggers
        if isinstance(initial, MutableMapping):
            initial["optim"] = config.to_dict()
        if self.ready:
            self.configure()

    def pretrained_parts(self) -> dict[str, str]:
        """The constructor arguments that take backbone weights, each with its architecture.

        Returns:
            Argument name to timm name (an encoder may be ``"tu-<timm name>"``); empty in the
            base class, which has no backbone.
        """
        return {}

    def pretrained_arguments(self, weights: str, backbone: str) -> dict[str, str]:
        """The constructor arguments that start this task from pretrained backbone weights.

        What :class:`~leukemia_wbc.experiments.CrossValidator` uses to start each fold from the
        weights its ``pretrain`` step wrote: every argument of :meth:`pretrained_parts` whose
        architecture is ``backbone`` (or ``"tu-<backbone>"``).

        Args:
            weights: The weights file (see :func:`~leukemia_wbc.models.create_backbone`).
            backbone: The timm architecture the file holds.

        Returns:
            Argument name to ``weights``, for each part of the network of that architecture.

        Raises:
            ValueError: No part of the network is a ``backbone``.
        """
        parts = self.pretrained_parts()
        found = {
            arg: weights for arg, name in parts.items() if name in (backbone, f"tu-{backbone}")
        }
        if not parts:
            raise ValueError(f"{type(self).__name__} has no backbone for pretrained weights")
        if not found:
            have = ", ".join(f"{arg}: {name!r}" for arg, name in parts.items())
            raise ValueError(
                f"{type(self).__name__}: pretrained weights of {backbone!r} fit none of its "
                f"parts ({have})"
            )
        return found

    def check_optim(self, optim: OptimConfig) -> None:
        """Refuse settings this task cannot train with (none in the base class).

        Args:
            optim: The settings.
        """

    @property
    def ready(self) -> bool:
        """Whether the task knows enough to build its network.

        A classifier without classes waits for its data (``ClassificationTask.bind_data``).
        """
        return True

    def configure(self) -> None:
        """Build the network, the loss and the metrics (the three hooks, in order)."""
        self.configure_models()
        self.configure_losses()
        self.configure_metrics()

    # -- hooks ---------------------------------------------------------------------------------
    @abstractmethod
    def configure_models(self) -> None:
        """Build the network(s) as attributes."""

    @abstractmethod
    def configure_losses(self) -> None:
        """Build the loss module(s) as attributes (nothing for a network that has its own)."""

    def configure_metrics(self) -> None:
        """Build the metrics (one collection cloned per stage). The base class has none."""

    @abstractmethod
    def shared_step(self, batch: dict[str, Any], stage: Stage) -> Tensor | None:
        """The step of every stage: loss and metrics of a batch, logged under ``stage``.

        The override point of a task's training, validation and test steps.

        Args:
            batch: The batch dict after the device stage.
            stage: ``"train"``, ``"val"`` or ``"test"``.

        Returns:
            The loss; ``None`` for a stage without one (e.g. a detector's evaluation), which
            ``"train"`` may not be.
        """

    def log_loss(self, stage: Stage, loss: Tensor, batch_size: int) -> None:
        """Log ``<stage>_loss`` (per step too while training), averaged over devices.

        The epoch value is synchronised across processes (``sync_dist``), so that under DDP
        every rank sees the same ``val_loss`` and the checkpoint, early stopping and the
        scheduler decide alike.

        Args:
            stage: ``"train"``, ``"val"`` or ``"test"``.
            loss: The batch loss.
            batch_size: Samples in the batch (the weight of the epoch mean).
        """
        self.log(f"{stage}_loss", loss, on_step=stage == "train", on_epoch=True, prog_bar=True,
                 batch_size=batch_size, sync_dist=True)  # fmt: skip

    # -- checkpoints ---------------------------------------------------------------------------
    def _datamodule_pipeline(
        self,
    ) -> tuple[DevicePipeline, tuple[int, int] | None, float | None] | None:
        """The device pipeline, image size and physical scale of the datamodule in use."""
        trainer = self._trainer
        dm = getattr(trainer, "datamodule", None) if trainer is not None else None
        pipeline = getattr(dm, "pipeline", None)
        if not isinstance(pipeline, DevicePipeline):
            return None
        dataset = getattr(dm, "dataset", None)
        size = getattr(dataset, "size", None)
        scale = getattr(dataset, "target_pixels_per_um", None)
        return (
            pipeline,
            None if size is None else (int(size[0]), int(size[1])),
            None if scale is None else float(scale),
        )

    def on_fit_start(self) -> None:
        """Check, before the first step, that the data's pipeline can be saved with the task."""
        found = self._datamodule_pipeline()
        if found is not None:
            found[0].config()  # raises for a module a checkpoint could not rebuild

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the task's class name and its evaluation pipeline beside the weights.

        The class name (``checkpoint["leukemia_wbc_task"]``) is how a checkpoint is rebuilt
        (:mod:`leukemia_wbc.tasks.loading`). The pipeline record
        (``checkpoint["leukemia_wbc_pipeline"]``: the pipeline's plain
        :meth:`~leukemia_wbc.transforms.DevicePipeline.config`, its ``state_dict`` with e.g.
        the fitted Macenko target, the image size and the physical scale in pixels per
        micrometre, if the images were resampled to one) does not depend on the DataModule's
        class name, so a subclass of ``WBCDataModule`` keeps it too.

        Args:
            checkpoint: Lightning's checkpoint dict.
        """
        checkpoint[TASK_NAME_KEY] = type(self).__name__
        found = self._datamodule_pipeline()
        if found is not None:
            pipeline, size, scale = found
            checkpoint[PIPELINE_KEY] = {
                "config": pipeline.config(),
                "state": {k: v.detach().cpu() for k, v in pipeline.state_dict().items()},
                "size": None if size is None else list(size),
                "pixels_per_um": scale,
            }

    # -- loop ----------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """One training step (see :meth:`shared_step`).

        Args:
            batch: The batch dict after the device stage.
            batch_idx: Index of the batch (unused).

        Returns:
            The loss to minimise.

        Raises:
            RuntimeError: :meth:`shared_step` gave no training loss.
        """
        loss = self.shared_step(batch, "train")
        if loss is None:
            raise RuntimeError(f"{type(self).__name__}.shared_step gave no loss for 'train'")
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        """One validation step (see :meth:`shared_step`).

        Args:
            batch: The batch dict after the device stage.
            batch_idx: Index of the batch (unused).

        Returns:
            The loss, if the task computes one.
        """
        return self.shared_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        """One test step (see :meth:`shared_step`).

        Args:
            batch: The batch dict after the device stage.
            batch_idx: Index of the batch (unused).

        Returns:
            The loss, if the task computes one.
        """
        return self.shared_step(batch, "test")

    def configure_optimizers(self) -> Any:
        """The optimiser and the schedule of :attr:`optim`.

        Returns:
            Lightning's optimizer / scheduler dict.
        """
        optim = self.optim
        optimizer = build_optimizer(self, optim.optimizer, optim.lr, optim.weight_decay)
        steps = self.trainer.estimated_stepping_batches if optim.scheduler != "plateau" else 0
        scheduler = build_scheduler(
            optimizer, optim.scheduler, lr=optim.lr,
            total_steps=int(steps) if math.isfinite(steps) else 0, monitor=self.monitor,
            patience=optim.lr_patience, factor=optim.lr_factor,
            warmup_fraction=optim.warmup_fraction,
        )  # fmt: skip
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
