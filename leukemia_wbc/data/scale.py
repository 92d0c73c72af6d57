"""Physical scale: resample a cell image to a common number of pixels per micrometre.

Labs image cells at different magnifications: a neutrophil is about 77 pixels across in
``segmentation_WBC`` Dataset 1 and about 160 in Dataset 2. Resizing every crop to one
``size`` keeps each lab's scale (and its crop margin), so the same cell is a different number
of pixels in each. With its pixel size known (:attr:`Record.pixels_per_um
<leukemia_wbc.data.Record.pixels_per_um>`), an image is first resampled to the common scale and
then cut (or padded) at its centre to ``size``: a cell is then the same number of pixels in
every lab.
"""

from __future__ import annotations

import math

import numpy as np

from .images import resize_mask, resize_rgb

__all__ = ["check_pixels_per_um", "rescale_mask", "rescale_rgb", "scaled_shape"]


def check_pixels_per_um(value: float | None, where: str) -> float | None:
    """A pixel size, checked: ``None`` or a finite positive number.

    Args:
        value: Pixels per micrometre.
        where: What gave it, named in the error.

    Returns:
        The value as a float (or ``None``).

    Raises:
        ValueError: Not finite, or not positive.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: pixels per micrometre must be a number, got {value!r}")
    out = float(value)
    if not math.isfinite(out) or out <= 0:
        raise ValueError(f"{where}: pixels per micrometre must be positive, got {value!r}")
    return out


def scaled_shape(shape: tuple[int, int], factor: float) -> tuple[int, int]:
    """The ``(height, width)`` of an image of ``shape`` resampled by ``factor`` (at least 1).

    Args:
        shape: ``(height, width)``.
        factor: Output pixels per input pixel.

    Returns:
        The resampled ``(height, width)``.
    """
    return (max(1, round(shape[0] * factor)), max(1, round(shape[1] * factor)))


def _fit_centre(arr: np.ndarray, size: tuple[int, int], fill: np.ndarray | int) -> np.ndarray:
    """Cut ``arr`` at its centre to ``size``, padding with ``fill`` where it is smaller."""
    h, w = arr.shape[:2]
    th, tw = size
    out = np.empty((th, tw, *arr.shape[2:]), dtype=arr.dtype)
    out[...] = fill
    # Source and destination windows of the centred overlap (each axis crops or pads).
    sy, dy = max(0, (h - th) // 2), max(0, (th - h) // 2)
    sx, dx = max(0, (w - tw) // 2), max(0, (tw - w) // 2)
    ch, cw = min(h, th), min(w, tw)
    out[dy : dy + ch, dx : dx + cw] = arr[sy : sy + ch, sx : sx + cw]
    return out


def _border_colour(arr: np.ndarray) -> np.ndarray:
    """The per-channel median of an image's outermost pixels (its background, for padding)."""
    border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]], axis=0)
    colour: np.ndarray = np.median(border, axis=0).astype(arr.dtype)
    return colour


def rescale_rgb(arr: np.ndarray, factor: float, size: tuple[int, int] | None) -> np.ndarray:
    """Resample an RGB ``uint8`` image by ``factor``, then cut or pad it at its centre to ``size``.

    Padding takes the median colour of the image's border, so a small crop sits on its own
    background rather than on black.

    Args:
        arr: Image ``(H, W, 3)``.
        factor: Output pixels per input pixel (target pixels per micrometre divided by the
            image's).
        size: ``(height, width)`` of the result; ``None`` keeps the resampled size.

    Returns:
        The image (C-contiguous ``uint8``).
    """
    resized = resize_rgb(arr, scaled_shape(arr.shape[:2], factor))
    if size is None or resized.shape[:2] == size:
        return np.ascontiguousarray(resized)
    return _fit_centre(resized, size, _border_colour(arr))


def rescale_mask(mask: np.ndarray, factor: float, size: tuple[int, int] | None) -> np.ndarray:
    """Resample a ``uint8`` mask ``(H, W)`` as :func:`rescale_rgb` does its image (pads with 0).

    Args:
        mask: Mask (values kept: nearest-neighbour sampling).
        factor: Output pixels per input pixel.
        size: ``(height, width)`` of the result; ``None`` keeps the resampled size.

    Returns:
        The mask (C-contiguous ``uint8``).
    """
    resized = resize_mask(mask, scaled_shape(mask.shape, factor))
    if size is None or resized.shape == size:
        return np.ascontiguousarray(resized)
    return _fit_centre(resized, size, 0)
