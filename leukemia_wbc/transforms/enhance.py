"""Batched contrast enhancement, grayscale conversion and background removal (Kornia).

Every transform takes a ``(B, 3, H, W)`` batch, ``uint8`` or float in ``[0, 1]``, on any device,
and returns ``float32`` in ``[0, 1]`` on that device. Each image is processed on its own: no
statistic is shared between the images of a batch. Float input outside ``[0, 1]`` (float
images in 0-255, or normalised ones) is refused with a ``ValueError`` by
:func:`~leukemia_wbc.transforms.checks.check_batch`, never clipped to white.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import kornia.color as KC
import kornia.enhance as KE
import kornia.filters as KF
import kornia.morphology as KM
import torch
from torch import Tensor, nn

from .checks import check_batch, to_unit_float
from .masks import central_component, fill_holes, hysteresis, otsu3, square_morphology

__all__ = ["CLAHE", "BackgroundRemoval", "Cue", "Grayscale", "HistogramEqualization"]

#: Per-pixel white-cell cues of :class:`BackgroundRemoval`.
Cue = Literal["dark_and_blue", "darkness", "blueness"]

_CUES: tuple[str, ...] = get_args(Cue)


class _LuminanceTransform(nn.Module):
    """Apply a function to the luminance of RGB images, keeping their chroma (hue).

    RGB becomes YCbCr, :meth:`_transform` maps Y, and the result goes back to RGB, clamped to
    ``[0, 1]``. A grayscale image (three equal channels) is mapped as it is and stays gray.
    """

    def _transform(self, y: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """Transform the luminance of a batch.

        Args:
            x: ``(B, 3, H, W)`` images, ``uint8`` or float in ``[0, 1]``.

        Returns:
            ``float32`` ``(B, 3, H, W)`` in ``[0, 1]``.

        Raises:
            TypeError: ``x`` is not a tensor or has an integer dtype other than uint8.
            ValueError: Wrong shape, an empty batch, non-finite values, or float values
                outside ``[0, 1]`` (e.g. float images in 0-255).
        """
        rgb = to_unit_float(check_batch(x, f"{type(self).__name__} input")).clamp(0.0, 1.0)
        gray = ((rgb[:, 0] == rgb[:, 1]) & (rgb[:, 1] == rgb[:, 2])).flatten(1).all(1)
        gray = gray.view(-1, 1, 1, 1)
        ycbcr = KC.rgb_to_ycbcr(rgb)
        # A gray image is mapped from its own channel, exactly, not from a rounded Y.
        luma = torch.where(gray, rgb[:, :1], ycbcr[:, :1]).clamp(0.0, 1.0)
        mapped = self._transform(luma)
        colour = KC.ycbcr_to_rgb(torch.cat([mapped, ycbcr[:, 1:]], dim=1))
        return torch.where(gray, mapped.expand_as(rgb), colour).clamp(0.0, 1.0)


class HistogramEqualization(_LuminanceTransform):
    """Global histogram equalisation of the luminance, keeping hue.

    Y of YCbCr is equalised over a 256-level histogram per image
    (:func:`kornia.enhance.equalize`); Cb and Cr are kept, so colours keep their hue. A grayscale
    image is equalised as it is.
    """

    def _transform(self, y: Tensor) -> Tensor:
        return KE.equalize(y)


class CLAHE(_LuminanceTransform):
    """Contrast-limited adaptive histogram equalisation (CLAHE) of the luminance, keeping hue.

    Y of YCbCr is equalised tile by tile with clipped histograms
    (:func:`kornia.enhance.equalize_clahe`, OpenCV's convention: a bin holds at most
    ``clip_limit`` times the mean count of a tile); Cb and Cr are kept.

    Args:
        clip_limit: Contrast limit relative to the mean bin count (``0`` disables clipping).
        grid_size: Number of tiles along height and width.

    Raises:
        ValueError: ``clip_limit`` is negative or not finite, or ``grid_size`` is not two
            positive integers.
    """

    def __init__(self, clip_limit: float = 2.0, grid_size: tuple[int, int] = (8, 8)) -> None:
        super().__init__()
        if not math.isfinite(clip_limit) or clip_limit < 0:
            raise ValueError(f"CLAHE: clip_limit must be a finite number >= 0, got {clip_limit}")
        if (
            len(grid_size) != 2
            or not all(isinstance(g, int) and not isinstance(g, bool) for g in grid_size)
            or min(grid_size) < 1
        ):
            raise ValueError(f"CLAHE: grid_size must be two positive integers, got {grid_size}")
        self.clip_limit = float(clip_limit)
        self.grid_size = (int(grid_size[0]), int(grid_size[1]))

    def _transform(self, y: Tensor) -> Tensor:
        height, width = y.shape[-2:]
        if height <= self.grid_size[0] or width <= self.grid_size[1]:
            raise ValueError(
                f"CLAHE: images of {height}x{width} pixels are too small for grid_size "
                f"{self.grid_size}; each side must exceed its number of tiles"
            )
        return KE.equalize_clahe(y, self.clip_limit, self.grid_size)

    def extra_repr(self) -> str:
        """The constructor arguments, shown by ``repr``."""
        return f"clip_limit={self.clip_limit}, grid_size={self.grid_size}"


class Grayscale(nn.Module):
    """Luminance with ITU-R BT.601 weights (0.299 R + 0.587 G + 0.114 B).

    Args:
        keep_channels: Repeat the luminance on three channels, so that an RGB backbone still
            fits; ``False`` returns one channel.
    """

    def __init__(self, keep_channels: bool = True) -> None:
        super().__init__()
        self.keep_channels = bool(keep_channels)

    def forward(self, x: Tensor) -> Tensor:
        """Convert a batch to grayscale.

        Args:
            x: ``(B, 3, H, W)`` images, ``uint8`` or float in ``[0, 1]``.

        Returns:
            ``float32`` ``(B, 3, H, W)`` (or ``(B, 1, H, W)``) in ``[0, 1]``.

        Raises:
            TypeError: ``x`` is not a tensor or has an integer dtype other than uint8.
            ValueError: Wrong shape, an empty batch, non-finite values, or float values
                outside ``[0, 1]`` (e.g. float images in 0-255).
        """
        rgb = to_unit_float(check_batch(x, "Grayscale input")).clamp(0.0, 1.0)
        luma = KC.rgb_to_grayscale(rgb).clamp(0.0, 1.0)
        return luma.expand(-1, 3, -1, -1).contiguous() if self.keep_channels else luma

    def extra_repr(self) -> str:
        """The constructor arguments, shown by ``repr``."""
        return f"keep_channels={self.keep_channels}"


class BackgroundRemoval(nn.Module):
    """Morphological removal of everything but the white cell (red cells, plasma, debris).

    Steps, batched over the images with no Python loop: (1) a per-pixel cue, smoothed by a
    Gaussian; (2) a three-class Otsu split of each image's cue (background / cytoplasm /
    nucleus), kept where above the lower threshold and connected to a pixel above the upper one
    (hysteresis); (3) closing, hole filling, opening; (4) the component nearest the image centre
    (:func:`kornia.contrib.connected_components_union_find`); (5) an optional dilation by
    ``margin``. Pixels outside the mask are set to ``fill``. An image where nothing is found
    (a constant image) is returned unchanged.

    Cues: ``"darkness"`` is ``1 - Y``; ``"blueness"`` is ``B - R`` (nucleus and cytoplasm are
    purple to blue, red cells and plasma pink to yellow); ``"dark_and_blue"`` keeps pixels that
    pass both, which excludes red cells that touch the white cell. Mean IoU against the expert
    cell masks of segmentation_WBC (224 px, default sizes): darkness 0.94 / 0.57, blueness
    0.62 / 0.79, dark_and_blue 0.84 / 0.79 (Dataset 1 / Dataset 2), hence the default; use
    ``"darkness"`` for crops without red cells (Dataset 1 style), whose pink granulocyte
    cytoplasm fails the blueness test.

    Sizes are in pixels and were tuned on 224x224 crops; scale them with the image size.

    Args:
        cue: ``"dark_and_blue"``, ``"darkness"`` or ``"blueness"``.
        sigma: Standard deviation of the Gaussian smoothing of the cue (``0``: none).
        closing_size: Side of the square closing that joins nucleus and cytoplasm (1: none).
        opening_size: Side of the square opening that cuts thin bridges and specks (1: none).
        margin: Radius in pixels of a disk dilation of the final mask (0: none).
        keep_centre: Keep only the component nearest the image centre; ``False`` keeps all.
        fill: Value in ``[0, 1]`` given to removed pixels (0: black, as C-NMC crops).

    Raises:
        ValueError: An unknown ``cue``, negative ``sigma``, ``margin`` or size below 1, even
            sizes, or ``fill`` outside ``[0, 1]``.
    """

    def __init__(
        self,
        cue: Cue = "dark_and_blue",
        *,
        sigma: float = 2.0,
        closing_size: int = 25,
        opening_size: int = 9,
        margin: int = 0,
        keep_centre: bool = True,
        fill: float = 0.0,
    ) -> None:
        super().__init__()
        if cue not in _CUES:
            raise ValueError(f"BackgroundRemoval: cue must be one of {_CUES}, got {cue!r}")
        if not math.isfinite(sigma) or sigma < 0:
            raise ValueError(f"BackgroundRemoval: sigma must be a finite number >= 0, got {sigma}")
        for name, size in (("closing_size", closing_size), ("opening_size", opening_size)):
            if not isinstance(size, int) or size < 1 or size % 2 == 0:
                raise ValueError(
                    f"BackgroundRemoval: {name} must be an odd integer >= 1, got {size}"
                )
        if not isinstance(margin, int) or margin < 0:
            raise ValueError(f"BackgroundRemoval: margin must be an integer >= 0, got {margin}")
        if not 0.0 <= fill <= 1.0:
            raise ValueError(f"BackgroundRemoval: fill must lie in [0, 1], got {fill}")
        self.cue: Cue = cue
        self.sigma = float(sigma)
        self.closing_size = closing_size
        self.opening_size = opening_size
        self.margin = margin
        self.keep_centre = bool(keep_centre)
        self.fill = float(fill)

    def _cue_masks(self, rgb: Tensor) -> list[Tensor]:
        cues: list[Tensor] = []
        if self.cue in ("darkness", "dark_and_blue"):
            cues.append(1.0 - KC.rgb_to_grayscale(rgb))
        if self.cue in ("blueness", "dark_and_blue"):
            cues.append(rgb[:, 2:3] - rgb[:, 0:1])
        masks = []
        for cue in cues:
            if self.sigma > 0:
                k = 2 * math.ceil(3 * self.sigma) + 1
                # Replicate, not reflect, borders: reflection needs images larger than the kernel.
                cue = KF.gaussian_blur2d(cue, (k, k), (self.sigma, self.sigma), "replicate")
            low, high = otsu3(cue)
            masks.append(hysteresis(cue > low, cue > high))
        return masks

    def mask(self, x: Tensor) -> Tensor:
        """The white-cell mask of each image.

        Args:
            x: ``(B, 3, H, W)`` images, ``uint8`` or float in ``[0, 1]``.

        Returns:
            ``bool`` ``(B, 1, H, W)``, ``True`` on the kept region.

        Raises:
            TypeError: ``x`` is not a tensor or has an integer dtype other than uint8.
            ValueError: Wrong shape, an empty batch, non-finite values, or float values
                outside ``[0, 1]`` (e.g. float images in 0-255).
        """
        rgb = to_unit_float(check_batch(x, "BackgroundRemoval input")).clamp(0.0, 1.0)
        masks = self._cue_masks(rgb)
        m = masks[0]
        for other in masks[1:]:
            m = m & other
        m = square_morphology(
            "erosion", square_morphology("dilation", m, self.closing_size), self.closing_size
        )
        m = fill_holes(m)
        m = square_morphology(
            "dilation", square_morphology("erosion", m, self.opening_size), self.opening_size
        )
        m = central_component(m) if self.keep_centre else m | ~m.flatten(1).any(1).view(-1, 1, 1, 1)
        if self.margin > 0:
            r = torch.arange(-self.margin, self.margin + 1, device=m.device, dtype=torch.float32)
            disk = ((r[:, None] ** 2 + r[None, :] ** 2) <= self.margin**2 + 0.5).float()
            m = KM.dilation(m.float(), disk) > 0.5
        return m

    def forward(self, x: Tensor) -> Tensor:
        """Remove the background of a batch.

        Args:
            x: ``(B, 3, H, W)`` images, ``uint8`` or float in ``[0, 1]``.

        Returns:
            ``float32`` ``(B, 3, H, W)`` in ``[0, 1]``: the image inside :meth:`mask`, ``fill``
            elsewhere.

        Raises:
            TypeError: ``x`` is not a tensor or has an integer dtype other than uint8.
            ValueError: Wrong shape, an empty batch, non-finite values, or float values
                outside ``[0, 1]`` (e.g. float images in 0-255).
        """
        rgb = to_unit_float(check_batch(x, "BackgroundRemoval input")).clamp(0.0, 1.0)
        return torch.where(self.mask(rgb), rgb, torch.full_like(rgb, self.fill))

    def extra_repr(self) -> str:
        """The constructor arguments, shown by ``repr``."""
        return (
            f"cue={self.cue!r}, sigma={self.sigma}, closing_size={self.closing_size}, "
            f"opening_size={self.opening_size}, margin={self.margin}, "
            f"keep_centre={self.keep_centre}, fill={self.fill}"
        )
