"""Batched nucleus crops: the input of the nucleus branch of the dual-branch classifier."""

from __future__ import annotations

from typing import NamedTuple

import torch
from kornia.geometry.transform import crop_and_resize
from torch import Tensor

__all__ = ["NucleusCrops", "crop_nucleus", "mask_boxes"]


class NucleusCrops(NamedTuple):
    """Nucleus crops of a batch.

    Attributes:
        crops: ``(B, C, size, size)`` nucleus images, zero outside the mask.
        boxes: ``(B, 4)`` boxes ``(x0, y0, x1, y1)`` in pixels of the full image (inclusive).
        empty: ``(B,)`` samples without nucleus pixels (their crop is the whole image).
    """

    crops: Tensor
    boxes: Tensor
    empty: Tensor


def _extent(present: Tensor) -> tuple[Tensor, Tensor]:
    """First and last index of ``True`` along the last dim of ``(B, N)`` (0 and N-1 if none)."""
    n = present.shape[1]
    as_int = present.to(torch.uint8)
    first = as_int.argmax(dim=1)
    last = n - 1 - as_int.flip(1).argmax(dim=1)
    return first, last


def mask_boxes(mask: Tensor, *, margin: int = 2) -> tuple[Tensor, Tensor]:
    """Bounding boxes of the nonzero pixels of each mask, widened by ``margin`` pixels.

    Args:
        mask: ``(B, 1, H, W)`` masks (nonzero = nucleus).
        margin: Pixels added on every side, clipped to the image.

    Returns:
        ``(boxes, empty)``: ``(B, 4)`` float boxes ``(x0, y0, x1, y1)`` (inclusive pixel
        coordinates; the whole image for empty masks) and the ``(B,)`` empty flags.
    """
    fg = mask[:, 0] > 0
    h, w = fg.shape[1:]
    rows, cols = fg.any(dim=2), fg.any(dim=1)
    empty = ~rows.any(dim=1)
    y0, y1 = _extent(rows)
    x0, x1 = _extent(cols)
    boxes = torch.stack(
        [
            (x0 - margin).clamp(min=0),
            (y0 - margin).clamp(min=0),
            (x1 + margin).clamp(max=w - 1),
            (y1 + margin).clamp(max=h - 1),
        ],
        dim=1,
    ).float()
    whole = torch.tensor([0.0, 0.0, w - 1.0, h - 1.0], device=mask.device)
    return torch.where(empty.unsqueeze(1), whole, boxes), empty


def crop_nucleus(image: Tensor, mask: Tensor, size: int, *, margin: int = 2) -> NucleusCrops:
    """Cut each nucleus's bounding box from its image, zero outside the mask, resize (batched).

    The image is usually already normalised to the model's mean and std, so "zero" is the
    neutral input of the network. A sample whose mask has no nucleus pixels keeps its whole
    image, unmasked, and is flagged in ``empty``.

    Args:
        image: ``(B, C, H, W)`` float images.
        mask: ``(B, 1, H, W)`` nucleus masks of the same height and width (nonzero = nucleus).
        size: Side of the square crops.
        margin: Pixels of context added around the box (still zero outside the mask).

    Returns:
        The :class:`NucleusCrops`.

    Raises:
        ValueError: Mask and image of different batch size or spatial size, a mask with more
            than one channel, or a non-positive ``size``.
    """
    if size < 1:
        raise ValueError(f"nucleus crop size must be positive, got {size}")
    if (
        mask.ndim != 4
        or mask.shape[1] != 1
        or mask.shape[0] != image.shape[0]
        or mask.shape[2:] != image.shape[2:]
    ):
        raise ValueError(
            f"nucleus mask must have shape (B, 1, H, W) = {(image.shape[0], 1, *image.shape[2:])}"
            f" to match the image {tuple(image.shape)}, got {tuple(mask.shape)}"
        )
    boxes, empty = mask_boxes(mask, margin=margin)
    keep = (mask > 0) | empty.view(-1, 1, 1, 1)
    masked = image * keep.to(image.dtype)
    x0, y0, x1, y1 = boxes.unbind(dim=1)
    corners = torch.stack(
        [torch.stack(p, dim=1) for p in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))], dim=1
    ).to(image.dtype)  # (B, 4, 2) clockwise from top-left, (x, y)
    crops = crop_and_resize(masked, corners, (size, size), mode="bilinear", align_corners=True)
    return NucleusCrops(crops, boxes, empty)
