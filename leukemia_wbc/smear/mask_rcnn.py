"""Lightweight Mask R-CNN for whole smears: one instance per white cell.

An instance is one white cell: its box frames the whole cell (nucleus and cytoplasm) and its
mask is the cell's nucleus, every lobe included. That is the pair a two-branch classifier
needs: the crop from the box and the nucleus mask from the mask (see
:class:`leukemia_wbc.smear.SyntheticSmear`, which draws its targets this way).

The network is torchvision's :class:`~torchvision.models.detection.MaskRCNN` on a
MobileNetV3-Large FPN backbone, made lighter than torchvision's defaults: a box head of
``box_head_size`` (256) features instead of 1024, and a mask head of ``mask_head_layers`` (two
convolutions of 128 channels) instead of four of 256. Images keep their scale: the internal
resizing of torchvision's detection transform is switched off, so that the cell size the network
learned is the cell size it sees; tiles (:func:`detect_tiled`) cover large fields.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models import mobilenet_v3_large
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import mobilenet_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import FrozenBatchNorm2d

from ..models.backbones import read_state_dict
from .detections import Detections, detect_tiled, mask_nms, to_unit_image

__all__ = ["MaskRCNNCellDetector", "create_mask_rcnn", "load_detector_weights"]


class _KeepScale(GeneralizedRCNNTransform):  # type: ignore[misc]
    """torchvision's detection transform without its resizing (normalisation and batching only)."""

    def resize(
        self, image: Tensor, target: dict[str, Tensor] | None = None
    ) -> tuple[Tensor, dict[str, Tensor] | None]:
        return image, target


def create_mask_rcnn(
    num_classes: int = 2,
    *,
    weights: str | os.PathLike[str] | None = None,
    backbone_weights: str | os.PathLike[str] | None = None,
    anchor_sizes: Sequence[int] = (16, 32, 64, 128, 256),
    box_head_size: int = 256,
    mask_head_layers: Sequence[int] = (128, 128),
    trainable_layers: int = 6,
    detections_per_image: int = 100,
) -> MaskRCNN:
    """Build the lightweight Mask R-CNN (MobileNetV3-Large FPN backbone).

    Args:
        num_classes: Classes including the background (2: background and white cell).
        weights: A local file with the whole detector's state dict (``torch.save`` of the
            model, or a Lightning checkpoint of
            :class:`~leukemia_wbc.smear.DetectionModule`); ``None`` for random initialisation.
        backbone_weights: A local file with torchvision ``mobilenet_v3_large`` weights (its
            ``features.*`` are used, the classifier dropped). Batch norm is then frozen, as in
            torchvision's pretrained detectors; without it batch norm trains.
        anchor_sizes: Anchor sizes in pixels, shared by the feature levels.
        box_head_size: Width of the two-layer box head.
        mask_head_layers: Channels of each convolution of the mask head.
        trainable_layers: Backbone stages that train (0-6).
        detections_per_image: Most detections kept per image.

    Returns:
        The network; in ``train()`` mode it returns its losses, in ``eval()`` mode detections.

    Raises:
        ValueError: A bad argument, or a weights file that does not fit the network.
        FileNotFoundError: A weights file does not exist.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}")
    if not 0 <= trainable_layers <= 6:
        raise ValueError(f"trainable_layers must lie in [0, 6], got {trainable_layers}")
    if not mask_head_layers or box_head_size < 1 or not anchor_sizes:
        raise ValueError("mask_head_layers, anchor_sizes and box_head_size must not be empty")
    norm: Callable[..., nn.Module] = (
        nn.BatchNorm2d if backbone_weights is None else FrozenBatchNorm2d
    )
    backbone = mobilenet_backbone(
        backbone_name="mobilenet_v3_large",
        weights=None,
        fpn=True,
        norm_layer=norm,
        trainable_layers=trainable_layers,
    )
    if backbone_weights is not None:
        _load_backbone(backbone, backbone_weights, norm)
    channels = int(backbone.out_channels)
    layers = [int(c) for c in mask_head_layers]
    model = MaskRCNN(
        backbone,
        num_classes=None,
        rpn_anchor_generator=AnchorGenerator(
            (tuple(int(s) for s in anchor_sizes),) * 3, ((0.5, 1.0, 2.0),) * 3
        ),
        box_head=TwoMLPHead(channels * 7 * 7, box_head_size),
        box_predictor=FastRCNNPredictor(box_head_size, num_classes),
        mask_head=MaskRCNNHeads(channels, layers, 1),
        mask_predictor=MaskRCNNPredictor(layers[-1], layers[-1], num_classes),
        box_detections_per_img=detections_per_image,
    )
    t = model.transform
    model.transform = _KeepScale(1, 1, t.image_mean, t.image_std, size_divisible=32)
    if weights is not None:
        load_detector_weights(model, weights)
    return model


def _load_backbone(
    backbone: nn.Module, path: str | os.PathLike[str], norm: Callable[..., nn.Module]
) -> None:
    """Load torchvision ``mobilenet_v3_large`` weights into the FPN backbone's body."""
    reference = mobilenet_v3_large(weights=None, norm_layer=norm)
    state = read_state_dict(path)
    try:
        reference.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(
            f"{path} does not hold torchvision mobilenet_v3_large weights: {err}"
        ) from err
    body: Any = backbone.body
    feats = {k.removeprefix("features."): v for k, v in reference.state_dict().items()}
    body.load_state_dict({k: v for k, v in feats.items() if k.split(".")[0] in body._modules})


def load_detector_weights(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Load a whole detector's weights, from a state dict or a ``DetectionModule`` checkpoint.

    Args:
        model: The network of :func:`create_mask_rcnn`.
        path: The local file.

    Raises:
        ValueError: The file's keys or shapes do not fit the network.
        FileNotFoundError: The file does not exist.
    """
    state = read_state_dict(path)
    if all(k.startswith("model.") for k in state):
        state = {k.removeprefix("model."): v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(
            f"{path} does not fit this Mask R-CNN (same num_classes, box_head_size and "
            f"mask_head_layers as when it was trained?): {str(err).splitlines()[0]}"
        ) from err


class MaskRCNNCellDetector:
    """White-cell detector of one image from a trained Mask R-CNN, tiled for large fields.

    Args:
        model: The network of :func:`create_mask_rcnn` (put in ``eval()`` mode here).
        score_threshold: Detections below this score are dropped.
        mask_threshold: Probability above which a pixel belongs to the mask.
        tile: Tile side for large images (see :func:`detect_tiled`).
        overlap: Tile overlap in pixels.
        nms_iou: Mask IoU above which the lower-scoring of two detections goes.
        containment: Share of a detection's mask inside a higher-scoring one above which it
            goes (see :func:`mask_nms`). On a 2592x1944 SyntheticSmear field with 25 cells a
            trained network also reported 13 lobes and fragments of cells it had found whole,
            all with scores above 0.5; this removes them.

    Raises:
        ValueError: A threshold outside ``[0, 1]``, or ``overlap`` not below ``tile``.
    """

    def __init__(
        self,
        model: MaskRCNN,
        *,
        score_threshold: float = 0.5,
        mask_threshold: float = 0.5,
        tile: int = 1024,
        overlap: int = 192,
        nms_iou: float = 0.5,
        containment: float = 0.6,
    ) -> None:
        for name, value in (
            ("score_threshold", score_threshold),
            ("mask_threshold", mask_threshold),
            ("nms_iou", nms_iou),
            ("containment", containment),
        ):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
        if tile < 1 or not 0 <= overlap < tile:
            raise ValueError(
                f"need tile >= 1 and 0 <= overlap < tile, got tile={tile}, overlap={overlap}"
            )
        self.model = model.eval()
        self.score_threshold = float(score_threshold)
        self.mask_threshold = float(mask_threshold)
        self.tile = int(tile)
        self.overlap = int(overlap)
        self.nms_iou = float(nms_iou)
        self.containment = float(containment)

    @torch.no_grad()
    def detect_tile(self, image: Tensor) -> Detections:
        """Detect the white cells of one image without tiling.

        Args:
            image: ``(3, H, W)`` uint8, or float in ``[0, 1]``.

        Returns:
            Detections above the score threshold, masks thresholded, after :func:`mask_nms`.
        """
        device = next(self.model.parameters()).device
        x = to_unit_image(image).to(device)
        out: dict[str, Tensor] = self.model([x])[0]
        keep = out["scores"] >= self.score_threshold
        masks = out["masks"][keep, 0] > self.mask_threshold
        found = Detections(out["boxes"][keep], masks, out["scores"][keep], out["labels"][keep])
        return mask_nms(found, self.nms_iou, self.containment)

    def __call__(self, image: Tensor) -> Detections:
        """Detect the white cells of one image, in tiles when it is larger than ``tile``.

        Args:
            image: ``(3, H, W)`` uint8, or float in ``[0, 1]``.

        Returns:
            The detections.
        """
        to_unit_image(image)
        return detect_tiled(
            self.detect_tile, image, tile=self.tile, overlap=self.overlap,
            iou_threshold=self.nms_iou, containment=self.containment,
        )  # fmt: skip
