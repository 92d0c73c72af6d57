"""``DetectionModule``: the lightweight Mask R-CNN of whole smears as a LightningModule."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor
from torchmetrics.detection import MeanAveragePrecision

from ..tasks.base import BaseTask, Stage
from ..tasks.optim import OptimConfig
from .detections import to_unit_image
from .mask_rcnn import MaskRCNNCellDetector, create_mask_rcnn

__all__ = ["DETECTION_OPTIM", "DetectionModule"]

#: The default optimisation of :class:`DetectionModule`: AdamW with a one-cycle schedule.
DETECTION_OPTIM = OptimConfig(
    lr=1e-3, weight_decay=1e-4, optimizer="adamw", scheduler="onecycle", warmup_fraction=0.1
)


def _flip(image: Tensor, target: dict[str, Tensor], generator: torch.Generator) -> tuple[
    Tensor, dict[str, Tensor]]:  # fmt: skip
    """Random horizontal and vertical flips of an image with its boxes and masks."""
    h, w = image.shape[-2:]
    boxes, masks = target["boxes"].clone(), target["masks"]
    flips = torch.rand(2, generator=generator) < 0.5
    if bool(flips[0]):
        image, masks = image.flip(-1), masks.flip(-1)
        boxes[:, [0, 2]] = w - boxes[:, [2, 0]]
    if bool(flips[1]):
        image, masks = image.flip(-2), masks.flip(-2)
        boxes[:, [1, 3]] = h - boxes[:, [3, 1]]
    return image, {**target, "boxes": boxes, "masks": masks}


class DetectionModule(BaseTask):
    """Train and evaluate the lightweight white-cell Mask R-CNN.

    The network is :func:`~leukemia_wbc.smear.create_mask_rcnn`'s.

    Batches are those of :func:`~leukemia_wbc.smear.detection_collate`: ``image`` a list of
    ``(3, H, W)`` images and ``targets`` a list of dicts with ``boxes``, ``masks`` (nucleus
    instance masks) and ``labels``. With ``class_agnostic`` (the default) every cell is one
    class, "white cell", and the classifier of :class:`~leukemia_wbc.smear.SmearAnalyzer`
    names it; otherwise label ``k`` of the dataset becomes detector class ``k + 1``.

    Training applies random horizontal and vertical flips. Validation and test compute the mask
    mean average precision (torchmetrics ``MeanAveragePrecision``, ``iou_type="segm"``, COCO
    IoU thresholds 0.5:0.95), logged as ``val_map`` / ``val_map_50`` (``test_`` likewise); the
    training losses of torchvision's heads are logged as ``train_loss`` and
    ``train_loss_<part>``. A detector in evaluation mode gives no loss, so ``monitor`` is
    ``val_map`` and the schedule is per step (``"onecycle"`` by default, or ``"cosine"``).
    :class:`~leukemia_wbc.smear.SmearDataModule` gives it its data from the command line:
    ``leukemia-wbc fit --model DetectionModule --data SmearDataModule``.

    Args:
        num_classes: Detector classes without the background when not ``class_agnostic``.
        class_agnostic: Train one "white cell" class.
        weights: Local file with a whole detector to start from (see
            :func:`~leukemia_wbc.smear.create_mask_rcnn`).
        backbone_weights: Local torchvision ``mobilenet_v3_large`` weights file.
        box_head_size: Width of the box head.
        mask_head_layers: Channels of the mask head's convolutions.
        anchor_sizes: Anchor sizes in pixels.
        score_threshold: Score threshold of :meth:`detector`.
        optim: Optimiser and schedule (default :data:`DETECTION_OPTIM`: AdamW, peak rate 1e-3,
            weight decay 1e-4, ``"onecycle"`` with a warm-up of 0.1; the scheduler must be
            ``"onecycle"`` or ``"cosine"``).
        seed: Seed of the flips.
        **legacy: Deprecated flat optimiser settings (see
            :class:`~leukemia_wbc.tasks.base.BaseTask`).

    Raises:
        TypeError: An unknown keyword argument.
        ValueError: ``scheduler="plateau"``, or a bad argument of the network or optimiser.
    """

    monitor = "val_map"
    #: Weight files the detector started from: a checkpoint holds the trained weights instead.
    weight_arguments: ClassVar[tuple[str, ...]] = ("weights", "backbone_weights")
    default_optim = DETECTION_OPTIM

    def __init__(
        self,
        *,
        num_classes: int = 1,
        class_agnostic: bool = True,
        weights: str | os.PathLike[str] | None = None,
        backbone_weights: str | os.PathLike[str] | None = None,
        box_head_size: int = 256,
        mask_head_layers: Sequence[int] = (128, 128),
        anchor_sizes: Sequence[int] = (16, 32, 64, 128, 256),
        score_threshold: float = 0.5,
        optim: OptimConfig | None = DETECTION_OPTIM,
        seed: int = 0,
        **legacy: Any,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = 1 if class_agnostic else int(num_classes)
        self.class_agnostic = class_agnostic
        self.weights = None if weights is None else str(weights)
        self.backbone_weights = None if backbone_weights is None else str(backbone_weights)
        self.box_head_size = int(box_head_size)
        self.mask_head_layers = tuple(int(c) for c in mask_head_layers)
        self.anchor_sizes = tuple(int(s) for s in anchor_sizes)
        self.score_threshold = float(score_threshold)
        self.generator = torch.Generator().manual_seed(seed)
        super().__init__(optim=optim, **legacy)

    def check_optim(self, optim: OptimConfig) -> None:
        """Refuse ``scheduler="plateau"``: it watches ``val_loss``, which a detector lacks.

        Args:
            optim: The settings.

        Raises:
            ValueError: ``optim.scheduler`` is ``"plateau"``.
        """
        if optim.scheduler == "plateau":
            raise ValueError(
                "optim.scheduler='plateau' watches val_loss, which a detector in evaluation mode "
                "does not give; use 'onecycle' or 'cosine' (e.g. "
                "DETECTION_OPTIM.replace(lr=...) keeps the detector's defaults)"
            )

    def configure_models(self) -> None:
        """Build the Mask R-CNN as ``self.model``."""
        self.model = create_mask_rcnn(
            self.num_classes + 1,
            weights=self.weights,
            backbone_weights=self.backbone_weights,
            anchor_sizes=self.anchor_sizes,
            box_head_size=self.box_head_size,
            mask_head_layers=self.mask_head_layers,
        )

    def configure_losses(self) -> None:
        """No loss module: torchvision's heads compute their own losses."""

    def configure_metrics(self) -> None:
        """Mask mAP for validation and test."""
        self.val_map = MeanAveragePrecision(iou_type="segm")
        self.test_map = MeanAveragePrecision(iou_type="segm")

    def detector(self, **kwargs: Any) -> MaskRCNNCellDetector:
        """The trained network as a tiled detector of whole images.

        Args:
            **kwargs: Arguments of :class:`~leukemia_wbc.smear.MaskRCNNCellDetector`
                (``score_threshold`` defaults to this module's).

        Returns:
            The detector (sharing this module's network, in evaluation mode).
        """
        kwargs.setdefault("score_threshold", self.score_threshold)
        return MaskRCNNCellDetector(self.model, **kwargs)

    def _targets(self, targets: Sequence[dict[str, Any]]) -> list[dict[str, Tensor]]:
        out = []
        for t in targets:
            labels = t["labels"].long()
            labels = torch.ones_like(labels) if self.class_agnostic else labels + 1
            out.append({"boxes": t["boxes"].float(), "masks": t["masks"].to(torch.uint8),
                        "labels": labels})  # fmt: skip
        return out

    def shared_step(self, batch: dict[str, Any], stage: Stage) -> Tensor | None:
        """Training loss of a batch, or the batch's detections added to the stage's mAP.

        Training applies the random flips and returns the sum of torchvision's head losses
        (logged as ``train_loss`` and ``train_<part>``). Validation and test detect the batch
        in evaluation mode, which gives no loss, and add it to ``val_map`` / ``test_map``.

        Args:
            batch: ``{"image": [...], "targets": [...]}`` (see
                :func:`~leukemia_wbc.smear.detection_collate`).
            stage: ``"train"``, ``"val"`` or ``"test"``.

        Returns:
            The training loss; ``None`` for validation and test.
        """
        if stage != "train":
            self._evaluate(batch, self.val_map if stage == "val" else self.test_map)
            return None
        images = [to_unit_image(im) for im in batch["image"]]
        targets = self._targets(batch["targets"])
        pairs = [_flip(im, t, self.generator) for im, t in zip(images, targets, strict=True)]
        losses: dict[str, Tensor] = self.model([p[0] for p in pairs], [p[1] for p in pairs])
        loss = torch.stack(list(losses.values())).sum()
        self.log_loss(stage, loss, len(images))
        for name, value in losses.items():
            self.log(f"{stage}_{name}", value, on_step=False, on_epoch=True,
                     batch_size=len(images))  # fmt: skip
        return loss

    def _evaluate(self, batch: dict[str, Any], metric: MeanAveragePrecision) -> None:
        images = [to_unit_image(im) for im in batch["image"]]
        outputs: list[dict[str, Tensor]] = self.model(images)
        preds = [
            {"masks": o["masks"][:, 0] > 0.5, "scores": o["scores"], "labels": o["labels"]}
            for o in outputs
        ]
        truth = [
            {"masks": t["masks"] > 0, "labels": t["labels"]}
            for t in self._targets(batch["targets"])
        ]
        metric.update(preds, truth)

    def _log_map(self, stage: Stage, metric: MeanAveragePrecision) -> None:
        """Log the epoch's mAP; torchmetrics' -1 ("undefined": no detection at all) is 0."""
        result = metric.compute()
        self.log(f"{stage}_map", result["map"].float().clamp_min(0), prog_bar=True,
                 sync_dist=True)  # fmt: skip
        self.log(f"{stage}_map_50", result["map_50"].float().clamp_min(0), sync_dist=True)
        metric.reset()

    def on_validation_epoch_end(self) -> None:
        """Log ``val_map`` and ``val_map_50``."""
        self._log_map("val", self.val_map)

    def on_test_epoch_end(self) -> None:
        """Log ``test_map`` and ``test_map_50``."""
        self._log_map("test", self.test_map)
