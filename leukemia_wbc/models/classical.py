"""The classical nucleus segmenter: Otsu thresholds of colour cues, k-means, watershed.

:class:`ClassicalNucleusSegmenter` needs no training; it is what segments cells when a dataset
has no masks and no network segmenter is given (the SVM, the dual branch with
``segmenter="multiotsu_blue_green"``, ``classify`` on new cells).

Classical methods compared (mean per-image nucleus Dice against the expert masks of
segmentation_WBC at 224x224, all 300 images of Dataset 1 and 100 of Dataset 2, as printed by
``examples/segmentation_quality.py``; each method with the cue threshold that measured best for
it and the default clean-up):

==========================  ===========  ===========
method                      Dataset 1    Dataset 2
==========================  ===========  ===========
``multiotsu_blue_green``    0.957        0.966
(default)
``kmeans``                  0.955        0.976
``watershed``               0.956        0.975
``multiotsu_darkness``      0.936        0.967
``otsu_saturation``         0.865        0.938
``otsu_hematoxylin``        0.711        0.848
==========================  ===========  ===========

The default, ``multiotsu_blue_green``, thresholds ``blue - 1.5 green`` (the chromatin of a
Wright-Giemsa nucleus absorbs green and passes blue; cytoplasm, red cells and background do
not) at the upper of its three-class Otsu thresholds. Of the per-pixel cues measured with the
same clean-up (green, darkness, ``B - G``, ``B - R``, ``B / (R + G + B)``, ``B - a G + b R``
over a small grid), it was the best over both labs; k-means in L*a*b* is as good on Dataset 1
and 0.01 better on Dataset 2 but needs the L*a*b* conversion of every pixel, about 10x the
time (``benchmarks/segmentation.py``; docs/segmentation.md has the figures). Both beat the
plain scikit-image reference of that benchmark (three-class Otsu of the green channel, opening,
hole filling, the component at the centre: 0.892 / 0.920). k-means and its watershed split tie
(within 0.001; splitting rarely changes which pixels touch the centre on single-cell crops).
In the exploration (a simpler clean-up), k-means with k = 4 in CIE L*a*b* (L* / a* / b*
scaled by 100 / 64 / 64) scored 0.949 / 0.965, in RGB 0.930 / 0.958, and k = 3 scored below
k = 4 in both spaces (k = 5 within 0.002 of k = 4). The Macenko hematoxylin map
is a weak nucleus cue on these Wright-Giemsa stains: in Dataset 1 it lights the cytoplasm rim
as much as the nucleus; its two-class Otsu threshold was its best variant (a three-class upper
threshold, ``H - E`` or ``H / (H + E)`` measured lower). The clean-up sizes were chosen on the
same images, over a broad plateau (within 0.01 Dice for opening radius 1-3 px, smallest
component 0-300 px and central radius 0.1-0.3 of the side at 224 px). Keeping *every*
component that touches the central disk beats keeping only the largest by 0.02-0.03 Dice for
the classical methods, because the lobes of a neutrophil nucleus are separate components in
the expert masks.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import kornia.color as KC
import kornia.filters as KF
import torch
from torch import Tensor, nn

from ..transforms.checks import check_batch, to_unit_float
from ..transforms.masks import (
    central_nucleus,
    disk_morphology,
    fill_holes,
    keep_central,
    otsu2,
    otsu3,
    remove_small,
)
from ..transforms.stain import MacenkoNormalizer
from ._classical import kmeans_nucleus, watershed_labels

__all__ = ["BLUE_GREEN_WEIGHT", "ClassicalMethod", "ClassicalNucleusSegmenter"]

#: Methods of :class:`ClassicalNucleusSegmenter`.
ClassicalMethod = Literal[
    "multiotsu_blue_green",
    "kmeans",
    "watershed",
    "multiotsu_darkness",
    "otsu_saturation",
    "otsu_hematoxylin",
]
_METHODS: tuple[str, ...] = get_args(ClassicalMethod)
#: The cue of ``"multiotsu_blue_green"`` is ``blue - BLUE_GREEN_WEIGHT * green`` (measured best
#: of 1, 1.5, 2 and 3 over both labs of segmentation_WBC; see the module docstring).
BLUE_GREEN_WEIGHT = 1.5


def _smooth(cue: Tensor, sigma: float) -> Tensor:
    if sigma <= 0:
        return cue
    k = 2 * math.ceil(3 * sigma) + 1
    return KF.gaussian_blur2d(cue, (k, k), (sigma, sigma), "replicate")


class ClassicalNucleusSegmenter(nn.Module):
    """Parameter-free nucleus segmentation of single-cell crops, batched.

    Steps: (1) a foreground of nucleus-coloured pixels by ``method``; (2) morphological
    clean-up: opening by a disk, removal of small components, hole filling; (3) the
    component(s) touching a central disk (every one, so that the lobes of a segmented nucleus
    stay; the one nearest the centre when none touches). Methods:

    * ``"multiotsu_blue_green"`` (default, see the module docstring): above the upper
      three-class Otsu threshold of ``blue - 1.5 green``;
    * ``"kmeans"`` (the most accurate on Dataset 2 of segmentation_WBC, about 10x slower):
      k-means with ``k`` clusters in CIE L*a*b*, the darkest cluster;
    * ``"watershed"``: the k-means foreground split into touching nuclei by a watershed on its
      distance transform (markers at least ``min_distance`` apart), keeping the pieces that
      touch the centre; CPU (scikit-image), one image at a time;
    * ``"multiotsu_darkness"``: above the upper threshold of a three-class Otsu split of the
      darkness ``1 - Y``;
    * ``"otsu_saturation"``: above the upper three-class Otsu threshold of the HSV saturation,
      Gaussian-smoothed;
    * ``"otsu_hematoxylin"``: above the two-class Otsu threshold of the hematoxylin
      concentration of :meth:`~leukemia_wbc.transforms.MacenkoNormalizer.separate`.

    Every step but the watershed runs batched in torch / Kornia on the input's device (the
    connected components on the CPU with SciPy, see :mod:`leukemia_wbc.transforms.masks`); each
    image is processed on its own, so a batch gives the same masks as its images one by one.
    Sizes are fractions of the image, tuned on 224x224 crops.

    Args:
        method: One of the methods above.
        k: Number of k-means clusters.
        opening: Radius of the opening disk as a fraction of the shorter side (0: none).
        min_area: Components smaller than this fraction of the image area are removed.
        centre_radius: Radius of the central disk as a fraction of the shorter side.
        min_distance: Minimum distance between watershed markers, as a fraction of the
            shorter side.

    Raises:
        ValueError: An unknown method, ``k`` below 2, or a fraction outside ``[0, 1]``.
    """

    #: Takes RGB in ``[0, 1]`` (or uint8), not normalised images (read by the classifiers).
    input_range = "unit"

    def __init__(
        self,
        method: ClassicalMethod = "multiotsu_blue_green",
        *,
        k: int = 4,
        opening: float = 0.009,
        min_area: float = 0.004,
        centre_radius: float = 0.2,
        min_distance: float = 0.1,
    ) -> None:
        super().__init__()
        if method not in _METHODS:
            raise ValueError(f"argument 'method': expected one of {_METHODS}, got {method!r}")
        if not isinstance(k, int) or k < 2:
            raise ValueError(f"argument 'k': expected an int >= 2, got {k!r}")
        fractions = {
            "opening": opening,
            "min_area": min_area,
            "centre_radius": centre_radius,
            "min_distance": min_distance,
        }
        for name, value in fractions.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"argument {name!r}: expected a fraction in [0, 1], got {value}")
        self.method: ClassicalMethod = method
        self.k = k
        self.opening = float(opening)
        self.min_area = float(min_area)
        self.centre_radius = float(centre_radius)
        self.min_distance = float(min_distance)
        self.stain = MacenkoNormalizer() if method == "otsu_hematoxylin" else None

    def foreground(self, rgb: Tensor) -> Tensor:
        """Step 1: the nucleus-coloured pixels of each image, before clean-up.

        Args:
            rgb: ``(B, 3, H, W)`` float images in ``[0, 1]``.

        Returns:
            ``bool`` ``(B, 1, H, W)``.
        """
        side = min(rgb.shape[-2:])
        if self.method in ("kmeans", "watershed"):
            return kmeans_nucleus(rgb, self.k, iterations=10, stride=2)
        if self.method == "multiotsu_blue_green":
            cue = rgb[:, 2:3] - BLUE_GREEN_WEIGHT * rgb[:, 1:2]
            return cue > otsu3(cue)[1]
        if self.method == "multiotsu_darkness":
            darkness = 1.0 - KC.rgb_to_grayscale(rgb)
            return darkness > otsu3(darkness)[1]
        if self.method == "otsu_saturation":
            saturation = _smooth(KC.rgb_to_hsv(rgb)[:, 1:2], side / 112)
            return saturation > otsu3(saturation)[1]
        assert self.stain is not None
        hematoxylin = self.stain.separate(rgb)[:, :1]
        return hematoxylin > otsu2(hematoxylin)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        """Segment the nucleus of the central cell of each image.

        Args:
            images: ``(B, 3, H, W)`` RGB, ``uint8`` or float in ``[0, 1]``.

        Returns:
            ``uint8`` ``(B, 1, H, W)`` masks, 1 on the nucleus.

        Raises:
            TypeError: ``images`` is not a tensor, or has an integer dtype other than uint8.
            ValueError: Wrong shape, an empty batch or non-finite values.
        """
        rgb = to_unit_float(check_batch(images, "ClassicalNucleusSegmenter input")).clamp(0, 1)
        h, w = rgb.shape[-2:]
        side = min(h, w)
        mask = disk_morphology(self.foreground(rgb), "opening", round(self.opening * side))
        if self.method != "watershed":
            kept = central_nucleus(mask, round(self.min_area * h * w), self.centre_radius * side)
            return kept.to(torch.uint8)
        mask = fill_holes(remove_small(mask, round(self.min_area * h * w)))
        labels = watershed_labels(mask, round(self.min_distance * side))
        kept = keep_central(mask, self.centre_radius * side, keep_all=True, labels=labels)
        return kept.to(torch.uint8)

    def extra_repr(self) -> str:
        """The constructor arguments, shown by ``repr``."""
        return (
            f"method={self.method!r}, k={self.k}, opening={self.opening}, "
            f"min_area={self.min_area}, centre_radius={self.centre_radius}, "
            f"min_distance={self.min_distance}"
        )
