"""Batched binary-mask morphology shared by the transforms and the segmenters.

Every helper works on ``bool`` ``(B, 1, H, W)`` masks (or ``(B, 1, H, W)`` float cues) and
processes the images of a batch independently. Connected components (8-connected) are
labelled by :func:`components`: on a GPU by :func:`kornia.contrib.connected_components_union_find`
in one batched call, on the CPU by :func:`scipy.ndimage.label` image by image, which is 20-40x
faster there (0.2 ms against 4-6 ms per 224x224 image on 2 threads); both give labels unique
across the batch and the same components, so every helper gives the same masks on either
device. Disk morphology of small radii runs as boolean shifts (no float convolution).
"""

from __future__ import annotations

import math

import kornia.morphology as KM
import numpy as np
import torch
from kornia.contrib import connected_components_union_find
from scipy import ndimage as ndi
from torch import Tensor

__all__ = [
    "central_component",
    "central_nucleus",
    "components",
    "disk_morphology",
    "fill_holes",
    "hysteresis",
    "keep_central",
    "otsu2",
    "otsu3",
    "remove_small",
    "square_morphology",
]

_OTSU_BINS = 128
#: 8-connectivity of :func:`scipy.ndimage.label` (kornia's union-find is 8-connected too).
_EIGHT = np.ones((3, 3), dtype=bool)
#: Disks up to this radius are eroded / dilated by boolean shifts, larger ones by kornia.
_SHIFT_RADIUS = 4


def components(mask: Tensor) -> Tensor:
    """Labels of the 8-connected components of each mask, distinct across the batch.

    Args:
        mask: ``bool`` ``(B, 1, H, W)``.

    Returns:
        ``int64`` ``(B, 1, H, W)``: ``0`` off the mask, a positive label per component (at most
        the number of pixels of the batch).
    """
    if mask.device.type != "cpu":
        return connected_components_union_find(mask)
    arrays = mask.detach().reshape(-1, *mask.shape[-2:]).numpy()
    out = np.zeros(arrays.shape, dtype=np.int64)
    offset = 0
    for i, m in enumerate(arrays):
        n = ndi.label(m, structure=_EIGHT, output=out[i])
        out[i][m] += offset
        offset += int(n)
    return torch.from_numpy(out).view(mask.shape)


def _histogram(cue: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-image ``_OTSU_BINS``-bin histogram of a cue over its own range.

    Returns:
        ``(p, lo, scale)``: ``(B, bins)`` float64 bin probabilities, and ``(B, 1)`` the lowest
        value and the width of a bin (bin ``k`` is centred on ``lo + k * scale``).
    """
    b = cue.shape[0]
    flat = cue.flatten(1)
    lo = flat.min(1, keepdim=True).values
    span = flat.max(1, keepdim=True).values - lo
    level = ((flat - lo) / span.clamp_min(1e-12) * (_OTSU_BINS - 1)).round().long()
    offset = torch.arange(b, device=cue.device).unsqueeze(1) * _OTSU_BINS
    counts = torch.bincount((level + offset).flatten(), minlength=b * _OTSU_BINS)
    p = counts.view(b, _OTSU_BINS).double() / flat.shape[1]
    return p, lo, span / (_OTSU_BINS - 1)


def otsu2(cue: Tensor) -> Tensor:
    """Threshold of a two-class Otsu split, per image.

    Args:
        cue: ``(B, 1, H, W)`` float cue.

    Returns:
        ``(B, 1, 1, 1)`` thresholds.
    """
    b = cue.shape[0]
    p, lo, scale = _histogram(cue)
    w = p.cumsum(1)  # weight of the lower class when the threshold is above bin k
    s = (p * torch.arange(_OTSU_BINS, device=cue.device)).cumsum(1)
    total = s[:, -1:]
    # Between-class variance up to a constant: sum over classes of (class sum)^2 / weight.
    score = s**2 / w.clamp_min(1e-12) + (total - s) ** 2 / (1 - w).clamp_min(1e-12)
    best = score[:, :-1].argmax(1, keepdim=True)
    return (lo + (best + 0.5) * scale).view(b, 1, 1, 1)


def otsu3(cue: Tensor) -> tuple[Tensor, Tensor]:
    """Two thresholds of a three-class Otsu split, per image.

    Args:
        cue: ``(B, 1, H, W)`` float cue.

    Returns:
        The low and the high ``(B, 1, 1, 1)`` thresholds.
    """
    b = cue.shape[0]
    p, lo, scale = _histogram(cue)
    w = p.cumsum(1)  # class weight up to and including bin k
    s = (p * torch.arange(_OTSU_BINS, device=cue.device)).cumsum(1)
    total = s[:, -1:, None]
    w_a, s_a, w_b, s_b = w[:, :, None], s[:, :, None], w[:, None, :], s[:, None, :]
    eps = 1e-12
    # Between-class variance up to a constant: sum over classes of (class sum)^2 / weight.
    score = (
        s_a**2 / w_a.clamp_min(eps)
        + (s_b - s_a) ** 2 / (w_b - w_a).clamp_min(eps)
        + (total - s_b) ** 2 / (1 - w_b).clamp_min(eps)
    )
    valid = torch.ones(_OTSU_BINS, _OTSU_BINS, dtype=torch.bool, device=cue.device).triu(1)
    best = score.masked_fill(~valid, -1.0).flatten(1).argmax(1)
    low = lo + ((best // _OTSU_BINS).unsqueeze(1) + 0.5) * scale
    high = lo + ((best % _OTSU_BINS).unsqueeze(1) + 0.5) * scale
    return low.view(b, 1, 1, 1), high.view(b, 1, 1, 1)


def _areas(labels: Tensor) -> Tensor:
    """Pixel count of every label (index: the label)."""
    flat = labels.flatten()
    top = int(flat.max()) + 1 if flat.numel() else 1
    return torch.bincount(flat, minlength=top)


def _centre_distance(h: int, w: int, device: torch.device) -> Tensor:
    """``(H, W)`` distance of each pixel to the image centre, in pixels."""
    yy = torch.arange(h, device=device, dtype=torch.float32) - (h - 1) / 2
    xx = torch.arange(w, device=device, dtype=torch.float32) - (w - 1) / 2
    return (yy[:, None] ** 2 + xx[None, :] ** 2).sqrt()


def _select(labels: Tensor, chosen: Tensor) -> Tensor:
    """Pixels whose component label is in ``chosen`` (labels are unique across the batch)."""
    top = int(labels.max()) + 1 if labels.numel() else 1
    table = torch.zeros(top, dtype=torch.bool, device=labels.device)
    table[chosen.flatten()] = True
    table[0] = False  # background
    return table[labels]


def hysteresis(low: Tensor, high: Tensor) -> Tensor:
    """Components of ``low`` that hold at least one ``high`` pixel.

    Args:
        low: ``bool`` ``(B, 1, H, W)`` permissive mask.
        high: ``bool`` ``(B, 1, H, W)`` strict mask.

    Returns:
        ``bool`` ``(B, 1, H, W)``.
    """
    labels = components(low)
    return _select(labels, labels[high & low])


def fill_holes(mask: Tensor) -> Tensor:
    """Fill background regions that do not touch the image border.

    Args:
        mask: ``bool`` ``(B, 1, H, W)``.

    Returns:
        ``bool`` ``(B, 1, H, W)``.
    """
    labels = components(~mask)
    border = torch.cat(
        [labels[..., 0, :], labels[..., -1, :], labels[..., :, 0], labels[..., :, -1]], dim=-1
    )
    return mask | ((~mask) & ~_select(labels, border))


def central_component(mask: Tensor) -> Tensor:
    """The component nearest the image centre; an empty mask becomes all foreground.

    Args:
        mask: ``bool`` ``(B, 1, H, W)``.

    Returns:
        ``bool`` ``(B, 1, H, W)``.
    """
    b, _, h, w = mask.shape
    labels = components(mask)
    dist = _centre_distance(h, w, mask.device).expand(b, 1, h, w)
    nearest = dist.masked_fill(~mask, math.inf).flatten(1).argmin(1, keepdim=True)
    kept = _select(labels, labels.flatten(1).gather(1, nearest))
    empty = ~mask.flatten(1).any(1).view(b, 1, 1, 1)
    return kept | empty


def square_morphology(op: str, mask: Tensor, size: int) -> Tensor:
    """Binary erosion or dilation by a ``size`` square, as a horizontal then a vertical line.

    Args:
        op: ``"erosion"`` or ``"dilation"``.
        mask: ``bool`` ``(B, 1, H, W)``.
        size: Side of the square in pixels (``<= 1``: unchanged).

    Returns:
        ``bool`` ``(B, 1, H, W)``.
    """
    if size <= 1:
        return mask
    fn = KM.erosion if op == "erosion" else KM.dilation
    out = mask.float()
    for kernel in (out.new_ones(1, size), out.new_ones(size, 1)):
        out = fn(out, kernel)
    return out > 0.5


def disk_morphology(mask: Tensor, op: str, radius: int) -> Tensor:
    """Binary erosion, dilation, opening or closing by a disk of ``radius`` pixels.

    Args:
        mask: ``bool`` ``(B, 1, H, W)``.
        op: ``"erosion"``, ``"dilation"``, ``"opening"`` or ``"closing"``.
        radius: Disk radius in pixels (``<= 0``: unchanged).

    Returns:
        ``bool`` ``(B, 1, H, W)``.
    """
    if radius <= 0:
        return mask
    r = torch.arange(-radius, radius + 1, device=mask.device, dtype=torch.float32)
    kernel = ((r[:, None] ** 2 + r[None, :] ** 2) <= radius**2 + 0.5).float()
    erodes = {"erosion": (True,), "dilation": (False,), "opening": (True, False),
              "closing": (False, True)}[op]  # fmt: skip
    if radius <= _SHIFT_RADIUS:
        out = mask
        for erode in erodes:
            out = _shifted(out, kernel, erode=erode)
        return out
    values = mask.float()
    for erode in erodes:
        values = (KM.erosion if erode else KM.dilation)(values, kernel)
    return values > 0.5


def _shifted(mask: Tensor, kernel: Tensor, *, erode: bool) -> Tensor:
    """Erosion (AND) or dilation (OR) of ``mask`` by a small symmetric ``kernel``, by shifts.

    Pixels outside the image count as foreground for an erosion and as background for a
    dilation (kornia's ``"geodesic"`` border), so the result equals :mod:`kornia.morphology`'s.
    """
    r = kernel.shape[-1] // 2
    h, w = mask.shape[-2:]
    padded = torch.nn.functional.pad(mask.to(torch.uint8), (r, r, r, r), value=int(erode))
    padded = padded.bool()
    out = torch.full_like(mask, erode)
    for dy, dx in (kernel > 0).nonzero().tolist():
        view = padded[..., dy : dy + h, dx : dx + w]
        out = out & view if erode else out | view
    return out


def remove_small(mask: Tensor, min_area: int) -> Tensor:
    """Drop the components of fewer than ``min_area`` pixels.

    Args:
        mask: ``bool`` ``(B, 1, H, W)``.
        min_area: Smallest kept component, in pixels.

    Returns:
        ``bool`` ``(B, 1, H, W)``.
    """
    if min_area <= 1:
        return mask
    labels = components(mask)
    return mask & (_areas(labels)[labels] >= min_area)


def keep_central(
    mask: Tensor, radius: float, *, keep_all: bool = False, labels: Tensor | None = None
) -> Tensor:
    """The largest component touching a central disk, or the one nearest the centre.

    A component touches the centre when one of its pixels lies within ``radius`` pixels of the
    image centre. Among those, the largest is kept (``keep_all``: all of them); an image with no
    such component keeps the component nearest the centre, and an empty mask stays empty.
    ``labels`` (distinct across the batch, ``0`` off the mask) replaces the 8-connected
    components, e.g. to select among the pieces of a watershed split.

    Args:
        mask: ``bool`` ``(B, 1, H, W)``.
        radius: Radius of the central disk, in pixels.
        keep_all: Keep every component touching the disk, not only the largest.
        labels: Component labels replacing the 8-connected components.

    Returns:
        ``bool`` ``(B, 1, H, W)``.
    """
    b, _, h, w = mask.shape
    if labels is None:
        labels = components(mask)
    dist = _centre_distance(h, w, mask.device).expand(b, 1, h, w)
    touching = _select(labels, labels[mask & (dist <= radius)])
    area = _areas(labels)
    if keep_all:
        chosen = touching
    else:
        # The pixel of largest component area among touching components picks the component.
        score = torch.where(touching, area[labels].double(), -1.0).flatten(1)
        chosen = _select(labels, labels.flatten(1).gather(1, score.argmax(1, keepdim=True)))
    none_touch = ~touching.flatten(1).any(1).view(b, 1, 1, 1)
    nearest = dist.masked_fill(~mask, math.inf).flatten(1).argmin(1, keepdim=True)
    fallback = _select(labels, labels.flatten(1).gather(1, nearest))
    return torch.where(none_touch, fallback, chosen)


def central_nucleus(mask: Tensor, min_area: int, radius: float) -> Tensor:
    """:func:`remove_small`, :func:`fill_holes`, then every component touching a central disk.

    The clean-up of the classical segmenters in one call: the same masks as
    ``keep_central(fill_holes(remove_small(mask, min_area)), radius, keep_all=True)``, which is
    what runs on a GPU; on the CPU the three steps run image by image on SciPy labels, which
    avoids the batch-wide label tables (3-4x faster there).

    Args:
        mask: ``bool`` ``(B, 1, H, W)``.
        min_area: Smallest kept component, in pixels.
        radius: Radius of the central disk, in pixels.

    Returns:
        ``bool`` ``(B, 1, H, W)``.
    """
    if mask.device.type != "cpu":
        return keep_central(fill_holes(remove_small(mask, min_area)), radius, keep_all=True)
    h, w = mask.shape[-2:]
    distance = _centre_distance(h, w, mask.device).numpy()
    disk = distance <= radius
    arrays = mask.detach().reshape(-1, h, w).numpy()
    out = np.zeros(arrays.shape, dtype=bool)
    for i, m in enumerate(arrays):
        out[i] = _central_nucleus_image(m, min_area, disk, distance)
    return torch.from_numpy(out).view(mask.shape)


def _central_nucleus_image(
    m: np.ndarray, min_area: int, disk: np.ndarray, distance: np.ndarray
) -> np.ndarray:
    """:func:`central_nucleus` of one ``(H, W)`` boolean mask (NumPy, SciPy labels)."""
    if min_area > 1:
        labels, _ = ndi.label(m, structure=_EIGHT)
        area = np.bincount(labels.ravel())
        area[0] = 0
        m = (area >= min_area)[labels]
    holes, _ = ndi.label(~m, structure=_EIGHT)
    outside = np.zeros(int(holes.max()) + 1, dtype=bool)
    for edge in (holes[0], holes[-1], holes[:, 0], holes[:, -1]):
        outside[edge] = True
    outside[0] = False  # label 0: the mask itself
    m = ~outside[holes]  # the mask and its holes
    labels, n = ndi.label(m, structure=_EIGHT)
    if n == 0:
        return m
    chosen = np.zeros(n + 1, dtype=bool)
    chosen[labels[disk & m]] = True
    chosen[0] = False
    if not chosen.any():  # none touches the disk: the component nearest the centre
        chosen[labels.ravel()[np.where(m.ravel(), distance.ravel(), np.inf).argmin()]] = True
    return np.asarray(chosen[labels], dtype=bool)
