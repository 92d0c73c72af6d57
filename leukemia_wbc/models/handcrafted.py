"""Handcrafted nucleus features and the SVM baseline of the paper.

:func:`nucleus_features` measures, on one image and its nucleus mask, the shape, colour and
texture features listed in :data:`FEATURE_NAMES`; :class:`HandcraftedSVM` standardises them and
fits a scikit-learn ``SVC`` with probability outputs. Its ``fit_dataset`` /
``predict_proba_dataset`` take a :class:`~leukemia_wbc.data.WBCDataset` and sample indices, the
interface the cross-validator drives the deep models with, so all run under identical splits.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import joblib  # type: ignore[import-untyped]
import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from tqdm.auto import tqdm

from ._handcrafted_features import (
    FEATURE_NAMES,
    Segmenter,
    dataset_sample_features,
    nucleus_features,
    sample_features,
)
from .segmenter import resolve_segmenter

if TYPE_CHECKING:
    from ..data.base import WBCDataset

__all__ = ["FEATURE_NAMES", "HandcraftedSVM", "Segmenter", "nucleus_features"]


class HandcraftedSVM:
    """SVM on handcrafted nucleus features: the classical baseline of the paper.

    Features (:data:`FEATURE_NAMES`) go through a scikit-learn ``Pipeline`` of
    ``StandardScaler`` and ``SVC(class_weight="balanced")`` wrapped in Platt scaling
    (``CalibratedClassifierCV(method="sigmoid", ensemble=False)``, stratified folds seeded by
    ``seed``), which gives class probabilities (scikit-learn 1.9 deprecates
    ``SVC(probability=True)`` in its favour).

    Args:
        C: SVM regularisation parameter.
        kernel: SVM kernel.
        gamma: RBF kernel coefficient (``"scale"``, ``"auto"`` or a float).
        calibration_folds: Folds of the probability calibration (fewer when a class has fewer
            training samples).
        seed: Seed of the SVM and of the calibration folds.
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
            cell) unused, as in the paper's chain (a trained U-Net's masks in training and at
            test, on a dataset that has expert masks too).

    Attributes:
        classes_: Class labels seen in training; the columns of :meth:`predict_proba`.
        pipeline_: The fitted scikit-learn pipeline.
        fallbacks_: Names of the samples whose empty mask fell back to the whole image, in the
            latest feature computation.

    Raises:
        ValueError: If ``calibration_folds`` < 2, ``n_jobs`` is 0, ``on_empty`` or
            ``mask_source`` is unknown, or ``mask_source="segmenter"`` has no segmenter.
    """

    #: Names of the features the model is fitted on (a subclass may measure others).
    feature_names: tuple[str, ...] = FEATURE_NAMES
    #: Whether the features are measured on the nucleus (masks or a segmenter needed).
    needs_nucleus: bool = True

    def __init__(
        self,
        *,
        C: float = 1.0,
        kernel: Literal["linear", "poly", "rbf", "sigmoid"] = "rbf",
        gamma: Literal["scale", "auto"] | float = "scale",
        calibration_folds: int = 5,
        seed: int = 0,
        n_jobs: int = 1,
        progress: bool = True,
        on_empty: Literal["raise", "image"] = "raise",
        segmenter: str | Segmenter | None = None,
        mask_source: Literal["batch", "segmenter"] = "batch",
    ) -> None:
        if calibration_folds < 2:
            raise ValueError(f"calibration_folds must be >= 2, got {calibration_folds}")
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
        self.C, self.kernel, self.gamma = C, kernel, gamma
        self.calibration_folds, self.seed, self.n_jobs = calibration_folds, seed, n_jobs
        self.progress, self.on_empty = progress, on_empty
        #: The segmenter's spec as given (a name or path), recorded in the run's config.
        self.segmenter_spec = segmenter if isinstance(segmenter, str) else None
        self.segmenter: Segmenter | None = (
            resolve_segmenter(segmenter) if isinstance(segmenter, str) else segmenter
        )
        self.classes_: np.ndarray | None = None
        self.pipeline_: Pipeline | None = None
        self.fallbacks_: list[str] = []

    # -- features ----------------------------------------------------------------------------
    def _run(
        self, jobs: list[tuple[Callable[..., Any], tuple[Any, ...]]], names: list[str]
    ) -> np.ndarray:
        """Run feature jobs (in parallel when ``n_jobs != 1``) under a progress bar."""
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

    # -- fit and predict ---------------------------------------------------------------------
    def fit_features(
        self, features: np.ndarray, labels: Sequence[int] | np.ndarray
    ) -> HandcraftedSVM:
        """Fit the scaler and the calibrated SVM on precomputed features.

        Args:
            features: ``(N, len(FEATURE_NAMES))`` array from :meth:`features`.
            labels: ``N`` integer class labels.

        Returns:
            ``self``.

        Raises:
            ValueError: If shapes do not match, labels are negative, there are fewer than two
                classes, or a class has fewer than two samples.
        """
        x = np.asarray(features, dtype=np.float64)
        y = np.asarray(labels).astype(np.int64)
        if x.ndim != 2 or x.shape[1] != len(self.feature_names) or y.shape != (x.shape[0],):
            raise ValueError(
                f"expected features (N, {len(self.feature_names)}) and labels (N,), got "
                f"{x.shape} and {y.shape}"
            )
        if (y < 0).any():
            raise ValueError("labels must be class indices >= 0 (unlabelled samples cannot train)")
        classes, counts = np.unique(y, return_counts=True)
        if len(classes) < 2 or counts.min() < 2:
            raise ValueError(
                "the SVM needs at least two classes with at least two samples each, got "
                f"counts {dict(zip(classes.tolist(), counts.tolist(), strict=True))}"
            )
        folds = StratifiedKFold(
            min(self.calibration_folds, int(counts.min())), shuffle=True, random_state=self.seed
        )
        svm = SVC(
            C=self.C,
            kernel=self.kernel,
            gamma=self.gamma,
            class_weight="balanced",
            random_state=self.seed,
        )
        calibrated = CalibratedClassifierCV(svm, method="sigmoid", cv=folds, ensemble=False)
        self.pipeline_ = Pipeline([("scale", StandardScaler()), ("svm", calibrated)]).fit(x, y)
        self.classes_ = classes
        return self

    def predict_proba_features(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities from precomputed features.

        Args:
            features: ``(N, len(FEATURE_NAMES))`` array.

        Returns:
            ``(N, len(classes_))`` probabilities; rows sum to 1.

        Raises:
            RuntimeError: If the model has not been fitted.
            ValueError: If ``features`` has the wrong shape.
        """
        if self.pipeline_ is None:
            raise RuntimeError("HandcraftedSVM is not fitted: call fit() or fit_dataset() first")
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.feature_names):
            raise ValueError(f"expected features (N, {len(self.feature_names)}), got {x.shape}")
        proba = np.asarray(self.pipeline_.predict_proba(x), dtype=np.float64)
        normalised: np.ndarray = proba / proba.sum(axis=1, keepdims=True)
        return normalised

    def fit(
        self,
        images: Sequence[Any],
        masks: Sequence[Any] | None,
        labels: Sequence[int] | np.ndarray,
        cell_masks: Sequence[Any] | None = None,
    ) -> HandcraftedSVM:
        """Compute features of ``images`` and fit (see :meth:`features`, :meth:`fit_features`).

        Args:
            images: RGB ``uint8`` images.
            masks: Nucleus masks, one per image.
            labels: Class labels, one per image.
            cell_masks: Optional whole-cell masks.

        Returns:
            ``self``.

        Raises:
            ValueError: See :meth:`features` and :meth:`fit_features`.
        """
        return self.fit_features(self.features(images, masks, cell_masks), labels)

    def predict_proba(
        self,
        images: Sequence[Any],
        masks: Sequence[Any] | None,
        cell_masks: Sequence[Any] | None = None,
    ) -> np.ndarray:
        """Class probabilities of ``images``, columns in the order of :attr:`classes_`.

        Args:
            images: RGB ``uint8`` images.
            masks: Nucleus masks, one per image.
            cell_masks: Optional whole-cell masks.

        Returns:
            ``(N, len(classes_))`` probabilities; rows sum to 1.

        Raises:
            RuntimeError: If the model has not been fitted.
            ValueError: See :meth:`features`.
        """
        return self.predict_proba_features(self.features(images, masks, cell_masks))

    def predict(
        self,
        images: Sequence[Any],
        masks: Sequence[Any] | None,
        cell_masks: Sequence[Any] | None = None,
    ) -> np.ndarray:
        """Most probable class of each image (the arg-max of :meth:`predict_proba`).

        Args:
            images: RGB ``uint8`` images.
            masks: Nucleus masks, one per image.
            cell_masks: Optional whole-cell masks.

        Returns:
            ``(N,)`` class labels from :attr:`classes_`.

        Raises:
            RuntimeError: If the model has not been fitted.
            ValueError: See :meth:`features`.
        """
        proba = self.predict_proba(images, masks, cell_masks)
        assert self.classes_ is not None
        return np.asarray(self.classes_[proba.argmax(axis=1)])

    def fit_dataset(
        self, dataset: WBCDataset, indices: Iterable[int] | None = None
    ) -> HandcraftedSVM:
        """Fit on samples of a dataset (the cross-validator's interface).

        Args:
            dataset: A :class:`~leukemia_wbc.data.WBCDataset` with nucleus masks.
            indices: Training sample positions (all when ``None``).

        Returns:
            ``self``.

        Raises:
            ValueError: See :meth:`dataset_features` and :meth:`fit_features`.
        """
        idx = list(range(len(dataset))) if indices is None else [int(i) for i in indices]
        return self.fit_features(self.dataset_features(dataset, idx), dataset.labels[idx])

    def predict_proba_dataset(
        self, dataset: WBCDataset, indices: Iterable[int] | None = None
    ) -> np.ndarray:
        """Class probabilities of samples of a dataset, one column per dataset class.

        Args:
            dataset: A :class:`~leukemia_wbc.data.WBCDataset` with nucleus masks.
            indices: Sample positions (all when ``None``).

        Returns:
            ``(len(indices), dataset.num_classes)`` probabilities (0 for classes absent from
            training); rows sum to 1.

        Raises:
            RuntimeError: If the model has not been fitted.
            ValueError: See :meth:`dataset_features`, or if the model saw classes that the
                dataset does not have.
        """
        proba = self.predict_proba_features(self.dataset_features(dataset, indices))
        assert self.classes_ is not None
        if self.classes_.max() >= dataset.num_classes:
            raise ValueError(
                f"the model was trained on classes {self.classes_.tolist()}, but the dataset "
                f"has num_classes={dataset.num_classes}"
            )
        out = np.zeros((proba.shape[0], dataset.num_classes))
        out[:, self.classes_] = proba
        return out

    # -- persistence -------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the model, its segmenter included, with joblib (a pickle).

        Args:
            path: Output file.
        """
        joblib.dump(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> HandcraftedSVM:
        """Read a model written by :meth:`save`.

        Loading unpickles, which can run arbitrary code: load only files you trust.

        Args:
            path: File written by :meth:`save`.

        Returns:
            The model.

        Raises:
            FileNotFoundError: If ``path`` does not exist.
            ValueError: If the file holds something other than a :class:`HandcraftedSVM`.
        """
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"model file {path} not found (expected a HandcraftedSVM.save file)"
            )
        model = joblib.load(path)
        if not isinstance(model, cls):
            raise ValueError(f"{path} holds a {type(model).__name__}, expected a {cls.__name__}")
        return model
