"""The feature half of a handcrafted baseline: which features, from which masks, computed how.

Private module behind :mod:`leukemia_wbc.models.handcrafted`: :class:`HandcraftedFeatures` is the
base of :class:`~leukemia_wbc.models.HandcraftedSVM` (which adds the classifier) and computes a
baseline's features from images or dataset samples, in this process or in parallel (joblib),
under a progress bar. A subclass measuring other features overrides :meth:`features` and
:meth:`dataset_features` and runs its jobs through :meth:`_run`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import joblib  # type: ignore[import-untyped]
import numpy as np
from tqdm.auto import tqdm

from ._handcrafted_features import (
    FEATURE_NAMES,
    Segmenter,
    dataset_sample_features,
    sample_features,
)
from .segmenter import resolve_segmenter

if TYPE_CHECKING:
    from ..data.base import WBCDataset

__all__ = ["HandcraftedFeatures"]


class HandcraftedFeatures:
    """Handcrafted features of cells: the nucleus features of :data:`FEATURE_NAMES` by default.

    Args:
        n_jobs: Processes computing features (joblib; 1 computes in this process, -1 uses all
            cores).
        progress: Show a progress bar over images.
        on_empty: An empty nucleus mask raises (``"raise"``), or its features are measured on
            the whole image (``"image"``); each fallback is listed in :attr:`fallbacks_`.
        segmenter: Segments samples that have no nucleus mask: a classical method name
            (``"kmeans"``, ...), the path of a trained ``SegmentationModule`` checkpoint (see
            :func:`~leukemia_wbc.models.resolve_segmenter`) or a callable (see
            :data:`Segmenter`); without it such samples raise.
        mask_source: ``"batch"``: a sample's own nucleus mask when it has one, else the
            segmenter's; ``"segmenter"``: always the segmenter's, the data's masks (nucleus and
            cell) unused.

    Attributes:
        fallbacks_: Names of the samples whose empty mask fell back to the whole image, in the
            latest feature computation.

    Raises:
        ValueError: If ``n_jobs`` is 0, ``on_empty`` or ``mask_source`` is unknown, or
            ``mask_source="segmenter"`` has no segmenter.
    """

    #: Names of the features the model is fitted on (a subclass may measure others).
    feature_names: tuple[str, ...] = FEATURE_NAMES
    #: Whether the features are measured on the nucleus (masks or a segmenter needed).
    needs_nucleus: bool = True
    #: The shortcut cue the features alone capture (``"colour"``: whole-image colour statistics),
    #: or ``None`` for features of the cell itself. Reports present a shortcut model's score as
    #: how far a dataset is separable without looking at a cell.
    shortcut: str | None = None

    def __init__(
        self,
        *,
        n_jobs: int = 1,
        progress: bool = True,
        on_empty: Literal["raise", "image"] = "raise",
        segmenter: str | Segmenter | None = None,
        mask_source: Literal["batch", "segmenter"] = "batch",
    ) -> None:
        if n_jobs == 0:
            raise ValueError("n_jobs must be a positive count or negative (joblib), got 0")
        if on_empty not in ("raise", "image"):
            raise ValueError(f"on_empty must be 'raise' or 'image', got {on_empty!r}")
        if mask_source not in ("batch", "segmenter"):
            raise ValueError(
                f"argument 'mask_source': expected 'batch' or 'segmenter', got {mask_source!r}"
            )
        if mask_source == "segmenter" and segmenter is None:
            raise ValueError("argument 'mask_source': 'segmenter' needs a segmenter")
        self.mask_source = mask_source
        self.n_jobs, self.progress, self.on_empty = n_jobs, progress, on_empty
        #: The segmenter's spec as given (a name or path), recorded in the run's config.
        self.segmenter_spec = segmenter if isinstance(segmenter, str) else None
        self.segmenter: Segmenter | None = (
            resolve_segmenter(segmenter) if isinstance(segmenter, str) else segmenter
        )
        self.fallbacks_: list[str] = []

    def _run(
        self, jobs: list[tuple[Callable[..., Any], tuple[Any, ...]]], names: list[str]
    ) -> np.ndarray:
        """Run feature jobs (in parallel when ``n_jobs != 1``) under a progress bar.

        Args:
            jobs: ``(function, arguments)`` pairs, each returning ``(features, fell_back)``.
            names: The sample of each job (listed in :attr:`fallbacks_` when it fell back).

        Returns:
            ``(len(jobs), len(feature_names))`` ``float64`` array.
        """
        bar = tqdm(total=len(jobs), desc="handcrafted features", disable=not self.progress)
        results: list[tuple[np.ndarray, bool]] = []
        with bar:
            if self.n_jobs == 1:
                for fn, args in jobs:
                    results.append(fn(*args))
                    bar.update()
            else:
                chunk = 8 * max(1, abs(self.n_jobs) if self.n_jobs > 0 else os.cpu_count() or 1)
                with joblib.Parallel(n_jobs=self.n_jobs) as parallel:
                    for start in range(0, len(jobs), chunk):
                        part = jobs[start : start + chunk]
                        results += parallel(joblib.delayed(fn)(*args) for fn, args in part)
                        bar.update(len(part))
        self.fallbacks_ = [n for n, (_, fell) in zip(names, results, strict=True) if fell]
        if not results:
            return np.zeros((0, len(self.feature_names)))
        return np.stack([features for features, _ in results])

    def features(
        self,
        images: Sequence[Any],
        masks: Sequence[Any] | None,
        cell_masks: Sequence[Any] | None = None,
    ) -> np.ndarray:
        """Features of images given as arrays or tensors (see :func:`nucleus_features`).

        Args:
            images: RGB ``uint8`` images (a sequence, or a batch ``(N, 3, H, W)``).
            masks: Nucleus masks, one per image (``None`` entries, or ``None`` for all, need a
                ``segmenter``).
            cell_masks: Optional whole-cell masks, one per image.

        Returns:
            ``(N, len(FEATURE_NAMES))`` ``float64`` array.

        Raises:
            ValueError: If the numbers of images and masks differ, or a sample is invalid (see
                :func:`nucleus_features`) or has no mask and there is no segmenter.
        """
        n = len(images)
        if getattr(self, "mask_source", "batch") == "segmenter":  # older pickles: "batch"
            masks = cell_masks = None
        for what, seq in (("masks", masks), ("cell_masks", cell_masks)):
            if seq is not None and len(seq) != n:
                raise ValueError(f"{n} images but {len(seq)} {what}; expected one per image")
        fallback = self.on_empty == "image"
        names = [f"image {i}" for i in range(n)]
        jobs = [
            (
                sample_features,
                (
                    images[i],
                    None if masks is None else masks[i],
                    None if cell_masks is None else cell_masks[i],
                    names[i],
                    self.segmenter,
                    fallback,
                ),
            )
            for i in range(n)
        ]
        return self._run(jobs, names)

    def dataset_features(
        self, dataset: WBCDataset, indices: Iterable[int] | None = None
    ) -> np.ndarray:
        """Features of samples of a :class:`~leukemia_wbc.data.WBCDataset`.

        Args:
            dataset: A dataset whose samples hold ``image``, ``mask`` and optionally
                ``cell_mask``.
            indices: Sample positions (all samples when ``None``).

        Returns:
            ``(len(indices), len(FEATURE_NAMES))`` ``float64`` array.

        Raises:
            ValueError: If a sample cannot be read, has no nucleus mask (and there is no
                segmenter) or is otherwise invalid; the message names the sample.
        """
        idx = list(range(len(dataset))) if indices is None else [int(i) for i in indices]
        fallback = self.on_empty == "image"
        own = getattr(self, "mask_source", "batch") == "batch"  # older pickles: "batch"
        jobs = [(dataset_sample_features, (dataset, i, self.segmenter, fallback, own)) for i in idx]
        return self._run(jobs, [dataset.records[i].path for i in idx])
