"""Lightweight Mask R-CNN for whole smears: one instance per white cell.

An instance is one white cell: its box frames the whole cell (nucleus and cytoplasm) and its
mask is the cell's nucleus, every lobe included. That is the pair a two-branch classifier
needs: the crop from the box and the nucleus mask from the mask (see
:class:`leukemia_wbc.data.SyntheticSmear`, which draws its targets this way).

The network is torchvision's :class:`~torchvision.models.detection.MaskRCNN` on a
MobileNetV3-Large FPN backbone, made lighter than torchvision's defaults: a box head of
``box_head_size`` (256) features instead of 1024, and a mask head of ``mask_head_layers`` (two
convolutions of 128 channels) instead of four of 256. Images keep their scale: the internal
resizing of torchvision's detection transform is switched off, so that the cell size the network
learned is the cell size it sees; tiles (:func:`detect_tiled`) cover large fields.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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

from ._weights import read_state_dict

__all__ = [
    "Detections",
    "MaskRCNNCellDetector",
    "create_mask_rcnn",
    "detect_tiled",
    "mask_nms",
    "to_unit_image",
]


@dataclass(frozen=True)
class Detections:
    """The white cells found in one image.

    Attributes:
        boxes: ``float32`` ``(N, 4)`` cell boxes ``(x0, y0, x1, y1)`` in pixels.
        masks: ``bool`` ``(N, H, W)`` nucleus masks at the image's size.
        scores: ``float32`` ``(N,)`` confidence in ``[0, 1]``.
        labels: ``int64`` ``(N,)`` detector class (1 = white cell for a class-agnostic one).
    """

    boxes: Tensor
    masks: Tensor
    scores: Tensor
    labels: Tensor

    def __len__(self) -> int:
        """Number of detections."""
        return int(self.boxes.shape[0])

    @classmethod
    def empty(cls, height: int, width: int, device: torch.device | None = None) -> Detections:
        """No detections in an image of ``height`` x ``width``.

        Args:
            height: Image height.
            width: Image width.
            device: Device of the tensors.

        Returns:
            Empty detections.
        """
        return cls(
            boxes=torch.zeros(0, 4, device=device),
            masks=torch.zeros(0, height, width, dtype=torch.bool, device=device),
            scores=torch.zeros(0, device=device),
            labels=torch.zeros(0, dtype=torch.long, device=device),
        )

    def select(self, keep: Tensor) -> Detections:
        """The detections at ``keep`` (indices or a boolean mask), in that order.

        Args:
            keep: Indices or a boolean mask over the detections.

        Returns:
            The selected detections.
        """
        return Detections(self.boxes[keep], self.masks[keep], self.scores[keep], self.labels[keep])

    def to(self, device: torch.device | str) -> Detections:
        """The detections on ``device``.

        Args:
            device: Target device.

        Returns:
            Moved detections.
        """
        return Detections(
            *(t.to(device) for t in (self.boxes, self.masks, self.scores, self.labels))
        )

    def centroids(self) -> Tensor:
        """Centroid ``(x, y)`` of each mask (the box centre where a mask is empty).

        Returns:
            ``float32`` ``(N, 2)``.
        """
        out = (self.boxes[:, :2] + self.boxes[:, 2:]).float() / 2
        for i, mask in enumerate(self.masks):  # one mask at a time: no (N, H, W) float copy
            ys, xs = torch.nonzero(mask, as_tuple=True)
            if len(ys):
                out[i, 0] = xs.float().mean() + 0.5
                out[i, 1] = ys.float().mean() + 0.5
        return out


def to_unit_image(image: Tensor, name: str = "image") -> Tensor:
    """Check one RGB image ``(3, H, W)`` and return it as float in ``[0, 1]``.

    Args:
        image: ``uint8`` or float (already in ``[0, 1]``) tensor ``(3, H, W)``.
        name: Name of the argument, for messages.

    Returns:
        ``float32`` ``(3, H, W)``.

    Raises:
        TypeError: Not a tensor, or an integer type other than uint8.
        ValueError: Not ``(3, H, W)``, or float values above 1.
    """
    if not isinstance(image, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (3, H, W), got {type(image).__name__}")
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"{name} must be an RGB tensor (3, H, W), got shape {tuple(image.shape)}")
    if image.dtype == torch.uint8:
        return image.float() / 255.0
    if not image.is_floating_point():
        raise TypeError(f"{name} must be uint8 or float in [0, 1], got {image.dtype}")
    if image.numel() and float(image.max()) > 1.0:
        raise ValueError(
            f"{name} is float with values up to {float(image.max()):.3g}; expected [0, 1] "
            "(divide by 255, or pass uint8)"
        )
    return image.float()


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
            :class:`~leukemia_wbc.tasks.DetectionModule`); ``None`` for random initialisation.
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


def _mask_bounds(masks: Tensor) -> Tensor:
    """``(N, 4)`` integer bounds ``(x0, y0, x1, y1)`` of each mask (zeros for an empty one)."""
    rows, cols = masks.any(2), masks.any(1)
    out = torch.zeros(len(masks), 4, dtype=torch.long, device=masks.device)
    for i in range(len(masks)):
        ys, xs = torch.nonzero(rows[i]).flatten(), torch.nonzero(cols[i]).flatten()
        if len(ys):
            out[i] = torch.stack([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1])
    return out


def mask_nms(
    detections: Detections, iou_threshold: float = 0.5, containment: float = 1.0
) -> Detections:
    """Drop every detection whose mask overlaps a higher-scoring one too much.

    A detection goes when its mask IoU with a kept, higher-scoring one exceeds
    ``iou_threshold``, or when more than ``containment`` of its own mask lies inside that one
    (a lobe or fragment of a cell already found, which box NMS keeps because its box is
    small). Overlaps are computed only where two masks' bounds meet.

    Args:
        detections: Detections of one image.
        iou_threshold: Mask IoU above which the lower-scoring detection goes.
        containment: Share of the lower-scoring mask inside the other above which it goes
            (1.0: never on that ground).

    Returns:
        The kept detections, highest score first.
    """
    if len(detections) < 2:
        return detections
    order = torch.argsort(detections.scores, descending=True, stable=True)
    det = detections.select(order)
    bounds = _mask_bounds(det.masks).tolist()
    area = [int(m.count_nonzero()) for m in det.masks]
    keep: list[int] = []
    for i in range(len(det)):
        duplicate = False
        for j in keep:
            x0, y0 = max(bounds[i][0], bounds[j][0]), max(bounds[i][1], bounds[j][1])
            x1, y1 = min(bounds[i][2], bounds[j][2]), min(bounds[i][3], bounds[j][3])
            if x0 >= x1 or y0 >= y1:
                continue
            inter = int((det.masks[i, y0:y1, x0:x1] & det.masks[j, y0:y1, x0:x1]).sum())
            union = max(area[i] + area[j] - inter, 1)
            if inter > iou_threshold * union or inter > containment * max(area[i], 1):
                duplicate = True
                break
        if not duplicate:
            keep.append(i)
    return det.select(torch.tensor(keep, dtype=torch.long, device=det.boxes.device))


def _starts(length: int, tile: int, step: int) -> list[int]:
    if length <= tile:
        return [0]
    n = math.ceil((length - tile) / step) + 1
    return [min(i * step, length - tile) for i in range(n)]


def _cores(starts: list[int], tile: int, length: int) -> list[tuple[int, int]]:
    """Each tile's core: its part nearer to it than to a neighbour (cores tile the axis)."""
    cuts = [(nxt + prev + tile) // 2 for prev, nxt in itertools.pairwise(starts)]
    return list(zip([0, *cuts], [*cuts, length], strict=True))


def detect_tiled(
    detect: Callable[[Tensor], Detections],
    image: Tensor,
    *,
    tile: int = 1024,
    overlap: int = 192,
    iou_threshold: float = 0.5,
    containment: float = 1.0,
) -> Detections:
    """Run ``detect`` on overlapping tiles of a large image and merge the detections.

    Each tile keeps the detections whose box centre lies in its own core (the part of the tile
    nearer to it than to its neighbours: the cores of all tiles cover the image without
    overlapping), so every cell is reported by one tile, which sees it whole as long as the
    overlap exceeds the cell's size; a mask NMS then removes any duplicate left. Every kept
    detection gets a full-size mask (one byte per pixel: 5 MB on a 2592x1944 field).

    Args:
        detect: Detector of one ``(3, h, w)`` tile.
        image: ``(3, H, W)`` image.
        tile: Tile side in pixels.
        overlap: Overlap between neighbouring tiles in pixels (more than a cell's diameter).
        iou_threshold: Mask IoU of the final NMS.
        containment: Containment share of the final NMS (see :func:`mask_nms`).

    Returns:
        The merged detections with full-size masks.

    Raises:
        ValueError: ``overlap`` not below ``tile``, or either not positive.
    """
    if tile < 1 or overlap < 0 or overlap >= tile:
        raise ValueError(f"need 0 <= overlap < tile, got tile={tile}, overlap={overlap}")
    _, h, w = image.shape
    if h <= tile and w <= tile:
        return detect(image)
    ys, xs = _starts(h, tile, tile - overlap), _starts(w, tile, tile - overlap)
    parts: list[Detections] = []
    for y0, (cy0, cy1) in zip(ys, _cores(ys, tile, h), strict=True):
        for x0, (cx0, cx1) in zip(xs, _cores(xs, tile, w), strict=True):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            found = detect(image[:, y0:y1, x0:x1])
            if not len(found):
                continue
            boxes = found.boxes + torch.tensor([x0, y0, x0, y0], device=found.boxes.device)
            mid = (boxes[:, :2] + boxes[:, 2:]) / 2
            own = (mid[:, 0] >= cx0) & (mid[:, 0] < cx1) & (mid[:, 1] >= cy0) & (mid[:, 1] < cy1)
            if not bool(own.any()):
                continue
            masks = torch.zeros(int(own.sum()), h, w, dtype=torch.bool, device=boxes.device)
            masks[:, y0:y1, x0:x1] = found.masks[own]
            parts.append(Detections(boxes[own], masks, found.scores[own], found.labels[own]))
    if not parts:
        return Detections.empty(h, w, image.device)
    merged = Detections(*(torch.cat(ts) for ts in zip(*(_fields(p) for p in parts), strict=True)))
    return mask_nms(merged, iou_threshold, containment)


def _fields(d: Detections) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return d.boxes, d.masks, d.scores, d.labels


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
