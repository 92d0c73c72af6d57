"""The colour-shortcut baseline: a classifier on whole-image colour statistics, nothing else.

Blood-cell classifiers can lean on stain and camera differences instead of morphology. This
baseline sees only the distribution of colours of the whole image (no segmentation, no shape,
no texture): the mean, spread and 5th / 50th / 95th percentiles of each RGB and HSV channel.
Run under the same splits as the real models (it is a
:class:`~leukemia_wbc.models.HandcraftedSVM`, so the
:class:`~leukemia_wbc.experiments.CrossValidator` takes it as it takes the SVM baseline), its
score tells how much of a dataset is separable without looking at a cell.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.colors import rgb_to_hsv

from ..data.base import WBCDataset
from .handcrafted import HandcraftedSVM

__all__ = ["COLOUR_FEATURE_NAMES", "ColourShortcutBaseline", "colour_statistics"]

_STATS = ("mean", "std", "p5", "p50", "p95")
#: Names of the features, in order: ``<channel>_<statistic>``.
COLOUR_FEATURE_NAMES: tuple[str, ...] = tuple(
    f"{channel}_{stat}" for channel in ("r", "g", "b", "h", "s", "v") for stat in _STATS
)


def colour_statistics(image: Any) -> np.ndarray:
    """Colour statistics of one whole image.

    Args:
        image: RGB ``uint8`` as a tensor ``(3, H, W)`` or an array ``(H, W, 3)``.

    Returns:
        ``float64`` ``(len(COLOUR_FEATURE_NAMES),)``, channels scaled to ``[0, 1]``.

    Raises:
        ValueError: Not an RGB image.
    """
    arr = image.permute(1, 2, 0).cpu().numpy() if isinstance(image, torch.Tensor) else image
    arr = np.asarray(arr)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3) or (3, H, W), got {arr.shape}")
    rgb = arr.reshape(-1, 3).astype(np.float64) / 255.0
    pixels = np.concatenate([rgb, rgb_to_hsv(rgb)], axis=1)
    stats = [
        pixels.mean(0),
        pixels.std(0),
        *np.percentile(pixels, [5, 50, 95], axis=0),
    ]
    return np.stack(stats, axis=1).reshape(-1)


def _one(image: Any, name: str) -> tuple[np.ndarray, bool]:
    try:
        return colour_statistics(image), False
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from err


def _from_dataset(dataset: WBCDataset, index: int) -> tuple[np.ndarray, bool]:
    path = dataset.records[index].path
    sample = dataset[index]
    if sample is None:  # a dataset with on_error="skip" could not read it
        raise ValueError(f"{path}: the image could not be read")
    return _one(sample["image"], path)


class ColourShortcutBaseline(HandcraftedSVM):
    """An SVM on whole-image colour statistics (see the module docstring).

    Everything but the features is :class:`~leukemia_wbc.models.HandcraftedSVM`'s: the
    standardisation, the RBF SVM with calibrated probabilities, ``fit_dataset`` /
    ``predict_proba_dataset`` for the cross-validator, ``save`` and ``load``. Masks are not
    used.

    Args:
        C: SVM regularisation.
        kernel: SVM kernel.
        gamma: RBF kernel coefficient.
        calibration_folds: Folds of the probability calibration.
        seed: Seed of the SVM and of the calibration folds.
        progress: Show a progress bar over images.
    """

    feature_names = COLOUR_FEATURE_NAMES
    needs_nucleus = False
    shortcut = "colour"

    def __init__(
        self,
        *,
        C: float = 1.0,
        kernel: Any = "rbf",
        gamma: Any = "scale",
        calibration_folds: int = 5,
        seed: int = 0,
        progress: bool = True,
    ) -> None:
        super().__init__(C=C, kernel=kernel, gamma=gamma, calibration_folds=calibration_folds,
                         seed=seed, progress=progress, on_empty="image")  # fmt: skip

    def features(
        self,
        images: Sequence[Any],
        masks: Sequence[Any] | None = None,
        cell_masks: Sequence[Any] | None = None,
    ) -> np.ndarray:
        """Colour statistics of images given as arrays or tensors (masks are ignored).

        Args:
            images: RGB ``uint8`` images (a sequence, or a batch ``(N, 3, H, W)``).
            masks: Ignored.
            cell_masks: Ignored.

        Returns:
            ``(N, len(COLOUR_FEATURE_NAMES))`` ``float64`` array.
        """
        names = [f"image {i}" for i in range(len(images))]
        return self._run([(_one, (images[i], names[i])) for i in range(len(images))], names)

    def dataset_features(
        self, dataset: WBCDataset, indices: Iterable[int] | None = None
    ) -> np.ndarray:
        """Colour statistics of samples of a dataset.

        Args:
            dataset: Any :class:`~leukemia_wbc.data.WBCDataset` (no masks needed).
            indices: Sample positions (all samples when ``None``).

        Returns:
            ``(len(indices), len(COLOUR_FEATURE_NAMES))`` ``float64`` array.
        """
        idx = list(range(len(dataset))) if indices is None else [int(i) for i in indices]
        jobs = [(_from_dataset, (dataset, i)) for i in idx]
        return self._run(jobs, [dataset.records[i].path for i in idx])
