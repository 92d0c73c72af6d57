"""``ClassificationTask``: loss, metrics, steps and prediction shared by the classifiers."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)
from torchmetrics.wrappers import ClasswiseWrapper

from .base import BaseTask, Stage
from .losses import HybridFocalCELoss
from .optim import OptimizerKind, SchedulerKind

__all__ = ["ClassificationTask", "LossKind"]

#: Loss choices of the classifiers: cross-entropy, focal, or their weighted sum.
LossKind = Literal["ce", "focal", "hybrid"]


def _summary_metrics(num_classes: int) -> dict[str, Metric | MetricCollection]:
    """Fresh overall accuracy and macro precision, recall, F1 and one-vs-rest AUROC."""
    n = num_classes
    return {
        "accuracy": MulticlassAccuracy(n, average="micro"),
        "precision": MulticlassPrecision(n, average="macro"),
        "recall": MulticlassRecall(n, average="macro"),
        "f1": MulticlassF1Score(n, average="macro"),
        "auroc": MulticlassAUROC(n, average="macro"),
    }


class ClassificationTask(BaseTask):
    """Shared loss, metrics, steps and prediction of the classifiers.

    A subclass builds its network in :meth:`configure_models` and maps a batch to logits in
    :meth:`forward_batch`; everything else (loss, metrics, logging, ``predict_step``) is here.

    Metrics (a ``MetricCollection`` per stage): ``accuracy`` (overall), macro
    ``precision``, ``recall``, ``f1`` and ``auroc`` (one-vs-rest); the test stage also logs
    per-class precision, recall and F1 (``test_f1_<class>``) and keeps the confusion matrix in
    :attr:`test_confusion`.

    Args:
        num_classes: Number of classes.
        classes: Class names (for per-class metric names); default ``class_0``, ...
        loss: ``"ce"``, ``"focal"`` or ``"hybrid"`` (``focal_weight * focal + (1 -
            focal_weight) * CE``, the paper's loss).
        focal_gamma: Focusing parameter of the focal loss.
        focal_weight: Weight of the focal term of the hybrid loss.
        class_weights: Per-class loss weights (e.g. ``WBCDataModule.class_weights()``).
        lr: Learning rate (the peak of ``"onecycle"``).
        weight_decay: Weight decay (not on biases and norms).
        lr_patience: ReduceLROnPlateau patience (epochs).
        lr_factor: ReduceLROnPlateau factor.
        optimizer: ``"adam"`` (default) or ``"adamw"``; see
            :class:`~leukemia_wbc.tasks.base.BaseTask`.
        scheduler: ``"plateau"`` (default), ``"onecycle"`` or ``"cosine"``.
        warmup_fraction: Warm-up share of ``scheduler="onecycle"``.

    Raises:
        ValueError: Fewer than two classes, names or weights of the wrong length, or an
            unknown loss.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        classes: Sequence[str] | None = None,
        loss: LossKind = "hybrid",
        focal_gamma: float = 2.0,
        focal_weight: float = 0.5,
        class_weights: Sequence[float] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        lr_patience: int = 5,
        lr_factor: float = 0.1,
        optimizer: OptimizerKind = "adam",
        scheduler: SchedulerKind = "plateau",
        warmup_fraction: float = 0.25,
    ) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        names = (
            tuple(classes)
            if classes is not None
            else tuple(f"class_{i}" for i in range(num_classes))
        )
        if len(names) != num_classes:
            raise ValueError(f"classes has {len(names)} names for num_classes={num_classes}")
        if class_weights is not None and len(class_weights) != num_classes:
            raise ValueError(
                f"class_weights has {len(class_weights)} values for num_classes={num_classes}"
            )
        if loss not in ("ce", "focal", "hybrid"):
            raise ValueError(f"loss must be 'ce', 'focal' or 'hybrid', got {loss!r}")
        self.num_classes = num_classes
        self.classes = names
        self.loss_kind: LossKind = loss
        self.focal_gamma = focal_gamma
        self.focal_weight = focal_weight
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        super().__init__(
            lr=lr, weight_decay=weight_decay, lr_patience=lr_patience, lr_factor=lr_factor,
            optimizer=optimizer, scheduler=scheduler, warmup_fraction=warmup_fraction,
        )  # fmt: skip

    # -- hooks ---------------------------------------------------------------------------------
    def configure_losses(self) -> None:
        """Build :attr:`criterion` from ``loss``, ``focal_gamma``, ``focal_weight``.

        All three choices are one :class:`~leukemia_wbc.tasks.losses.HybridFocalCELoss` (focal
        weight 0 for ``"ce"``, 1 for ``"focal"``), so class weights scale them alike (mean
        over samples).
        """
        weights = None if self.class_weights is None else torch.tensor(self.class_weights)
        focal_weight = {"ce": 0.0, "focal": 1.0, "hybrid": self.focal_weight}[self.loss_kind]
        self.criterion: nn.Module = HybridFocalCELoss(
            focal_weight=focal_weight, gamma=self.focal_gamma, class_weights=weights
        )

    def configure_metrics(self) -> None:
        """Build the per-stage metric collections and the test confusion matrix."""
        n = self.num_classes
        self.train_metrics = MetricCollection(
            {"accuracy": MulticlassAccuracy(n, average="micro"),
             "f1": MulticlassF1Score(n, average="macro")},
            prefix="train_",
        )  # fmt: skip
        self.val_metrics = MetricCollection(_summary_metrics(n), prefix="val_")
        self.test_metrics = MetricCollection(_summary_metrics(n), prefix="test_")
        labels = list(self.classes)
        #: Per-class test metrics, logged as ``test_<metric>_<class>`` at the epoch end.
        self.test_per_class = MetricCollection(
            {
                name: ClasswiseWrapper(metric, labels=labels, prefix=f"test_{name}_")
                for name, metric in (
                    ("precision", MulticlassPrecision(n, average=None)),
                    ("recall", MulticlassRecall(n, average=None)),
                    ("f1", MulticlassF1Score(n, average=None)),
                )
            },
            compute_groups=False,
        )
        self.confusion = MulticlassConfusionMatrix(n)
        #: Confusion matrix (rows true, columns predicted) of the last test epoch.
        self.test_confusion: Tensor | None = None

    def forward_batch(self, batch: dict[str, Any]) -> Tensor:
        """Class logits ``(B, num_classes)`` of a batch after the device stage.

        Args:
            batch: The batch dict.

        Returns:
            The logits.

        Raises:
            NotImplementedError: Always, in the base class.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement forward_batch")

    # -- steps ---------------------------------------------------------------------------------
    def _labels(self, batch: dict[str, Any]) -> Tensor:
        labels = batch.get("label")
        if not isinstance(labels, Tensor):
            raise ValueError("the batch has no 'label' tensor; training and evaluation need one")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(
                f"labels must lie in [0, {self.num_classes}) for num_classes={self.num_classes},"
                f" got values in [{int(labels.min())}, {int(labels.max())}]"
            )
        return labels.long()

    def _shared_step(self, batch: dict[str, Any], stage: Stage) -> Tensor:
        labels = self._labels(batch)
        logits = self.forward_batch(batch)
        loss: Tensor = self.criterion(logits, labels)
        size = len(labels)
        self.log_loss(stage, loss, size)
        metrics = {"train": self.train_metrics, "val": self.val_metrics, "test": self.test_metrics}
        probs = logits.detach().softmax(dim=1)
        metrics[stage].update(probs, labels)
        self.log_dict(metrics[stage], on_step=False, on_epoch=True, batch_size=size,
                      prog_bar=stage == "val")  # fmt: skip
        if stage == "test":
            self.test_per_class.update(probs, labels)
            self.confusion.update(probs, labels)
        return loss

    def on_test_epoch_end(self) -> None:
        """Log the per-class test metrics; keep the confusion matrix in :attr:`test_confusion`."""
        self.log_dict({k: v for k, v in self.test_per_class.compute().items()})
        self.test_per_class.reset()
        self.test_confusion = self.confusion.compute().cpu()
        self.confusion.reset()

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """Class probabilities ``(B, num_classes)`` (softmax of the logits).

        Args:
            batch: The batch dict after the device stage.
            batch_idx: Index of the batch (unused).

        Returns:
            The probabilities.
        """
        return self.forward_batch(batch).softmax(dim=1)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the task's class name, so that loading it as another task says so."""
        super().on_save_checkpoint(checkpoint)
        checkpoint["leukemia_wbc_task"] = type(self).__name__

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls, checkpoint_path: str | os.PathLike[str], *args: Any, **kwargs: Any
    ) -> Any:
        """Lightning's ``load_from_checkpoint``, with a clear error for another task's file.

        Args:
            checkpoint_path: The checkpoint file.
            *args: Passed to Lightning.
            **kwargs: Passed to Lightning (``map_location``, ``strict``, overrides).

        Returns:
            The restored task.

        Raises:
            ValueError: The checkpoint was saved by another task class (another architecture).
        """
        try:
            return super().load_from_checkpoint(os.fspath(checkpoint_path), *args, **kwargs)
        except (TypeError, RuntimeError, KeyError) as err:
            saved = _saved_task(checkpoint_path)
            if saved is not None and saved != cls.__name__:
                raise ValueError(
                    f"{checkpoint_path} holds a {saved}, not a {cls.__name__}: load it with "
                    f"{saved}.load_from_checkpoint"
                ) from err
            raise


def _saved_task(path: str | os.PathLike[str]) -> str | None:
    """The task class name recorded in a checkpoint, or ``None``."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError):
        return None
    name = checkpoint.get("leukemia_wbc_task") if isinstance(checkpoint, dict) else None
    return name if isinstance(name, str) else None
