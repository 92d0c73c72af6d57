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

from ..models.segmenter import SEGMENTER_KEY, SegmenterSpec, resolve_segmenter, segmenter_state
from ._mask_cache import MaskCache
from .base import BaseTask, Stage
from .losses import HybridFocalCELoss
from .optim import OptimizerKind, SchedulerKind

__all__ = ["NUCLEUS_SOURCE_KEY", "ClassificationTask", "LossKind", "MaskSource"]

#: Loss choices of the classifiers: cross-entropy, focal, or their weighted sum.
LossKind = Literal["ce", "focal", "hybrid"]
#: Where a task's nucleus masks come from (see :class:`ClassificationTask`).
MaskSource = Literal["batch", "segmenter"]
#: Batch key marking a ``mask`` that a task's segmenter added before the device pipeline.
NUCLEUS_SOURCE_KEY = "nucleus_source"


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

    #: Constructor arguments not saved as hyperparameters (a segmenter module; its spec is).
    hparams_ignore: tuple[str, ...] = ("segmenter",)
    #: Whether the network reads a nucleus mask (from the batch, or from :attr:`segmenter`).
    needs_nucleus: bool = False

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
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        lr_patience: int = 5,
        lr_factor: float = 0.1,
        optimizer: OptimizerKind = "adam",
        scheduler: SchedulerKind = "plateau",
        warmup_fraction: float = 0.25,
    ) -> None:
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
        super().__init__(
            lr=lr, weight_decay=weight_decay, lr_patience=lr_patience, lr_factor=lr_factor,
            optimizer=optimizer, scheduler=scheduler, warmup_fraction=warmup_fraction,
        )  # fmt: skip
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
            self._check_nucleus_source(dataset, source, where)

    def _check_nucleus_source(self, dataset: Any, source: str, where: str) -> None:
        segmenter = self.segmenter
        if segmenter is None and self.mask_source == "segmenter":
            raise ValueError(
                f"{where}.mask_source: 'segmenter' needs a segmenter and {type(self).__name__} "
                f"has none; set {where}.segmenter to a classical method (e.g. kmeans) or a "
                "trained SegmentationModule checkpoint, or use mask_source 'batch' on data with "
                "nucleus masks"
            )
        if segmenter is None and not getattr(dataset, "has_masks", False):
            raise ValueError(
                f"{where}.segmenter: {source} has no nucleus masks and {type(self).__name__} has "
                "no segmenter; set segmenter to a classical method (e.g. kmeans) or a trained "
                "SegmentationModule checkpoint (unet.ckpt)"
            )
        size = getattr(dataset, "size", None)
        check = getattr(segmenter, "check_input", None)
        if size is not None and callable(check):
            check((int(size[0]), int(size[1])), 3, where=f"{where}.segmenter")

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

    # -- segmenter -------------------------------------------------------------------------------
    @property
    def segmenter(self) -> nn.Module | None:
        """The nucleus segmenter for batches without masks (held outside the submodules)."""
        held: nn.Module | None = self.__dict__.get("_segmenter")
        return held

    @segmenter.setter
    def segmenter(self, module: nn.Module | None) -> None:
        if module is not None:
            module.requires_grad_(False)
        self.__dict__["_segmenter"] = module  # not registered: never trained with us
        self.__dict__["_mask_cache"] = MaskCache()  # a new segmenter: no mask is known

    def __setattr__(self, name: str, value: Any) -> None:
        """Route ``segmenter`` through its property (``nn.Module`` would register it)."""
        if name == "segmenter":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def segment(self, image: Tensor) -> Tensor:
        """Nucleus masks of a normalised batch from :attr:`segmenter`.

        The images are de-normalised with this task's statistics first. Prefer
        :meth:`add_nucleus_masks`, which segments the images before the device pipeline: stain
        normalisation, equalisation and background removal change what a segmenter sees (on
        segmentation_WBC's Dataset 2 the paper's three steps took a U-Net's Dice from 0.90 to
        0.19, and k-means' from 0.97 to 0.01).

        Args:
            image: ``(B, 3, H, W)`` normalised float images.

        Returns:
            ``(B, 1, H, W)`` masks.

        Raises:
            ValueError: There is no segmenter.
        """
        if self.segmenter is None:
            raise ValueError(
                f"the batch has no nucleus 'mask' and {type(self).__name__} has no segmenter: "
                "use a dataset with nucleus masks or set segmenter (e.g. 'kmeans' or a trained "
                "SegmentationModule checkpoint)"
            )
        return self._run_segmenter((image * self.std + self.mean).clamp(0.0, 1.0), image)

    def _run_segmenter(self, unit: Tensor, normalised: Tensor | None = None) -> Tensor:
        """Masks of ``[0, 1]`` images (``normalised``: the same images in the model's input)."""
        segmenter = self.segmenter
        assert segmenter is not None
        x = unit
        if getattr(segmenter, "input_range", "normalized") != "unit":
            x = normalised if normalised is not None else (unit - self.mean) / self.std
        was_training = segmenter.training
        segmenter.to(unit.device).eval()
        try:
            with torch.no_grad():
                predict = getattr(segmenter, "predict_masks", None)
                masks: Tensor = predict(x) if callable(predict) else segmenter(x)
        finally:
            segmenter.train(was_training)
        return masks

    def add_nucleus_masks(
        self, batch: dict[str, Any], *, cache_by_path: bool = False
    ) -> dict[str, Any]:
        """Segment a uint8 batch before the device pipeline, where this task needs it.

        For a task that uses the nucleus (``needs_nucleus``) and has a segmenter, the batch
        gets the segmenter's ``mask`` when it has none, or always with
        ``mask_source="segmenter"``; the mask then follows the augmentation's geometry like a
        dataset's mask, and the batch is marked (``NUCLEUS_SOURCE_KEY``) so that
        :meth:`nucleus_masks` uses it. The segmenter sees the images as decoded, before stain
        normalisation, equalisation and background removal (see :meth:`segment`). Called by
        :meth:`transfer_batch_to_device` in training and by
        :class:`~leukemia_wbc.inference.TrainedModel` at inference.

        Args:
            batch: A batch dict with a uint8 ``image`` ``(B, 3, H, W)``.
            cache_by_path: Keep each sample's mask by its ``path`` and reuse it (training:
                one path is always the same decoded image, so each cell is segmented once,
                not once per epoch). Off at inference, where a path's image may be perturbed.

        Returns:
            The batch, with the segmenter's ``mask`` where needed (a new dict), else unchanged.
        """
        image = batch.get("image")
        if not self.needs_nucleus or self.segmenter is None or not isinstance(image, Tensor):
            return batch
        if image.dtype != torch.uint8 or image.dim() != 4:  # already through the pipeline
            return batch
        if isinstance(batch.get("mask"), Tensor) and self.mask_source == "batch":
            return batch
        out = dict(batch)
        paths = batch.get("path")
        cache = self.__dict__.get("_mask_cache") if cache_by_path else None
        if cache is not None and isinstance(paths, list) and len(paths) == image.shape[0]:
            out["mask"] = cache.masks([str(p) for p in paths], image, self._segment_uint8)
        else:
            out["mask"] = self._segment_uint8(image)
        out[NUCLEUS_SOURCE_KEY] = "segmenter"
        return out

    def _segment_uint8(self, image: Tensor) -> Tensor:
        """uint8 masks ``(B, 1, H, W)`` of uint8 images ``(B, 3, H, W)``."""
        return self._run_segmenter(image.float().div(255.0)).to(torch.uint8)

    def nucleus_masks(self, batch: dict[str, Any]) -> Tensor:
        """The batch's ``mask``, or the segmenter's (no mask, or ``mask_source="segmenter"``).

        A mask that :meth:`add_nucleus_masks` put in the batch is used as it is; otherwise the
        segmenter runs on the normalised images (see :meth:`segment`).

        Args:
            batch: The batch dict after the device stage.

        Returns:
            ``(B, 1, H, W)`` nucleus masks.
        """
        mask = batch.get("mask")
        ours = batch.get(NUCLEUS_SOURCE_KEY) == "segmenter"
        if isinstance(mask, Tensor) and (self.mask_source == "batch" or ours):
            return mask
        return self.segment(batch["image"])

    def transfer_batch_to_device(
        self, batch: Any, device: torch.device, dataloader_idx: int
    ) -> Any:
        """Move the batch (Lightning hook), then add the segmenter's masks where needed.

        Args:
            batch: The collated batch.
            device: The target device.
            dataloader_idx: Index of the loader.

        Returns:
            The batch on ``device`` (see :meth:`add_nucleus_masks`).
        """
        moved = super().transfer_batch_to_device(batch, device, dataloader_idx)
        if not isinstance(moved, dict):
            return moved
        return self.add_nucleus_masks(moved, cache_by_path=True)

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
        """Record the task's class name, its pipeline and its segmenter.

        :class:`~leukemia_wbc.inference.TrainedModel` rebuilds the trained model from them.

        Args:
            checkpoint: Lightning's checkpoint dict.
        """
        super().on_save_checkpoint(checkpoint)
        checkpoint["leukemia_wbc_task"] = type(self).__name__
        checkpoint[SEGMENTER_KEY] = segmenter_state(self.segmenter)

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
