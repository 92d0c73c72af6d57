"""Input validation shared by the batched transforms and the segmenters."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["UNIT_RANGE_TOLERANCE", "check_batch", "to_unit_float"]

#: How far float images may stray outside ``[0, 1]`` (interpolation overshoot) before
#: :func:`check_batch` refuses them as being in another range.
UNIT_RANGE_TOLERANCE = 0.01


def check_batch(x: object, name: str, *, channels: int | None = 3) -> Tensor:
    """Validate an image batch: ``(B, C, H, W)``, uint8 in 0-255 or finite float in 0-1.

    Floating-point images must lie in ``[0, 1]`` (up to :data:`UNIT_RANGE_TOLERANCE`): a float
    batch in 0-255, or one already normalised with a mean and std, is refused rather than
    silently clipped to white or black by the transforms that take it.

    Args:
        x: The value to check.
        name: What the value is, for the message (e.g. ``"MacenkoNormalizer input"``).
        channels: Required channel count, or ``None`` for any.

    Returns:
        ``x`` unchanged.

    Raises:
        TypeError: ``x`` is not a tensor, or has an integer dtype other than uint8.
        ValueError: Wrong rank, channel count, an empty batch, non-finite values, or float
            values outside ``[0, 1]``.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor (B, C, H, W), got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(
            f"{name}: expected a batch of shape (B, C, H, W), got shape {tuple(x.shape)}"
        )
    if x.shape[0] == 0 or x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"{name}: the batch is empty (shape {tuple(x.shape)})")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name}: expected {channels} channels (RGB), got {x.shape[1]}")
    if x.dtype == torch.uint8:
        return x
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected uint8 or floating-point images, got {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: the batch holds NaN or infinite values")
    low, high = (float(v) for v in torch.aminmax(x.detach()))
    if low < -UNIT_RANGE_TOLERANCE or high > 1.0 + UNIT_RANGE_TOLERANCE:
        hint = "divide by 255" if high > 1.0 and low >= 0.0 else "undo the mean/std normalisation"
        raise ValueError(
            f"{name}: float images with values in [{low:.4g}, {high:.4g}]; expected uint8 "
            f"images in 0-255 or float images in 0-1 ({hint})"
        )
    return x


def to_unit_float(x: Tensor) -> Tensor:
    """``uint8`` in ``[0, 255]`` to float in ``[0, 1]``; floating point is returned as float32."""
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    return x.float()
