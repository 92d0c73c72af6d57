"""Attribution overlays a person can read: the original image, the class, a colour bar.

``classify --overlays`` and ``explain`` write one PNG per image and branch with
:func:`labelled_overlay`: the attribution map is brought back to the image's own size and laid
over it, titled with the predicted class, its probability, the method and the branch, with a
colour bar of the relative attribution. Integrated Gradients maps are pixel-level and speckled:
they are smoothed (a Gaussian of the absolute attribution) before they are shown, and the
title says so.
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from torch import Tensor

from ..experiments.fold_attributions import METHOD_NAMES
from ..explain import overlay

__all__ = ["MIN_SIDE", "SMOOTH_FRACTION", "labelled_overlay", "smooth_attribution", "to_size"]

#: Overlays of smaller images are drawn enlarged to this many pixels on their longer side.
MIN_SIDE = 320
#: Standard deviation of the Gaussian that smooths Integrated Gradients maps, as a fraction of
#: the map's shorter side.
SMOOTH_FRACTION = 0.02


def smooth_attribution(heat: Tensor, *, fraction: float = SMOOTH_FRACTION) -> Tensor:
    """A Gaussian of the absolute attribution (``(H, W)``), for pixel-level maps.

    Args:
        heat: ``(H, W)`` map.
        fraction: The Gaussian's standard deviation as a fraction of the shorter side.

    Returns:
        The smoothed ``(H, W)`` map, non-negative.
    """
    h = heat.detach().abs().float()
    sigma = max(1.0, fraction * min(h.shape))
    radius = int(3 * sigma)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=h.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    img = F.pad(h[None, None], (radius, radius, radius, radius), mode="replicate")
    img = F.conv2d(img, kernel.view(1, 1, 1, -1))
    img = F.conv2d(img, kernel.view(1, 1, -1, 1))
    return img[0, 0]


def to_size(heat: Tensor, size: tuple[int, int]) -> np.ndarray:
    """A map resized (bilinear) to ``(height, width)`` and scaled to its own maximum.

    Args:
        heat: ``(H, W)`` non-negative map.
        size: ``(height, width)``.

    Returns:
        ``(height, width)`` ``float64`` map in ``[0, 1]``.
    """
    h = F.interpolate(heat.detach().float()[None, None].cpu(), size=size, mode="bilinear",
                      align_corners=False)[0, 0].clamp_min(0)  # fmt: skip
    peak = float(h.max())
    out: np.ndarray = (h / peak if peak > 0 else h).numpy().astype(np.float64)
    return out


def labelled_overlay(
    image: np.ndarray,
    heat: Tensor,
    *,
    predicted: str,
    probability: float,
    method: str,
    branch: str,
    alpha: float = 0.45,
) -> bytes:
    """One PNG: the image at its own size, the map over it, a title and a colour bar.

    Args:
        image: ``(H, W, 3)`` ``uint8`` original image.
        heat: ``(h, w)`` attribution map at the model's input size (any non-negative scale).
        predicted: Predicted class name.
        probability: Its probability.
        method: ``"gradcam"`` or ``"integrated_gradients"`` (smoothed before it is shown).
        branch: The branch the map explains (``"cell"``, ``"nucleus"``).
        alpha: Largest weight of the map's colour over the image.

    Returns:
        PNG bytes.
    """
    height, width = image.shape[:2]
    smoothed = method == "integrated_gradients"
    heat = smooth_attribution(heat) if smoothed else heat.abs()
    blended = overlay(image, to_size(heat, (height, width)), alpha=alpha)
    scale = max(1.0, MIN_SIDE / max(height, width))
    dpi = 100
    fig = Figure(figsize=(width * scale / dpi + 1.3, height * scale / dpi + 0.6), dpi=dpi)
    ax = fig.add_axes((0.02, 0.02, width * scale / dpi / fig.get_figwidth(),
                       height * scale / dpi / fig.get_figheight()))  # fmt: skip
    ax.imshow(blended, interpolation="bilinear" if scale > 1 else "nearest")
    ax.set_axis_off()
    name = METHOD_NAMES.get(method, method) + (", smoothed" if smoothed else "")
    fig.suptitle(f"predicted {predicted} (p = {probability:.2f})\n{name}, {branch} branch",
                 fontsize=9, x=0.02, ha="left", y=0.99, va="top")  # fmt: skip
    bar = fig.add_axes((ax.get_position().x1 + 0.03, 0.08, 0.025, ax.get_position().height * 0.8))
    cb = fig.colorbar(ScalarMappable(Normalize(0, 1), colormaps["jet"]), cax=bar)
    cb.set_label("relative attribution", fontsize=8)
    cb.ax.tick_params(labelsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()
