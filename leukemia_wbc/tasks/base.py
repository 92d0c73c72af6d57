"""``BaseTask``: the LightningModule skeleton every task of the library builds on."""

from __future__ import annotations

import math
from typing import Any, Literal

import lightning.pytorch as pl
from torch import Tensor

from ..transforms.pipeline import PIPELINE_KEY, DevicePipeline
from .optim import (
    OptimizerKind,
    SchedulerKind,
    build_optimizer,
    build_scheduler,
    check_choices,
)

__all__ = ["BaseTask", "Stage"]

#: The stage a shared step runs for; also the prefix of its logged names.
Stage = Literal["train", "val", "test"]


class BaseTask(pl.LightningModule):
    """Hyperparameters, model / loss / metric hooks, the optimiser and its schedule.

    A subclass sets its own typed attributes, then calls ``super().__init__(...)``, which saves
    every constructor argument of the chain as hyperparameters (so a checkpoint rebuilds the
    task) and calls, in order, :meth:`configure_models`, :meth:`configure_losses` and
    :meth:`configure_metrics`. Training, validation and test steps all go through one
    :meth:`_shared_step`; a subclass overrides hooks, not the loop.

    Logged names: ``train_loss``, ``val_loss``, ``test_loss`` and the metrics of
    :meth:`configure_metrics` with the stage as prefix (``val_accuracy``, ...).

    The default optimisation is the paper's: Adam, and ReduceLROnPlateau on ``val_loss``.
    ``optimizer="adamw", scheduler="onecycle"`` is the recipe of the CPU demo and of the slow
    accuracy test (see :mod:`leukemia_wbc.tasks.optim`); weight decay never applies to biases
    and normalisation weights.

    Args:
        lr: Learning rate (the peak rate for ``scheduler="onecycle"``).
        weight_decay: Weight decay of weight matrices and kernels.
        lr_patience: Epochs without ``val_loss`` improvement before the rate is reduced
            (``scheduler="plateau"``).
        lr_factor: Factor of each reduction (``scheduler="plateau"``).
        optimizer: ``"adam"`` or ``"adamw"``.
        scheduler: ``"plateau"`` (per epoch), ``"onecycle"`` or ``"cosine"`` (per step, over
            the Trainer's ``max_epochs`` / ``max_steps``).
        warmup_fraction: Share of the run rising to ``lr`` with ``scheduler="onecycle"``.

    Raises:
        ValueError: A non-positive learning rate, negative weight decay or patience, a
            factor or warm-up share outside ``(0, 1)``, or an unknown optimiser or scheduler.
    """

    #: Constructor arguments not saved as hyperparameters (modules, tensors).
    hparams_ignore: tuple[str, ...] = ()
    #: Metric watched by the scheduler (and by the configs' checkpoint / early stopping).
    monitor: str = "val_loss"

    def __init__(
        self,
        *,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        lr_patience: int = 5,
        lr_factor: float = 0.1,
        optimizer: OptimizerKind = "adam",
        scheduler: SchedulerKind = "plateau",
        warmup_fraction: float = 0.25,
    ) -> None:
        super().__init__()
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if weight_decay < 0 or lr_patience < 0:
            raise ValueError(
                f"weight_decay and lr_patience must be >= 0, got {weight_decay}, {lr_patience}"
            )
        if not 0 < lr_factor < 1:
            raise ValueError(f"lr_factor must lie in (0, 1), got {lr_factor}")
        check_choices(optimizer, scheduler)
        if not 0 < warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must lie in (0, 1), got {warmup_fraction}")
        self.save_hyperparameters(ignore=list(self.hparams_ignore))
        self.lr = lr
        self.weight_decay = weight_decay
        self.lr_patience = lr_patience
        self.lr_factor = lr_factor
        self.optimizer_kind: OptimizerKind = optimizer
        self.scheduler_kind: SchedulerKind = scheduler
        self.warmup_fraction = warmup_fraction
        if self.ready:
            self.configure()

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
    def configure_models(self) -> None:
        """Build the network(s) as attributes. Subclasses must override it.

        Raises:
            NotImplementedError: Always, in the base class.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement configure_models")

    def configure_losses(self) -> None:
        """Build the loss module(s) as attributes. Subclasses must override it.

        Raises:
            NotImplementedError: Always, in the base class.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement configure_losses")

    def configure_metrics(self) -> None:
        """Build the metrics (one collection cloned per stage). The base class has none."""

    def _shared_step(self, batch: dict[str, Any], stage: Stage) -> Tensor:
        """Loss of a batch, with logging of loss and metrics under ``stage``.

        Args:
            batch: The batch dict after the device stage.
            stage: ``"train"``, ``"val"`` or ``"test"``.

        Returns:
            The loss.

        Raises:
            NotImplementedError: Always, in the base class.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement _shared_step")

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
    def _datamodule_pipeline(self) -> tuple[DevicePipeline, tuple[int, int] | None] | None:
        """The device pipeline (and image size) of the datamodule this task is trained with."""
        trainer = self._trainer
        dm = getattr(trainer, "datamodule", None) if trainer is not None else None
        pipeline = getattr(dm, "pipeline", None)
        if not isinstance(pipeline, DevicePipeline):
            return None
        size = getattr(getattr(dm, "dataset", None), "size", None)
        return pipeline, None if size is None else (int(size[0]), int(size[1]))

    def on_fit_start(self) -> None:
        """Check, before the first step, that the data's pipeline can be saved with the task."""
        found = self._datamodule_pipeline()
        if found is not None:
            found[0].config()  # raises for a module a checkpoint could not rebuild

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Save the evaluation pipeline beside the weights, under a key of the library's own.

        The record (``checkpoint["leukemia_wbc_pipeline"]``: the pipeline's plain
        :meth:`~leukemia_wbc.transforms.DevicePipeline.config`, its ``state_dict`` with e.g.
        the fitted Macenko target, and the image size) does not depend on the DataModule's
        class name, so a subclass of ``WBCDataModule`` keeps it too.

        Args:
            checkpoint: Lightning's checkpoint dict.
        """
        found = self._datamodule_pipeline()
        if found is not None:
            pipeline, size = found
            checkpoint[PIPELINE_KEY] = {
                "config": pipeline.config(),
                "state": {k: v.detach().cpu() for k, v in pipeline.state_dict().items()},
                "size": None if size is None else list(size),
            }

    # -- loop ----------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """One training step (see :meth:`_shared_step`).

        Args:
            batch: The batch dict after the device stage.
            batch_idx: Index of the batch (unused).

        Returns:
            The loss to minimise.
        """
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """One validation step (see :meth:`_shared_step`).

        Args:
            batch: The batch dict after the device stage.
            batch_idx: Index of the batch (unused).

        Returns:
            The loss.
        """
        return self._shared_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """One test step (see :meth:`_shared_step`).

        Args:
            batch: The batch dict after the device stage.
            batch_idx: Index of the batch (unused).

        Returns:
            The loss.
        """
        return self._shared_step(batch, "test")

    def configure_optimizers(self) -> Any:
        """The optimiser of ``optimizer`` and the schedule of ``scheduler``.

        Returns:
            Lightning's optimizer / scheduler dict.
        """
        optimizer = build_optimizer(self, self.optimizer_kind, self.lr, self.weight_decay)
        steps = self.trainer.estimated_stepping_batches if self.scheduler_kind != "plateau" else 0
        scheduler = build_scheduler(
            optimizer, self.scheduler_kind, lr=self.lr,
            total_steps=int(steps) if math.isfinite(steps) else 0, monitor=self.monitor,
            patience=self.lr_patience, factor=self.lr_factor,
            warmup_fraction=self.warmup_fraction,
        )  # fmt: skip
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
