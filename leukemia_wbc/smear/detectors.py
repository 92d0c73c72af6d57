"""White-cell detectors of whole smears: classical morphology, and its hybrid with Mask R-CNN.

All detectors take one RGB image ``(3, H, W)`` (uint8, or float in ``[0, 1]``) and return
:class:`~leukemia_wbc.smear.mask_rcnn.Detections`: one instance per white cell, its box framing
the cell and its mask the nucleus.

The classical detector works in optical density (OD, ``-log(I / 256)`` per channel):

1. stained pixels: total OD above its Otsu threshold (plasma and background fall below);
2. white-cell pixels: among stained pixels, the share of OD in the red channel above its Otsu
   threshold. Red cells absorb green and blue but little red; nuclei and the basophilic
   cytoplasm of white cells absorb red strongly, whatever the stain's strength;
3. clean-up (opening, small components removed, holes filled), then touching cells split by a
   watershed on the distance transform;
4. the nucleus of each cell: its pixels whose hematoxylin concentration (colour deconvolution
   with a reference stain matrix) lies above the cell's own Otsu threshold, opened and with
   holes filled.

The steps and defaults were chosen on :class:`~leukemia_wbc.smear.SyntheticSmear` fields of
seed 3, its tuning set. There, step 2 found the white-cell pixels with a mean IoU of 0.92 (24
fields), while Otsu or three-class Otsu on a hematoxylin map, on the red OD, or the darkest of
four k-means colour clusters each failed on some fields (mean IoU 0.51-0.78 on 16 fields),
because red cells outnumber nuclei many times over; and the defaults gave mask AP 0.58 (AP50
0.82) on 16 fields, against 0.50 with a 3-pixel filter, markers 12 pixels apart and no opening
of the nucleus, and 0.46 with the hematoxylin map smoothed by a Gaussian of 2 pixels. Tuning
figures flatter: on 96 held-out fields of other patients it scored 0.36 (AP50 0.67), see
``docs/smears.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import skimage.feature
import skimage.filters
import skimage.morphology
import skimage.segmentation
import torch
from scipy import ndimage as ndi
from torch import Tensor

from .detections import Detections, to_unit_image
from .mask_rcnn import MaskRCNNCellDetector

__all__ = [
    "ROMANOWSKY_STAINS",
    "CellDetector",
    "ClassicalCellDetector",
    "HybridCellDetector",
]

#: scikit-image's functions carry no type annotations.
_sk: Any = skimage

#: Reference optical-density vectors (rows: hematoxylin / azure, eosin) of a Romanowsky-type
#: stain: purple nuclei, pink-red erythrocytes. They are the centre of
#: :class:`~leukemia_wbc.data.SyntheticWBC`'s per-patient stain model.
ROMANOWSKY_STAINS: tuple[tuple[float, float, float], tuple[float, float, float]] = (
    (0.55, 0.78, 0.30),
    (0.12, 0.80, 0.55),
)


class CellDetector(Protocol):
    """Anything that finds the white cells of one image."""

    def __call__(self, image: Tensor) -> Detections:
        """Detect the white cells of ``image`` ``(3, H, W)``."""
        ...


def _otsu(values: np.ndarray) -> float:
    if values.size == 0 or float(values.min()) == float(values.max()):
        return float("inf")
    return float(_sk.filters.threshold_otsu(values))


class ClassicalCellDetector:
    """Parameter-free white-cell detection by optical density, Otsu and watershed.

    See the module docstring for the steps. Sizes are in pixels and suit cells of 30-100
    pixels across (e.g. :class:`~leukemia_wbc.smear.SyntheticSmear` at 4 pixels per
    micrometre); scale them with the magnification. Every detection scores 1: the method has
    no confidence of its own. Runs on the CPU (NumPy, SciPy, scikit-image).

    Args:
        min_area: Cells of fewer pixels are dropped.
        opening: Radius of the opening disk in pixels.
        min_distance: Least distance in pixels between two watershed markers (about the
            smallest cell radius).
        smooth: Side of the box filter applied to the optical density before thresholding.
        nucleus_sigma: Gaussian smoothing (pixels) of the hematoxylin map before each cell's
            Otsu threshold, so that chromatin texture does not split the nucleus.
        stains: Hematoxylin and eosin OD vectors of the colour deconvolution.

    Raises:
        ValueError: A negative size, or stain vectors that are not two 3-vectors.
    """

    def __init__(
        self,
        *,
        min_area: int = 300,
        opening: int = 2,
        min_distance: int = 20,
        smooth: int = 5,
        nucleus_sigma: float = 0.0,
        stains: Sequence[Sequence[float]] = ROMANOWSKY_STAINS,
    ) -> None:
        for name, value in (
            ("min_area", min_area),
            ("opening", opening),
            ("min_distance", min_distance),
            ("smooth", smooth),
            ("nucleus_sigma", nucleus_sigma),
        ):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        matrix = np.asarray(stains, dtype=np.float64)
        if matrix.shape != (2, 3) or not np.isfinite(matrix).all():
            raise ValueError(f"stains must be two OD 3-vectors, got shape {matrix.shape}")
        self.min_area = int(min_area)
        self.opening = int(opening)
        self.min_distance = int(min_distance)
        self.smooth = int(smooth)
        self.nucleus_sigma = float(nucleus_sigma)
        self.stains = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)

    def regions(self, image: Tensor) -> tuple[np.ndarray, np.ndarray]:
        """White-cell instance labels and the hematoxylin map of one image.

        Args:
            image: ``(3, H, W)`` uint8, or float in ``[0, 1]``.

        Returns:
            ``(labels, hematoxylin)``: ``int64`` ``(H, W)`` (0 background, 1..N cells) and
            ``float64`` ``(H, W)`` concentrations.
        """
        rgb = to_unit_image(image).permute(1, 2, 0).cpu().numpy().astype(np.float64)
        od = -np.log((rgb * 255.0 + 1.0) / 256.0)
        if self.smooth > 1:
            od = ndi.uniform_filter(od, size=(self.smooth, self.smooth, 1))
        total = od.sum(axis=2)
        stained = total > _otsu(total)
        red_share = od[..., 0] / np.maximum(total, 1e-6)
        cells = stained & (red_share > _otsu(red_share[stained]))
        if self.opening:
            cells = ndi.binary_opening(cells, structure=_sk.morphology.disk(self.opening))
        cells = _sk.morphology.remove_small_objects(cells, max_size=max(self.min_area - 1, 0))
        cells = ndi.binary_fill_holes(cells)
        distance = ndi.distance_transform_edt(cells)
        components, _ = ndi.label(cells)
        peaks = _sk.feature.peak_local_max(
            distance,
            min_distance=max(1, self.min_distance),
            labels=components,
            exclude_border=False,
        )
        markers = np.zeros(cells.shape, np.int64)
        markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
        labels = _sk.segmentation.watershed(-distance, markers, mask=cells)
        conc = np.linalg.lstsq(self.stains.T, od.reshape(-1, 3).T, rcond=None)[0]
        hema = ndi.gaussian_filter(conc[0].reshape(total.shape), self.nucleus_sigma)
        return np.asarray(labels, np.int64), hema

    def __call__(self, image: Tensor) -> Detections:
        """Detect the white cells of one image.

        Args:
            image: ``(3, H, W)`` uint8, or float in ``[0, 1]``.

        Returns:
            One detection per cell: the cell's box and its nucleus mask, score 1.
        """
        labels, hema = self.regions(image)
        h, w = labels.shape
        boxes, masks = [], []
        for index, sl in enumerate(ndi.find_objects(labels), start=1):
            if sl is None:
                continue
            cell = labels[sl] == index
            if int(cell.sum()) < self.min_area:
                continue
            nucleus = cell & (hema[sl] > _otsu(hema[sl][cell]))
            if self.opening:  # SciPy repeats an opening of 0 iterations until nothing is left
                nucleus = ndi.binary_opening(nucleus, iterations=self.opening)
            nucleus = ndi.binary_fill_holes(nucleus)
            if not nucleus.any():
                continue
            full = np.zeros((h, w), bool)
            full[sl] = nucleus
            masks.append(full)
            boxes.append([sl[1].start, sl[0].start, sl[1].stop, sl[0].stop])
        if not masks:
            return Detections.empty(h, w, image.device)
        n = len(masks)
        return Detections(
            boxes=torch.tensor(boxes, dtype=torch.float32, device=image.device),
            masks=torch.from_numpy(np.stack(masks)).to(image.device),
            scores=torch.ones(n, device=image.device),
            labels=torch.ones(n, dtype=torch.long, device=image.device),
        )


class HybridCellDetector:
    """Classical morphology proposes, Mask R-CNN refines and splits, a rule merges the two.

    The combination rule, for one image:

    1. every network detection is an instance: the network decides how cells are split
       (touching cells) and grouped (the lobes of one nucleus);
    2. with ``refine_masks``, its mask is cut down to the classical nucleus pixels inside it
       when they cover at least ``min_agreement`` of it (Otsu edges instead of the network's
       28x28 mask upsampled); otherwise the network's mask stays;
    3. each classical cell that no network detection covers (less than ``min_cover`` of its
       nucleus under network masks) is added with score ``classical_score``, so that a cell
       the network missed is still reported; it ranks below the network's detections while
       ``classical_score`` is below the network's score threshold (0.3 and 0.5 by default).

    Step 2 is off by default: on 96 held-out SyntheticSmear fields at the training
    magnification it lowered the mask AP of a trained network from 0.675 to 0.555 (AP75 0.751
    to 0.555), because the classical nucleus edges were less accurate than the network's; on
    fields with cells 0.6 times as large it raised it from 0.384 to 0.423
    (``examples/smear_detection.py``, see ``docs/smears.md``).

    Args:
        classical: The classical detector.
        network: The Mask R-CNN detector (its own score threshold applies first).
        min_agreement: Share of a network mask that classical pixels must cover to replace it.
        min_cover: Share of a classical nucleus under network masks that counts as found.
        classical_score: Score given to the classical cells added in step 3.
        refine_masks: Apply step 2.

    Raises:
        ValueError: A share or score outside ``[0, 1]``.
    """

    def __init__(
        self,
        classical: ClassicalCellDetector,
        network: MaskRCNNCellDetector,
        *,
        min_agreement: float = 0.5,
        min_cover: float = 0.2,
        classical_score: float = 0.3,
        refine_masks: bool = False,
    ) -> None:
        for name, value in (
            ("min_agreement", min_agreement),
            ("min_cover", min_cover),
            ("classical_score", classical_score),
        ):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
        self.classical = classical
        self.network = network
        self.min_agreement = float(min_agreement)
        self.min_cover = float(min_cover)
        self.classical_score = float(classical_score)
        self.refine_masks = bool(refine_masks)

    def __call__(self, image: Tensor) -> Detections:
        """Detect the white cells of one image.

        Args:
            image: ``(3, H, W)`` uint8, or float in ``[0, 1]``.

        Returns:
            The merged detections, network ones first.
        """
        net = self.network(image)
        cls = self.classical(image).to(net.masks.device)
        masks = net.masks
        if self.refine_masks and len(net) and len(cls):
            masks = net.masks.clone()
            classical_pixels = cls.masks.any(0)
            for i, mask in enumerate(net.masks):
                refined = mask & classical_pixels
                if int(refined.count_nonzero()) >= self.min_agreement * int(mask.count_nonzero()):
                    masks[i] = refined
        covered = masks.any(0)
        extra = torch.tensor(
            [
                int((m & covered).count_nonzero()) < self.min_cover * int(m.count_nonzero())
                for m in cls.masks
            ],
            dtype=torch.bool,
            device=cls.masks.device,
        )
        added = torch.full_like(cls.scores[extra], self.classical_score)
        return Detections(
            boxes=torch.cat([net.boxes, cls.boxes[extra]]),
            masks=torch.cat([masks, cls.masks[extra]]),
            scores=torch.cat([net.scores, added]),
            labels=torch.cat([net.labels, cls.labels[extra]]),
        )
