"""Handcrafted nucleus features: shape, colour and GLCM texture of one cell's nucleus.

Private module behind :mod:`leukemia_wbc.models.handcrafted`, which re-exports its public names.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import skimage.feature
import skimage.filters
import skimage.measure
import skimage.morphology
import torch
from scipy import ndimage

if TYPE_CHECKING:
    from ..data.base import WBCDataset

__all__ = [
    "FEATURE_NAMES",
    "Segmenter",
    "dataset_sample_features",
    "nucleus_features",
    "sample_features",
]

_SHAPE = (
    "nucleus_area",
    "nucleus_perimeter",
    "nucleus_circularity",
    "nucleus_eccentricity",
    "nucleus_solidity",
    "nucleus_components",
    "nucleus_cell_ratio",
)
_COLOUR = tuple(
    f"{region}_{stat}_{channel}"
    for region in ("nucleus", "cytoplasm")
    for stat in ("mean", "std")
    for channel in "rgb"
)
_TEXTURE = ("glcm_contrast", "glcm_homogeneity", "glcm_energy", "glcm_correlation")

#: Names of the features :func:`nucleus_features` returns, in order:
#:
#: - ``nucleus_area`` (pixels), ``nucleus_perimeter`` (pixels, Crofton estimate),
#:   ``nucleus_circularity`` (``4 pi area / perimeter^2``; about 1 for a disc),
#:   ``nucleus_eccentricity`` (of the ellipse with the same second moments; 0 for a disc) and
#:   ``nucleus_solidity`` (area / convex-hull area), all of the largest nucleus component;
#: - ``nucleus_components``: number of nucleus components with at least 10 % of the largest's
#:   area (lobes of a segmented neutrophil);
#: - ``nucleus_cell_ratio``: all nucleus pixels over the cell's pixels;
#: - ``{nucleus,cytoplasm}_{mean,std}_{r,g,b}``: colour statistics in ``[0, 1]``;
#: - ``glcm_{contrast,homogeneity,energy,correlation}``: grey-level co-occurrence texture of the
#:   largest nucleus component (32 grey levels, distance 1, angles 0, 45, 90 and 135 degrees
#:   averaged, pairs leaving the nucleus excluded).
FEATURE_NAMES: tuple[str, ...] = _SHAPE + _COLOUR + _TEXTURE

_GLCM_LEVELS = 32
_GLCM_ANGLES = (0.0, math.pi / 4, math.pi / 2, 3 * math.pi / 4)
_MIN_LOBE_SHARE = 0.1
_RING_RADIUS = 3

#: scikit-image ships ``py.typed`` but leaves most functions unannotated; call it through ``Any``.
_sk: Any = skimage


def as_hwc(image: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    """An RGB ``uint8`` image as a ``(H, W, 3)`` array (tensors are read as ``(3, H, W)``)."""
    if isinstance(image, torch.Tensor):
        array = image.detach().cpu().numpy()
        if array.ndim == 3 and array.shape[0] == 3:
            array = array.transpose(1, 2, 0)
    else:
        array = np.asarray(image)
        if array.ndim == 3 and array.shape[-1] != 3 and array.shape[0] == 3:
            array = array.transpose(1, 2, 0)
    if array.ndim != 3 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ValueError(
            f"{name}: image must be RGB uint8 of shape (3, H, W) or (H, W, 3), got "
            f"{array.dtype} of shape {tuple(np.shape(image))}"
        )
    return np.ascontiguousarray(array)


def as_mask(mask: np.ndarray | torch.Tensor, shape: tuple[int, int], what: str) -> np.ndarray:
    """A mask of shape ``(H, W)`` or ``(1, H, W)`` as a boolean ``(H, W)`` array."""
    array = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.shape != shape:
        raise ValueError(
            f"{what} must have the image's size {shape} (as (H, W) or (1, H, W)), got shape "
            f"{tuple(np.shape(mask))}"
        )
    return array > 0


def _glcm(grey: np.ndarray, region: np.ndarray) -> list[float]:
    """GLCM contrast, homogeneity, energy and correlation of ``grey`` inside ``region``."""
    rows, cols = np.nonzero(region)
    box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    # Levels 1..L-1 inside the region, 0 outside; pairs that touch level 0 are dropped.
    quantised = 1 + (grey[box].astype(np.int64) * (_GLCM_LEVELS - 1)) // 256
    quantised = np.where(region[box], quantised, 0).astype(np.uint8)
    matrix = _sk.feature.graycomatrix(
        quantised, [1], _GLCM_ANGLES, levels=_GLCM_LEVELS, symmetric=True
    )
    matrix = matrix[1:, 1:].astype(np.float64)
    totals = matrix.sum(axis=(0, 1))  # (distances, angles)
    keep = totals[0] > 0
    if not keep.any():  # a single pixel has no pairs: the values of a constant region
        return [0.0, 1.0, 1.0, 1.0]
    matrix = matrix[:, :, :, keep] / totals[:, keep]
    props = ("contrast", "homogeneity", "energy", "correlation")
    return [float(np.mean(_sk.feature.graycoprops(matrix, prop))) for prop in props]


def _cell_region(image: np.ndarray, nucleus: np.ndarray, largest: np.ndarray) -> np.ndarray:
    """The cell without a cell mask: the dark foreground component holding the nucleus."""
    grey = image.mean(axis=2)
    if grey.min() == grey.max():
        return np.array(nucleus, dtype=bool)
    foreground = (grey < _sk.filters.threshold_otsu(grey)) | nucleus
    components = np.asarray(_sk.measure.label(foreground, connectivity=2))
    ids = np.unique(components[largest])
    return np.asarray(np.isin(components, ids[ids > 0]) | nucleus, dtype=bool)


def nucleus_features(
    image: np.ndarray | torch.Tensor,
    nucleus_mask: np.ndarray | torch.Tensor,
    cell_mask: np.ndarray | torch.Tensor | None = None,
    *,
    name: str = "image",
) -> np.ndarray:
    """Shape, colour and GLCM texture features of one cell's nucleus (see :data:`FEATURE_NAMES`).

    The cell is ``cell_mask`` (joined with the nucleus) when given; otherwise it is estimated as
    the connected component, darker than an Otsu threshold on the grey image, that holds the
    largest nucleus component. The cytoplasm is the cell minus the nucleus; when that is empty
    (the nucleus fills the cell), a ring of 3 pixels around the nucleus stands in for it, and when
    the nucleus covers the whole image, the nucleus itself.

    Args:
        image: RGB ``uint8`` image, ``(3, H, W)`` or ``(H, W, 3)`` (tensors are ``(3, H, W)``).
        nucleus_mask: Nucleus mask ``(H, W)`` or ``(1, H, W)``; non-zero is nucleus.
        cell_mask: Optional whole-cell mask of the same form.
        name: What to call the sample in error messages (e.g. its path).

    Returns:
        A finite ``float64`` vector of ``len(FEATURE_NAMES)`` features.

    Raises:
        ValueError: If the image is not RGB ``uint8``, a mask has another size than the image,
            or the nucleus mask is empty (no features can be measured; segment the nucleus first).
    """
    rgb = as_hwc(image, name)
    shape = (rgb.shape[0], rgb.shape[1])
    nucleus = as_mask(nucleus_mask, shape, f"{name}: nucleus mask")
    if not nucleus.any():
        raise ValueError(
            f"{name}: the nucleus mask is empty; nucleus features need at least one nucleus pixel"
        )
    components = np.asarray(_sk.measure.label(nucleus, connectivity=2))
    regions = sorted(_sk.measure.regionprops(components), key=lambda r: r.area, reverse=True)
    main = regions[0]
    largest = components == main.label
    lobes = sum(r.area >= _MIN_LOBE_SHARE * main.area for r in regions)
    if cell_mask is not None:
        cell = as_mask(cell_mask, shape, f"{name}: cell mask") | nucleus
    else:
        cell = _cell_region(rgb, nucleus, largest)
    cytoplasm = cell & ~nucleus
    if not cytoplasm.any():
        cytoplasm = (
            ndimage.binary_dilation(nucleus, structure=_sk.morphology.disk(_RING_RADIUS)) & ~nucleus
        )
        if not cytoplasm.any():  # the nucleus covers the whole image
            cytoplasm = nucleus
    area = float(main.area)
    perimeter = float(main.perimeter_crofton)
    if not math.isfinite(perimeter) or perimeter <= 0:
        perimeter = float(main.perimeter)
    circularity = 4 * math.pi * area / perimeter**2 if perimeter > 0 else 1.0
    pixels = rgb.astype(np.float64) / 255.0
    colour: list[float] = []
    for region in (nucleus, cytoplasm):
        values = pixels[region]
        colour += [*values.mean(axis=0), *values.std(axis=0)]
    grey = np.round(rgb.astype(np.float64) @ np.array([0.2125, 0.7154, 0.0721])).astype(np.uint8)
    features = np.array(
        [
            area,
            perimeter,
            circularity,
            float(main.eccentricity),
            float(main.solidity),
            float(lobes),
            float(nucleus.sum()) / float(cell.sum()),
            *colour,
            *_glcm(grey, largest),
        ],
        dtype=np.float64,
    )
    if not np.isfinite(features).all():  # defensive: every branch above is finite by design
        bad = [n for n, v in zip(FEATURE_NAMES, features, strict=True) if not math.isfinite(v)]
        raise ValueError(f"{name}: non-finite features {bad}")
    return features


#: A nucleus segmenter for samples without a mask: takes a ``(1, 3, H, W)`` ``uint8`` tensor and
#: returns a mask with ``H * W`` elements per sample (non-zero is nucleus).
Segmenter = Callable[[torch.Tensor], torch.Tensor]


def sample_features(
    image: Any, mask: Any, cell_mask: Any, name: str, segmenter: Segmenter | None, fallback: bool
) -> tuple[np.ndarray, bool]:
    """Features of one sample, segmenting it first when it has no mask.

    Args:
        image: RGB ``uint8`` image (see :func:`nucleus_features`).
        mask: Nucleus mask, or ``None`` to segment the image with ``segmenter``.
        cell_mask: Optional whole-cell mask.
        name: The sample's name in error messages.
        segmenter: Nucleus segmenter for a missing mask, or ``None``.
        fallback: Measure an empty nucleus mask's image as a whole instead of raising.

    Returns:
        The feature vector and whether the whole-image fallback was used.

    Raises:
        ValueError: If the sample has no mask and there is no segmenter, or is invalid (see
            :func:`nucleus_features`).
    """
    if mask is None:
        if segmenter is None:
            raise ValueError(
                f"{name} has no nucleus mask: the handcrafted features measure the nucleus, so "
                "they need masks (a dataset with masks) or a segmenter (segmenter=, e.g. a "
                "trained SegmentationModule or the classical nucleus segmenter)"
            )
        batch = torch.as_tensor(np.asarray(as_hwc(image, name)).transpose(2, 0, 1))[None]
        with torch.no_grad():
            mask = segmenter(batch).reshape(batch.shape[-2:])
    if fallback:
        shape = as_hwc(image, name).shape[:2]
        if not as_mask(mask, shape, f"{name}: nucleus mask").any():
            mask = np.ones(shape, dtype=bool)  # documented fallback: the whole image
            return nucleus_features(image, mask, None, name=name), True
    return nucleus_features(image, mask, cell_mask, name=name), False


def dataset_sample_features(
    dataset: WBCDataset,
    index: int,
    segmenter: Segmenter | None,
    fallback: bool,
    own_masks: bool = True,
) -> tuple[np.ndarray, bool]:
    """Load sample ``index`` of ``dataset`` and compute its features (see :func:`sample_features`).

    Args:
        dataset: The dataset.
        index: Sample position.
        segmenter: Nucleus segmenter for a sample without a mask, or ``None``.
        fallback: Measure an empty nucleus mask's image as a whole instead of raising.
        own_masks: Use the sample's own masks; ``False``: the segmenter's only.

    Returns:
        The feature vector and whether the whole-image fallback was used.

    Raises:
        ValueError: If the sample could not be read, has no mask and there is no segmenter, or
            is invalid; the message names the sample.
    """
    sample = dataset[index]
    name = f"sample {index} ({dataset.records[index].path}) of {type(dataset).__name__}"
    if sample is None:
        raise ValueError(f"{name} could not be read (the dataset skipped it)")
    mask, cell_mask = (sample.get("mask"), sample.get("cell_mask")) if own_masks else (None, None)
    return sample_features(sample["image"], mask, cell_mask, name, segmenter, fallback)
