"""``SegmentationModule``: nucleus (or background / cytoplasm / nucleus) segmentation task."""

from __future__ import annotations

import os
from typing import Any, ClassVar, Literal, get_args

import segmentation_models_pytorch as smp
import torch
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.segmentation import DiceScore, MeanIoU

from ..models.segmentation import (
    KeepMode,
    check_postprocess_args,
    create_segmentation_net,
    postprocess_masks,
)
from .base import BaseTask, Stage
from .optim import OptimConfig

__all__ = ["NetArgument", "SegmentationMode", "SegmentationModule"]

#: A value of a further network argument: plain data only, so that neither a config nor a
#: checkpoint can name a class to build there (``class_path`` dicts are not accepted).
NetArgument = bool | int | float | str | None | list[bool | int | float | str | None]

#: ``"binary"``: nucleus vs the rest; ``"three_class"``: background, cytoplasm, nucleus.
SegmentationMode = Literal["binary", "three_class"]

_MODES: tuple[str, ...] = get_args(SegmentationMode)
#: Class index of the nucleus in ``"three_class"`` mode (0 background, 1 cytoplasm).
_NUCLEUS = 2


def _binary(mask: Tensor) -> Tensor:
    """A mask as ``bool`` (floating-point masks, e.g. after augmentation, at 0.5)."""
    return mask > 0.5 if mask.is_floating_point() else mask > 0


class _MeanIoU(MeanIoU):
    """``MeanIoU`` whose state survives being created or reset in inference mode.

    ``MeanIoU`` creates its state at its first update and adds to it in place. When that
    update, or a reset, runs in inference mode (``Trainer.validate`` or ``test``), the state is
    an inference tensor that the no-grad validation of a later ``fit`` cannot update in place
    (the failure of torchmetrics issue #1993); such a state is copied to an ordinary tensor
    first.
    """

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch of index masks ``(B, H, W)``.

        Args:
            preds: Predicted class indices.
            target: True class indices.
        """
        if not torch.is_inference_mode_enabled():
            for name in ("score", "num_batches"):
                state = getattr(self, name, None)
                if isinstance(state, Tensor) and state.is_inference():
                    setattr(self, name, state.clone())
        super().update(preds, target)


class SegmentationModule(BaseTask):
    """A segmentation-models-pytorch network trained on nucleus masks.

    The network comes from :func:`~leukemia_wbc.models.create_segmentation_net` (U-Net over
    ResNet-34 by default; any architecture, any smp encoder or ``"tu-<timm name>"``). To try
    another network, override :meth:`configure_models` and set :attr:`net` to a module mapping
    ``(B, 3, H, W)`` normalised images to ``(B, C, H, W)`` logits (``C`` = 1 in binary mode, 3
    in three-class mode)::

        class MyModule(SegmentationModule):
            def configure_models(self) -> None:
                self.net = MyNet(out_channels=self.num_classes)

    Targets: ``batch["mask"]`` (nucleus) and, in three-class mode, ``batch["cell_mask"]``
    (cytoplasm = cell and not nucleus). Loss: soft Dice plus binary cross-entropy (binary) or
    plus cross-entropy (three classes), ``dice_weight`` weighting the Dice term. Metrics (one
    ``MetricCollection`` cloned per stage): ``dice`` and ``iou`` per image, averaged over the
    images and the foreground classes (the nucleus; cytoplasm and nucleus in three-class mode).
    Logged: ``train_loss``, ``val_loss``, ``val_dice``, ``val_iou`` (and ``train_`` /
    ``test_`` alike). :meth:`predict_step` returns post-processed nucleus masks, through
    :meth:`predict_masks`, which is also how a
    :class:`~leukemia_wbc.tasks.DualBranchClassifier` uses this module as its ``segmenter``.

    Args:
        arch: segmentation-models-pytorch architecture name.
        encoder: Encoder name (smp encoder or ``"tu-<timm name>"``).
        mode: ``"binary"`` or ``"three_class"``.
        encoder_weights: ``None`` (random) or a local weights file of the encoder.
        in_chans: Input channels.
        net_kwargs: Further arguments of the architecture (e.g. ``{"encoder_depth": 3,
            "decoder_channels": [32, 16, 8]}``), see ``create_segmentation_net``.
        dice_weight: Weight of the Dice term (the cross-entropy term has weight 1).
        threshold: Nucleus probability threshold of :meth:`predict_masks` (binary mode).
        centre_radius: Central disk of :func:`~leukemia_wbc.models.postprocess_masks`.
        keep: Components touching the central disk kept by the post-processing: ``"all"``
            (default; keeps every lobe of a segmented nucleus) or ``"largest"``. Measured on
            segmentation_WBC with ``examples/segmentation_quality.py`` (U-Net trained on one
            dataset, tested on the other, four settings): ``"all"`` scored 0.04-0.07 Dice
            higher than ``"largest"`` in every setting.
        optim: Optimiser and schedule (default: Adam, ReduceLROnPlateau on ``val_loss``; see
            :class:`~leukemia_wbc.tasks.optim.OptimConfig`).
        **legacy: Deprecated flat optimiser settings (see
            :class:`~leukemia_wbc.tasks.base.BaseTask`).

    Raises:
        TypeError: An unknown keyword argument.
        ValueError: An unknown mode, architecture or encoder, a negative ``dice_weight``, a
            ``threshold`` outside ``(0, 1)``, or optimiser settings out of range.
    """

    #: The encoder's pretrained-weights file: a checkpoint holds the trained weights instead.
    weight_arguments: ClassVar[tuple[str, ...]] = ("encoder_weights",)

    def __init__(
        self,
        arch: str = "unet",
        encoder: str = "resnet34",
        *,
        mode: SegmentationMode = "binary",
        encoder_weights: str | os.PathLike[str] | None = None,
        in_chans: int = 3,
        net_kwargs: dict[str, NetArgument] | None = None,
        dice_weight: float = 1.0,
        threshold: float = 0.5,
        centre_radius: float = 0.2,
        keep: KeepMode = "all",
        optim: OptimConfig | None = None,
        **legacy: Any,
    ) -> None:
        if mode not in _MODES:
            raise ValueError(f"argument 'mode': expected one of {_MODES}, got {mode!r}")
        if dice_weight < 0:
            raise ValueError(f"argument 'dice_weight': expected a value >= 0, got {dice_weight}")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"argument 'threshold': expected a value in (0, 1), got {threshold}")
        check_postprocess_args(centre_radius, keep)
        self.arch = arch
        self.encoder = encoder
        self.mode: SegmentationMode = mode
        self.encoder_weights = None if encoder_weights is None else os.fspath(encoder_weights)
        self.in_chans = in_chans
        self.net_kwargs = dict(net_kwargs or {})
        self.dice_weight = float(dice_weight)
        self.threshold = float(threshold)
        self.centre_radius = float(centre_radius)
        self.keep: KeepMode = keep
        #: Output channels of the network: 1 (binary) or 3 (background, cytoplasm, nucleus).
        self.num_classes = 1 if mode == "binary" else 3
        super().__init__(optim=optim, **legacy)

    # -- hooks ---------------------------------------------------------------------------------
    def pretrained_parts(self) -> dict[str, str]:
        """``encoder_weights``: the encoder (``"tu-<timm name>"`` or an smp encoder name).

        Returns:
            ``{"encoder_weights": encoder}``.
        """
        return {"encoder_weights": self.encoder}

    def configure_models(self) -> None:
        """Build :attr:`net` with :func:`~leukemia_wbc.models.create_segmentation_net`.

        Override to use another network (see the class docstring).
        """
        self.net: nn.Module = create_segmentation_net(
            self.arch, self.encoder, num_classes=self.num_classes, in_chans=self.in_chans,
            encoder_weights=self.encoder_weights, **self.net_kwargs,
        )  # fmt: skip

    def configure_losses(self) -> None:
        """Build :attr:`dice_loss` and :attr:`ce_loss` (BCE in binary mode, CE otherwise)."""
        smp_mode = smp.losses.BINARY_MODE if self.mode == "binary" else smp.losses.MULTICLASS_MODE
        self.dice_loss: nn.Module = smp.losses.DiceLoss(smp_mode, from_logits=True)
        self.ce_loss: nn.Module = (
            nn.BCEWithLogitsLoss() if self.mode == "binary" else nn.CrossEntropyLoss()
        )

    def configure_metrics(self) -> None:
        """Build ``dice`` and ``iou``: one collection cloned as ``train_``, ``val_``, ``test_``."""
        classes = 2 if self.mode == "binary" else 3
        metrics = MetricCollection(
            {
                "dice": DiceScore(classes, include_background=False, input_format="index"),
                "iou": _MeanIoU(classes, include_background=False, input_format="index"),
            }
        )
        self.train_metrics = metrics.clone(prefix="train_")
        self.val_metrics = metrics.clone(prefix="val_")
        self.test_metrics = metrics.clone(prefix="test_")

    # -- forward -------------------------------------------------------------------------------
    def forward(self, image: Tensor) -> Tensor:
        """Logits ``(B, C, H, W)`` of a normalised image batch.

        Args:
            image: ``(B, in_chans, H, W)`` float images (after the device stage).

        Returns:
            The logits.

        Raises:
            ValueError: Not a float ``(B, in_chans, H, W)`` batch, or ``H`` / ``W`` not
                divisible by the encoder's output stride.
        """
        if not isinstance(image, Tensor) or not image.is_floating_point() or image.ndim != 4:
            what = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise ValueError(f"SegmentationModule: expected float images (B, C, H, W), got {what}")
        if image.shape[1] != self.in_chans:
            raise ValueError(
                f"SegmentationModule: expected {self.in_chans} channels (in_chans), got "
                f"images of shape {tuple(image.shape)}"
            )
        stride = getattr(getattr(self.net, "encoder", None), "output_stride", 1)
        if getattr(self.net, "requires_divisible_input_shape", False) and any(
            s % stride for s in image.shape[-2:]
        ):
            h, w = image.shape[-2:]
            raise ValueError(
                f"SegmentationModule ({self.arch}, {self.encoder}): image size {h}x{w} is not "
                f"divisible by the encoder's output stride {stride}; resize or pad to "
                f"{-(-h // stride) * stride}x{-(-w // stride) * stride}"
            )
        logits: Tensor = self.net(image)
        return logits

    def targets(self, batch: dict[str, Any]) -> Tensor:
        """The target of a batch: ``(B, 1, H, W)`` float (binary) or ``(B, H, W)`` long.

        Args:
            batch: Batch dict with ``image`` and ``mask`` (and ``cell_mask`` in three-class
                mode), masks ``(B, 1, H, W)``.

        Returns:
            The nucleus mask as float, or class indices 0 background, 1 cytoplasm, 2 nucleus.

        Raises:
            ValueError: A missing mask, or a mask whose shape is not the image's ``(B, 1, H,
                W)``.
        """
        image = batch["image"]
        keys = ("mask",) if self.mode == "binary" else ("mask", "cell_mask")
        masks = []
        for key in keys:
            mask = batch.get(key)
            if not isinstance(mask, Tensor):
                raise ValueError(
                    f"SegmentationModule ({self.mode}): the batch has no {key!r} tensor; "
                    f"expected {' and '.join(repr(k) for k in keys)} of shape (B, 1, H, W)"
                )
            expected = (image.shape[0], 1, *image.shape[-2:])
            if tuple(mask.shape) != expected:
                raise ValueError(
                    f"SegmentationModule: batch[{key!r}] has shape {tuple(mask.shape)} but "
                    f"batch['image'] has shape {tuple(image.shape)}; expected a mask of "
                    f"shape {expected}"
                )
            masks.append(_binary(mask))
        if self.mode == "binary":
            return masks[0].float()
        nucleus, cell = masks[0][:, 0], masks[1][:, 0]
        return torch.where(nucleus, _NUCLEUS, cell.long())

    def _predicted_classes(self, logits: Tensor) -> Tensor:
        """Class indices ``(B, H, W)``: 0/1 (binary) or 0/1/2."""
        if self.mode == "binary":
            return (logits[:, 0] > 0).long()
        return logits.argmax(dim=1)

    def shared_step(self, batch: dict[str, Any], stage: Stage) -> Tensor:
        """Cross-entropy and Dice loss of a batch, and ``dice`` / ``iou``, logged under ``stage``.

        Args:
            batch: The batch dict after the device stage, with its masks (see :meth:`targets`).
            stage: ``"train"``, ``"val"`` or ``"test"``.

        Returns:
            The loss.
        """
        target = self.targets(batch)
        logits = self(batch["image"])
        loss: Tensor = self.ce_loss(logits, target) + self.dice_weight * self.dice_loss(
            logits, target
        )
        size = logits.shape[0]
        self.log_loss(stage, loss, size)
        metrics = {"train": self.train_metrics, "val": self.val_metrics, "test": self.test_metrics}
        index = target[:, 0].long() if self.mode == "binary" else target
        metrics[stage].update(self._predicted_classes(logits.detach()), index)
        self.log_dict(metrics[stage], on_step=False, on_epoch=True, batch_size=size,
                      prog_bar=stage == "val")  # fmt: skip
        return loss

    # -- prediction ----------------------------------------------------------------------------
    @torch.no_grad()
    def predict_masks(self, image: Tensor) -> Tensor:
        """Post-processed nucleus masks of a normalised image batch.

        The nucleus is ``sigmoid > threshold`` (binary) or the pixels whose most likely class
        is the nucleus (three classes); then :func:`~leukemia_wbc.models.postprocess_masks`
        with ``centre_radius`` and ``keep``. The network runs in evaluation mode (batch-norm
        running statistics) even when the module is training, e.g. as the segmenter inside a
        classifier being trained; its mode is restored afterwards.

        Args:
            image: ``(B, in_chans, H, W)`` float images (after the device stage).

        Returns:
            ``uint8`` ``(B, 1, H, W)`` masks, 1 on the nucleus.
        """
        training = self.net.training
        self.net.eval()
        try:
            logits = self(image)
        finally:
            self.net.train(training)
        if self.mode == "binary":
            probs = logits.sigmoid()
        else:
            probs = (logits.argmax(dim=1, keepdim=True) == _NUCLEUS).float()
        return postprocess_masks(
            probs, threshold=self.threshold, centre_radius=self.centre_radius, keep=self.keep
        )

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """Post-processed nucleus masks of ``batch["image"]`` (see :meth:`predict_masks`).

        Args:
            batch: The batch dict after the device stage.
            batch_idx: Index of the batch (unused).

        Returns:
            ``uint8`` ``(B, 1, H, W)`` masks.
        """
        return self.predict_masks(batch["image"])
