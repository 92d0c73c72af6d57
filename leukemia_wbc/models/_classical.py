"""Per-pixel nucleus cues of the classical segmenter: colour k-means and watershed (private).

Helpers of :class:`leukemia_wbc.models.segmentation.ClassicalNucleusSegmenter`; each image of a
batch is processed on its own, so a batch gives the same masks as its images one at a time.
"""

from __future__ import annotations

from typing import Any

import kornia.color as KC
import numpy as np
import skimage.feature
import skimage.segmentation
import torch
from scipy import ndimage as ndi
from torch import Tensor

__all__ = ["kmeans_nucleus", "watershed_labels"]

#: Scale of CIE L*a*b* channels before k-means: L* in [0, 100], a* and b* mostly in [-64, 64],
#: so that lightness and colour weigh alike (measured better than RGB and than (100, 128, 128)).
_LAB_SCALE = (100.0, 64.0, 64.0)
#: scikit-image's functions carry no type annotations.
_sk: Any = skimage


def kmeans_nucleus(rgb: Tensor, k: int, iterations: int, stride: int) -> Tensor:
    """The darkest of ``k`` colour clusters (k-means in scaled CIE L*a*b*) of each image.

    Centres start, deterministically, as the means of ``k`` equal-count groups of pixels sorted
    by lightness; Lloyd iterations then run on every ``stride``-th pixel in each direction (in
    float64, so results do not depend on the batch size) and every pixel takes its nearest
    centre (elementwise float32 distances). The nucleus is the cluster whose centre has the
    lowest L*.

    Args:
        rgb: ``(B, 3, H, W)`` float images in ``[0, 1]``.
        k: Number of clusters.
        iterations: Lloyd iterations.
        stride: Subsampling step of the pixels the centres are fitted on.

    Returns:
        ``bool`` ``(B, 1, H, W)``: pixels of the darkest cluster.
    """
    b, _, h, w = rgb.shape
    scale = torch.tensor(_LAB_SCALE, device=rgb.device, dtype=torch.float32).view(1, 3, 1, 1)
    lab = KC.rgb_to_lab(rgb.float()) / scale
    sample = lab[:, :, ::stride, ::stride].flatten(2).transpose(1, 2).double()  # (B, N, 3)
    order = torch.sort(sample[..., 0], dim=1, stable=True).indices
    ranked = sample.gather(1, order.unsqueeze(-1).expand_as(sample))
    centres = torch.stack([part.mean(1) for part in ranked.chunk(k, dim=1)], dim=1)  # (B, k, 3)
    for _ in range(iterations):
        assign = torch.cdist(sample, centres).argmin(2)
        onehot = torch.nn.functional.one_hot(assign, centres.shape[1]).to(sample.dtype)
        counts = onehot.sum(1).unsqueeze(-1)
        means = (onehot.transpose(1, 2) @ sample) / counts.clamp_min(1.0)
        centres = torch.where(counts > 0, means, centres)  # an empty cluster keeps its centre
    nucleus = centres[..., 0].argmin(1)
    # Every pixel's nearest centre, elementwise in float32 (no matrix product, so a batch gives
    # the same masks as its images one by one): the nucleus where its centre is the nearest.
    fitted = centres.float().transpose(1, 2).reshape(b, 3, -1, 1, 1)  # (B, 3, k, 1, 1)
    distance = ((lab.unsqueeze(2) - fitted) ** 2).sum(1)  # (B, k, H, W)
    return (distance.argmin(1, keepdim=True) == nucleus.view(b, 1, 1, 1)).view(b, 1, h, w)


def watershed_labels(mask: Tensor, min_distance: int) -> Tensor:
    """Split touching objects of each mask by a watershed on the distance transform.

    Markers are the local maxima of the Euclidean distance to the background
    (:func:`skimage.feature.peak_local_max`, at least ``min_distance`` pixels apart, one object
    per connected component at least); :func:`skimage.segmentation.watershed` floods the
    negated distance from them inside the mask. Runs on the CPU, one image at a time (about
    10 ms per 224x224 image); the labels come back on the mask's device.

    Args:
        mask: ``bool`` ``(B, 1, H, W)``.
        min_distance: Minimum distance in pixels between two markers.

    Returns:
        ``int64`` ``(B, 1, H, W)`` labels, ``0`` on the background, distinct across the batch.
    """
    arrays = mask[:, 0].cpu().numpy()
    out = np.zeros(arrays.shape, dtype=np.int64)
    offset = 0
    for i, m in enumerate(arrays):
        if not m.any():
            continue
        components, _ = ndi.label(m, structure=np.ones((3, 3), dtype=bool))
        distance = ndi.distance_transform_edt(m)
        peaks = _sk.feature.peak_local_max(
            distance, min_distance=max(1, min_distance), labels=components, exclude_border=False
        )
        markers = np.zeros(m.shape, dtype=np.int64)
        markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
        labels = _sk.segmentation.watershed(-distance, markers, mask=m)
        out[i] = np.where(labels > 0, labels + offset, 0)
        offset += int(labels.max())
    return torch.from_numpy(out).unsqueeze(1).to(mask.device)
