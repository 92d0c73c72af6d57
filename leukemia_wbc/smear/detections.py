"""Detections of white cells in one image, their mask NMS, and tiled detection of large fields.

:class:`Detections` is what every white-cell detector returns (one instance per cell: the box
frames the cell, the mask is its nucleus); :func:`detect_tiled` runs any detector of one image
over the overlapping tiles of a large field and merges what they find.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Detections", "detect_tiled", "mask_nms", "tile_starts", "to_unit_image"]


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


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of the tiles along one axis, the last one pushed back inside the image.

    Args:
        length: Image length along the axis.
        tile: Tile side.
        overlap: Overlap between neighbouring tiles.

    Returns:
        The starts, from 0; one start when the image fits in a tile.
    """
    step = tile - overlap
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
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
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
