"""``ClassificationTask``: classes, loss, metrics, steps and prediction of the classifiers."""

from __future__ import annotations

import os
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn
from torchmetrics.classification import MulticlassConfusionMatrix

from ..models.segmenter import (
    SEGMENTER_KEY,
    SegmenterSpec,
    resolve_segmenter,
    segmenter_from_state,
    segmenter_state,
)
from .base import BaseTask, Stage
from .branches import BranchInput, TaskBranch, module_label
from .classification_metrics import per_class_metrics, stage_metrics
from .consistency import StainConsistency
from .losses import HybridFocalCELoss
from .nucleus_masks import NUCLEUS_SOURCE_KEY, MaskSource, NucleusMaskMixin
from .optim import OptimConfig

__all__ = [
    "NUCLEUS_SOURCE_KEY",
    "BranchInput",
    "ClassificationTask",
    "LossKind",
    "MaskSource",
    "TaskBranch",
]

#: Loss choices of the classifiers: cross-entropy, focal, or their weighted sum.
LossKind = Literal["ce", "focal", "hybrid"]


class ClassificationTask(BaseTask, NucleusMaskMixin):
    """Shared classes, loss, metrics, steps and prediction of the classifiers.

    A subclass builds its network in :meth:`configure_models` and maps a batch to logits in
    :meth:`forward_batch` (both abstract); everything else (loss, metrics, logging,
    ``predict_step``) is here. Nucleus masks and crops, from the batch or from ``segmenter``,
    come from :class:`~leukemia_wbc.tasks.nucleus_masks.NucleusMaskMixin`. :meth:`branches`
    names the parts of the network that attributions explain.

    Metrics (a ``MetricCollection`` per stage): ``accuracy`` (overall), macro
    ``precision``, ``recall``, ``f1`` and ``auroc`` (one-vs-rest); the test stage also logs
    per-class precision, recall and F1 (``test_f1_<class>``) and keeps the confusion matrix in
    :attr:`test_confusion`.

    Without ``num_classes`` and ``classes`` the task takes them from its data
    (:meth:`bind_data`, run by :meth:`setup` before training and by the cross-validator); given,
    they must match the data's count, names and order, or training does not start.

    Args:
        num_classes: Number of classes (default: the data's).
        classes: Class names, in the data's order (default: the data's).
        loss: ``"ce"``, ``"focal"`` or ``"hybrid"`` (``focal_weight * focal + (1 -
            focal_weight) * CE``, the paper's loss).
        focal_gamma: Focusing parameter of the focal loss.
        focal_weight: Weight of the focal term of the hybrid loss.
        class_weights: Per-class loss weights (e.g. ``WBCDataModule.class_weights()``).
        segmenter: For tasks that read nucleus masks, where masks come from when the batch
            has none: a classical method name (``"kmeans"``, ``"watershed"``...), the path of
            a trained ``SegmentationModule`` checkpoint, or a module (see
            :func:`~leukemia_wbc.models.resolve_segmenter`). It is never trained, and is saved
            in the checkpoint (its description, and a network's weights).
        mask_source: ``"batch"``: the batch's ``mask`` when it has one, else the segmenter's;
            ``"segmenter"``: always the segmenter's, in training and evaluation alike (the
            paper's chain: the classifier learns from the masks it will get on new cells).
        mean: Channel means of the data's normalisation (taken from the datamodule when
            bound), to give segmenters images in ``[0, 1]``.
        std: Channel standard deviations of the data's normalisation.
        optim: Optimiser and schedule (default: Adam, ReduceLROnPlateau; see
            :class:`~leukemia_wbc.tasks.optim.OptimConfig`).
        consistency: Weight of a stain-consistency loss in training (0: none; see
            :class:`~leukemia_wbc.tasks.consistency.StainConsistency`).
        **legacy: Deprecated flat optimiser settings (see
            :class:`~leukemia_wbc.tasks.base.BaseTask`).

    Raises:
        TypeError: An unknown keyword argument.
        ValueError: Fewer than two classes, names or weights of the wrong length, an unknown
            loss or mask source, or optimiser settings out of range.
    """

    #: Constructor arguments not saved as hyperparameters (a segmenter module; its spec is).
    hparams_ignore: tuple[str, ...] = ("segmenter",)
    #: Weight files of the backbones: a checkpoint holds the trained weights instead.
    weight_arguments: ClassVar[tuple[str, ...]] = ("weights", "cell_weights", "nucleus_weights")
    #: The network, built by :meth:`configure_models`.
    net: nn.Module

    def __init__(
        self,
        *,
        num_classes: int | None = None,
        classes: Sequence[str] | None = None,
        loss: LossKind = "hybrid",
        focal_gamma: float = 2.0,
        focal_weight: float = 0.5,
        class_weights: Sequence[float] | None = None,
        segmenter: SegmenterSpec = None,
        mask_source: MaskSource = "batch",
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        optim: OptimConfig | None = None,
        consistency: float = 0.0,
        **legacy: Any,
    ) -> None:
        self.consistency = StainConsistency(consistency) if consistency else None
        names = None if classes is None else tuple(str(c) for c in classes)
        if num_classes is None and names is not None:
            num_classes = len(names)
        if num_classes is not None and num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        if names is not None and len(names) != num_classes:
            raise ValueError(f"classes has {len(names)} names for num_classes={num_classes}")
        if (
            class_weights is not None
            and num_classes is not None
            and len(class_weights) != num_classes
        ):
            raise ValueError(
                f"class_weights has {len(class_weights)} values for num_classes={num_classes}"
            )
        if loss not in ("ce", "focal", "hybrid"):
            raise ValueError(f"loss must be 'ce', 'focal' or 'hybrid', got {loss!r}")
        if mask_source not in ("batch", "segmenter"):
            raise ValueError(
                f"argument 'mask_source': expected 'batch' or 'segmenter', got {mask_source!r}"
            )
        self.mask_source: MaskSource = mask_source
        self.num_classes: int = 0 if num_classes is None else int(num_classes)
        #: Whether the class names were given (else they are ``class_0``, ... or the data's).
        self.named = names is not None
        self.classes: tuple[str, ...] = (
            names if names is not None else tuple(f"class_{i}" for i in range(self.num_classes))
        )
        self.loss_kind: LossKind = loss
        self.focal_gamma = focal_gamma
        self.focal_weight = focal_weight
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        super().__init__(optim=optim, **legacy)
        self.segmenter = resolve_segmenter(segmenter, where="segmenter")
        self.hparams["segmenter"] = (
            os.fspath(segmenter) if isinstance(segmenter, (str, os.PathLike)) else None
        )
        self.register_buffer("mean", torch.tensor(list(mean)).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(std)).view(1, -1, 1, 1), persistent=False)
        self.mean: Tensor
        self.std: Tensor

    @property
    def ready(self) -> bool:
        """Whether the classes are known (else the network waits for :meth:`bind_data`)."""
        return self.num_classes >= 2

    # -- data ----------------------------------------------------------------------------------
    def bind_data(self, datamodule: Any, *, where: str = "model") -> None:
        """Take the classes from the data, or check them; check the nucleus masks' source.

        A task built without ``num_classes`` / ``classes`` takes the data's class names (and
        builds its network now); one built with them must match the data's count, names and
        order. A task that reads nucleus masks needs masks in the data or a segmenter, and a
        segmentation network must have been trained at the data's image size. The channel
        statistics of the data's pipeline are adopted for de-normalising images for the
        segmenter. Called by :meth:`setup` (before training) and by the cross-validator (before
        the first fold).

        Args:
            datamodule: A ``WBCDataModule`` (anything with ``classes``, ``dataset`` and
                optionally ``pipeline``).
            where: How the task's arguments are named to the user: messages name
                ``<where>.num_classes``, ``<where>.segmenter``... (``"model.init_args"`` on the
                command line).

        Raises:
            ValueError: Another class count, other names or another order than the data's; no
                nucleus masks and no segmenter; a segmentation network of another size.
        """
        data = tuple(str(c) for c in datamodule.classes)
        dataset = getattr(datamodule, "dataset", None)
        source = type(dataset).__name__ if dataset is not None else "the data"
        leave_out = "or leave num_classes and classes out (they are then taken from the data)"
        if not self.ready:
            self.num_classes, self.classes, self.named = len(data), data, True
            self.hparams["num_classes"], self.hparams["classes"] = len(data), list(data)
            if self.class_weights is not None and len(self.class_weights) != len(data):
                raise ValueError(
                    f"{where}.class_weights: {len(self.class_weights)} values for the "
                    f"{len(data)} classes of {source} {list(data)}; expected {len(data)}"
                )
            self.configure()
        elif self.num_classes != len(data) and self.named:
            raise ValueError(
                f"{where}.classes: {list(self.classes)} has {self.num_classes} names but "
                f"{source} has {len(data)} classes {list(data)}; expected the data's names in "
                f"its order, {leave_out}"
            )
        elif self.num_classes != len(data):
            raise ValueError(
                f"{where}.num_classes={self.num_classes} but {source} has {len(data)} classes "
                f"{list(data)}; expected {len(data)}, {leave_out}"
            )
        elif not self.named:
            self.classes, self.named = data, True
            self.hparams["classes"] = list(data)
        elif self.classes != data:
            kind = (
                "the same classes in another order"
                if set(self.classes) == set(data)
                else "other classes"
            )
            raise ValueError(
                f"{where}.classes: {list(self.classes)} are {kind} than {source}'s {list(data)}; "
                "every prediction would be named wrongly: expected the data's names in its "
                f"order, {leave_out}"
            )
        pipeline = getattr(datamodule, "pipeline", None)
        if pipeline is not None and hasattr(pipeline, "mean"):
            self.mean = pipeline.mean.detach().clone().view(1, -1, 1, 1).to(self.mean.device)
            self.std = pipeline.std.detach().clone().view(1, -1, 1, 1).to(self.std.device)
        if self.needs_nucleus and dataset is not None:
            self.check_nucleus_source(dataset, source, where)

    def setup(self, stage: str) -> None:
        """Bind the trainer's datamodule (see :meth:`bind_data`) before anything runs.

        Args:
            stage: Lightning stage.
        """
        trainer = self._trainer
        dm = getattr(trainer, "datamodule", None) if trainer is not None else None
        if dm is not None and hasattr(dm, "classes"):
            self.bind_data(dm)
        elif not self.ready:
            raise ValueError(
                f"{type(self).__name__} has no num_classes/classes and no datamodule to take "
                "them from"
            )

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
        self.train_metrics, self.val_metrics, self.test_metrics = stage_metrics(n)
        #: Per-class test metrics, logged as ``test_<metric>_<class>`` at the epoch end.
        self.test_per_class = per_class_metrics(n, self.classes)
        self.confusion = MulticlassConfusionMatrix(n)
        #: Confusion matrix (rows true, columns predicted) of the last test epoch.
        self.test_confusion: Tensor | None = None

    @abstractmethod
    def forward_batch(self, batch: dict[str, Any]) -> Tensor:
        """Class logits ``(B, num_classes)`` of a batch after the device stage.

        Args:
            batch: The batch dict.

        Returns:
            The logits.
        """

    def forward(self, *inputs: Tensor) -> Tensor:
        """Class logits of the branch inputs, in the order of :meth:`branches`: ``net(*inputs)``.

        Args:
            *inputs: One normalised batch per branch (the image; nucleus crops).

        Returns:
            The logits.
        """
        logits: Tensor = self.net(*inputs)
        return logits

    def extra_inputs(self, batch: dict[str, Any]) -> tuple[Tensor, ...]:
        """Inputs of :meth:`forward` after the branches' that are not explained (default none)."""
        return ()

    def branches(self) -> dict[str, TaskBranch]:
        """The parts of the network that attributions explain, by name, with their inputs.

        One entry per input of :meth:`forward`, in its order: an explainer varies one input
        while holding the others, and explains the entry's module. The default is the whole
        ``net`` on the image (``{"cell": ...}``); tasks with a known backbone, or two, name it.

        Returns:
            Branch name (``"cell"``, ``"nucleus"``) to :class:`TaskBranch`.

        Raises:
            ValueError: The task has no ``net`` module (override this method).
        """
        net = getattr(self, "net", None)
        if not isinstance(net, nn.Module):
            raise ValueError(
                f"{type(self).__name__} has no 'net' module; override branches() to name the "
                "modules to explain and the input each reads"
            )
        return {"cell": TaskBranch(net, "image", module_label(net))}

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

    def shared_step(self, batch: dict[str, Any], stage: Stage) -> Tensor:
        """Cross-entropy / focal loss and metrics of a labelled batch, logged under ``stage``.

        Args:
            batch: The batch dict after the device stage, with ``label``.
            stage: ``"train"``, ``"val"`` or ``"test"``.

        Returns:
            The loss.

        Raises:
            ValueError: No ``label`` tensor, or labels outside ``[0, num_classes)``.
        """
        labels = self._labels(batch)
        logits = self.forward_batch(batch)
        loss: Tensor = self.criterion(logits, labels)
        size = len(labels)
        if stage == "train" and self.consistency is not None:
            loss = loss + self.consistency(self, batch, logits)
        self.log_loss(stage, loss, size)
        metrics = {"train": self.train_metrics, "val": self.val_metrics, "test": self.test_metrics}
        probs = logits.detach().float().softmax(dim=1)  # float32 also under bf16 autocast
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
        """Class probabilities ``(B, num_classes)`` (softmax of the logits, in float32).

        Args:
            batch: The batch dict after the device stage.
            batch_idx: Index of the batch (unused).

        Returns:
            The probabilities (float32, also under mixed precision: rows sum to 1).
        """
        return self.forward_batch(batch).float().softmax(dim=1)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the task's class name, its pipeline and its segmenter.

        :class:`~leukemia_wbc.inference.TrainedModel` rebuilds the trained model from them.

        Args:
            checkpoint: Lightning's checkpoint dict.
        """
        super().on_save_checkpoint(checkpoint)
        checkpoint[SEGMENTER_KEY] = segmenter_state(self.segmenter)

    @classmethod
    def arguments_from_checkpoint(cls, hparams: dict[str, Any]) -> dict[str, Any]:
        """The saved arguments without weight files and without the segmenter's spec.

        The segmenter is rebuilt from its own record (:meth:`restore_from_checkpoint`), not
        from the path or name it was first given.

        Args:
            hparams: The saved hyperparameters, plain data only.

        Returns:
            The arguments to build the task with.
        """
        out = super().arguments_from_checkpoint(hparams)
        out.pop("segmenter", None)
        return out

    def restore_from_checkpoint(self, checkpoint: dict[str, Any], *, where: str) -> None:
        """Rebuild the segmenter the classifier was trained with (a closed set of kinds).

        Args:
            checkpoint: The checkpoint dict.
            where: The file (for messages).
        """
        self.segmenter = segmenter_from_state(checkpoint.get(SEGMENTER_KEY), where=where)
