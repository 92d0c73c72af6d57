"""Input validation shared by the batched transforms and the segmenters."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["check_batch", "to_unit_float"]


def check_batch(x: object, name: str, *, channels: int | None = 3) -> Tensor:
    """Validate an image batch: a ``(B, C, H, W)`` tensor, uint8 or finite floating point.

    Args:
        x: The value to check.
        name: What the value is, for the message (e.g. ``"MacenkoNormalizer input"``).
        channels: Required channel count, or ``None`` for any.

    Returns:
        ``x`` unchanged.

    Raises:
        TypeError: ``x`` is not a tensor, or has an integer dtype other than uint8.
        ValueError: Wrong rank, channel count, an empty batch or non-finite values.
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
    return x


def to_unit_float(x: Tensor) -> Tensor:
    """``uint8`` in ``[0, 255]`` to float in ``[0, 1]``; floating point is returned as float32."""
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    return x.float()
