"""Handcrafted nucleus features and the SVM baseline of the paper.

:func:`nucleus_features` measures, on one image and its nucleus mask, the shape, colour and
texture features listed in :data:`FEATURE_NAMES`; :class:`HandcraftedSVM` standardises them and
fits a scikit-learn ``SVC`` with probability outputs. Its ``fit_dataset`` /
``predict_proba_dataset`` take a :class:`~leukemia_wbc.data.WBCDataset` and sample indices, the
interface the cross-validator drives the deep models with, so all run under identical splits.
How the features are computed (masks or segmenter, in parallel, under a progress bar) is the
job of its base, ``HandcraftedFeatures``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from ._feature_extraction import HandcraftedFeatures
from ._handcrafted_features import FEATURE_NAMES, Segmenter, nucleus_features
from ._svm_calibration import calibration_folds, fitted_folds, softmax_scores
from ._svm_file import read_baseline, write_baseline

if TYPE_CHECKING:
    from ..data.base import WBCDataset

__all__ = ["FEATURE_NAMES", "HandcraftedSVM", "Segmenter", "nucleus_features"]


class HandcraftedSVM(HandcraftedFeatures):
    """SVM on handcrafted nucleus features: the classical baseline of the paper.

    Features (:data:`FEATURE_NAMES`) go through a scikit-learn ``Pipeline`` of
    ``StandardScaler`` and ``SVC(class_weight="balanced")`` wrapped in Platt scaling
    (``CalibratedClassifierCV(method="sigmoid", ensemble=False)``, stratified folds seeded by
    ``seed``), which gives class probabilities (scikit-learn 1.9 deprecates
    ``SVC(probability=True)`` in its favour).

    Small classes: the calibration needs every class in every calibration fold, so a class
    with fewer training samples than ``calibration_folds`` lowers the number of folds to its
    count, and a class with fewer than 3 turns calibration off (a sigmoid fitted on two
    samples can invert the class's ranking; measured on BCCD's basophils): the
    probabilities are then a softmax of the SVM's decision values (uncalibrated, but ranked
    as the SVM ranks). Either case logs a warning naming the class; :attr:`calibration_`
    says what the fit used.

    Args:
        C: SVM regularisation parameter.
        kernel: SVM kernel.
        gamma: RBF kernel coefficient (``"scale"``, ``"auto"`` or a float).
        calibration_folds: Folds of the probability calibration (fewer when a class has fewer
            training samples; none, calibration off, when a class has fewer than 3).
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
        calibration_: Calibration folds the fit used: ``calibration_folds``, fewer for a
            small class, or 0 (calibration off: a class had fewer than 3 training samples).
        fallbacks_: Names of the samples whose empty mask fell back to the whole image, in the
            latest feature computation.

    Raises:
        ValueError: If ``calibration_folds`` < 2, ``n_jobs`` is 0, ``on_empty`` or
            ``mask_source`` is unknown, or ``mask_source="segmenter"`` has no segmenter.
    """

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
        super().__init__(n_jobs=n_jobs, progress=progress, on_empty=on_empty,
                         segmenter=segmenter, mask_source=mask_source)  # fmt: skip
        self.C, self.kernel, self.gamma = C, kernel, gamma
        self.calibration_folds, self.seed = calibration_folds, seed
        self.classes_: np.ndarray | None = None
        self.pipeline_: Pipeline | None = None

    # -- fit and predict ---------------------------------------------------------------------
    def fit_features(
        self,
        features: np.ndarray,
        labels: Sequence[int] | np.ndarray,
        *,
        class_names: Sequence[str] | None = None,
    ) -> HandcraftedSVM:
        """Fit the scaler and the calibrated SVM on precomputed features.

        A class with fewer samples than ``calibration_folds`` lowers the calibration folds
        to its count; one with fewer than 3 turns calibration off (see the class docstring);
        both log a warning.

        Args:
            features: ``(N, len(FEATURE_NAMES))`` array from :meth:`features`.
            labels: ``N`` integer class labels.
            class_names: Names of the class indices, used in the warnings (default: the
                indices).

        Returns:
            ``self``.

        Raises:
            ValueError: If shapes do not match, labels are negative, or there are fewer than
                two classes.
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
        if len(classes) < 2:
            raise ValueError(
                "the SVM needs training samples of at least two classes, got counts "
                f"{dict(zip(classes.tolist(), counts.tolist(), strict=True))}"
            )
        svm = SVC(
            C=self.C,
            kernel=self.kernel,
            gamma=self.gamma,
            class_weight="balanced",
            random_state=self.seed,
        )
        n_folds = calibration_folds(
            type(self).__name__, self.calibration_folds, classes, counts, class_names
        )
        final: SVC | CalibratedClassifierCV = svm
        if n_folds:
            folds = StratifiedKFold(n_folds, shuffle=True, random_state=self.seed)
            final = CalibratedClassifierCV(svm, method="sigmoid", cv=folds, ensemble=False)
        self.pipeline_ = Pipeline([("scale", StandardScaler()), ("svm", final)]).fit(x, y)
        self.classes_ = classes
        return self

    @property
    def calibration_(self) -> int | None:
        """Calibration folds of the fit (0: calibration off; ``None`` before fitting)."""
        return fitted_folds(self.pipeline_)

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
        if hasattr(self.pipeline_, "predict_proba"):
            proba = np.asarray(self.pipeline_.predict_proba(x), dtype=np.float64)
        else:  # calibration off (a class had fewer than 3 training samples)
            proba = softmax_scores(self.pipeline_.decision_function(x))
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
        return self.fit_features(
            self.dataset_features(dataset, idx), dataset.labels[idx], class_names=dataset.classes
        )

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
        """Write the model, its segmenter included, in the library's safe format (no pickle).

        The file (written atomically) holds the class name, the constructor arguments and the
        fitted classes as plain values, the segmenter as plain values and tensors (a classical
        method or a U-Net; another callable is not stored and is given again to :meth:`load`),
        and the fitted scikit-learn pipeline in skops' format.

        Args:
            path: Output file (``.svm.pt`` by convention).

        Raises:
            ValueError: A constructor argument of a subclass that is not kept as an attribute
                of the same name, or is not plain data.
        """
        write_baseline(self, path)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        segmenter: str | Segmenter | None = None,
        trust_pickle: bool = False,
    ) -> HandcraftedSVM:
        """Read a model written by :meth:`save`, without unpickling anything.

        The class the file names is looked up among ``HandcraftedSVM`` and the subclasses the
        running program defines (never imported), the file is read with
        ``torch.load(..., weights_only=True)`` and the estimator with skops, trusting an
        explicit list of scikit-learn types. A joblib pickle written by an older version is
        refused unless ``trust_pickle``.

        Args:
            path: File written by :meth:`save`.
            segmenter: Replaces the saved segmenter (as the constructor's ``segmenter``); needed
                when the model's segmenter was a callable the file cannot store.
            trust_pickle: Unpickle a ``.joblib`` file an older version wrote (with a warning).
                Unpickling runs any code the file holds: only for files you wrote yourself;
                save the model again to convert it.

        Returns:
            The model (of the class the file names: ``cls`` or a subclass).

        Raises:
            FileNotFoundError: If ``path`` does not exist.
            ValueError: If the file is not one :meth:`save` writes, a pickle without
                ``trust_pickle``, of a class this program does not define or that is not a
                ``cls``, of a newer format, or holds estimator types the library does not load.
        """
        return read_baseline(
            path, cls, root=HandcraftedSVM, segmenter=segmenter, trust_pickle=trust_pickle
        )
