"""Metrics from predicted probabilities, and summaries across folds with confidence intervals.

Every model the cross-validator runs (Lightning tasks and the SVM alike) is scored here, from
its out-of-fold probabilities, so that all are measured by one implementation. Undefined values
(the recall or AUC of a class with no sample in a fold) are ``NaN`` with a warning, never 0.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats
from sklearn.metrics import roc_auc_score, roc_curve

__all__ = [
    "METRIC_LABELS",
    "MIN_FOLDS_FOR_INTERVAL",
    "PER_CLASS_METRICS",
    "SUMMARY_METRICS",
    "RocCurve",
    "Summary",
    "classification_metrics",
    "confusion_matrix",
    "roc_curves",
    "summarize",
]

#: Overall metrics, in table order: accuracy, balanced accuracy (the mean of the per-class
#: recalls, which a majority-class guess keeps at ``1 / C``) and the macro averages.
SUMMARY_METRICS: tuple[str, ...] = (
    "accuracy",
    "balanced_accuracy",
    "precision",
    "recall",
    "f1",
    "auroc",
)
#: Metrics reported per class (``<metric>_<class>``).
PER_CLASS_METRICS: tuple[str, ...] = ("precision", "recall", "f1", "auroc")


#: How each metric is named in tables and figures.
METRIC_LABELS: dict[str, str] = {
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy",
    "precision": "Precision",
    "recall": "Recall",
    "f1": "F1",
    "auroc": "AUC",
}


#: With fewer folds than this, a 95 % t-interval over folds is flagged as rough in tables.
MIN_FOLDS_FOR_INTERVAL = 5


@dataclass(frozen=True)
class Summary:
    """Mean, standard deviation and 95 % confidence interval of a metric across folds.

    The interval is Student's t interval of the mean, ``mean +- t(0.975, n - 1) * std /
    sqrt(n)``, over the folds where the metric is defined.

    Attributes:
        mean: Mean over folds (``NaN`` when no fold defines it).
        std: Sample standard deviation (``ddof=1``; ``NaN`` with fewer than two values).
        ci_low: Lower end of the 95 % interval.
        ci_high: Upper end of the 95 % interval.
        n: Number of folds where the metric is defined.
    """

    mean: float
    std: float
    ci_low: float
    ci_high: float
    n: int

    def format(self, digits: int = 3) -> str:
        """``"mean +- std"`` (or ``"n/a"`` when undefined).

        Args:
            digits: Decimals.

        Returns:
            The text.
        """
        if math.isnan(self.mean):
            return "n/a"
        if math.isnan(self.std):
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


def summarize(
    values: Sequence[float] | np.ndarray, *, bounds: tuple[float, float] | None = (0.0, 1.0)
) -> Summary:
    """Summary of one metric's per-fold values (``NaN`` values are left out).

    Args:
        values: One value per fold.
        bounds: Range of the metric; the interval is clipped to it (every metric here is a
            rate in ``[0, 1]``). ``None`` leaves it unclipped.

    Returns:
        The :class:`Summary`.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    n = int(v.size)
    if n == 0:
        nan = float("nan")
        return Summary(nan, nan, nan, nan, 0)
    mean = float(v.mean())
    if n == 1:
        return Summary(mean, float("nan"), float("nan"), float("nan"), 1)
    std = float(v.std(ddof=1))
    half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return Summary(mean, std, low, high, n)


def _check(labels: np.ndarray, probs: np.ndarray, num_classes: int) -> None:
    if probs.ndim != 2 or probs.shape[1] != num_classes:
        raise ValueError(f"probabilities must have shape (N, {num_classes}), got {probs.shape}")
    if labels.shape != (probs.shape[0],):
        raise ValueError(f"{labels.shape[0]} labels for {probs.shape[0]} rows of probabilities")
    if labels.size == 0:
        raise ValueError("no predictions to score (empty label array)")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]"
        )


def confusion_matrix(
    labels: Sequence[int] | np.ndarray, preds: Sequence[int] | np.ndarray, num_classes: int
) -> np.ndarray:
    """Confusion counts: rows are true classes, columns predicted classes.

    Args:
        labels: True class indices.
        preds: Predicted class indices.
        num_classes: Number of classes.

    Returns:
        ``(num_classes, num_classes)`` ``int64`` counts.
    """
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(preds, dtype=np.int64)
    flat = np.bincount(y * num_classes + p, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def classification_metrics(
    labels: Sequence[int] | np.ndarray,
    probs: np.ndarray,
    classes: Sequence[str],
    *,
    where: str = "",
) -> dict[str, float]:
    """Accuracy, macro and per-class precision, recall, F1 and one-vs-rest ROC AUC.

    The precision of a class that is never predicted is undefined (``NaN`` in its per-class
    value); the macro precision counts it as 0, as scikit-learn's ``zero_division=0`` does, so
    that a model that predicts few classes is not flattered. The recall, F1 and AUC of a class
    without samples are undefined: ``NaN``, left out of the macro means, with a warning that
    names ``where``. ``balanced_accuracy`` is the mean recall over the classes present.

    Args:
        labels: ``(N,)`` true class indices.
        probs: ``(N, C)`` class probabilities.
        classes: The ``C`` class names (for per-class keys ``<metric>_<class>``).
        where: What is scored (e.g. ``"fold 2"``), for the warning.

    Returns:
        ``accuracy``, ``precision``, ``recall``, ``f1``, ``auroc`` and the per-class values.

    Raises:
        ValueError: Shapes that do not match, labels out of range, or no samples.
    """
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    n_cls = len(classes)
    _check(y, p, n_cls)
    cm = confusion_matrix(y, p.argmax(axis=1), n_cls)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    recall = _ratio(tp, support)
    macro_precision = np.where(support > 0, np.nan_to_num(_ratio(tp, predicted)), np.nan)
    precision = np.where((support > 0) & (predicted > 0), _ratio(tp, predicted), np.nan)
    f1 = np.where(
        support > 0,
        np.nan_to_num(_ratio(2 * macro_precision * recall, macro_precision + recall)),
        np.nan,
    )
    auroc = np.full(n_cls, np.nan)
    for c in range(n_cls):
        positive = y == c
        if 0 < positive.sum() < len(y):
            auroc[c] = roc_auc_score(positive, p[:, c])
    missing = [classes[c] for c in range(n_cls) if support[c] == 0]
    if missing:
        warnings.warn(
            f"{where or 'the scored set'} has no sample of class(es) {missing}: their recall, "
            "F1 and AUC are undefined (NaN) and left out of the macro averages",
            stacklevel=2,
        )
    out = {
        "accuracy": float(tp.sum() / len(y)),
        "balanced_accuracy": float(np.nanmean(recall)),
        "precision": float(np.nanmean(macro_precision)),
        "recall": float(np.nanmean(recall)),
        "f1": float(np.nanmean(f1)),
        "auroc": float(np.nanmean(auroc)) if not np.isnan(auroc).all() else float("nan"),
    }
    for name, values in zip(PER_CLASS_METRICS, (precision, recall, f1, auroc), strict=True):
        for c, cls in enumerate(classes):
            out[f"{name}_{cls}"] = float(values[c])
    return out


@dataclass(frozen=True)
class RocCurve:
    """One class's one-vs-rest ROC curve.

    Attributes:
        fpr: False-positive rates.
        tpr: True-positive rates.
        auc: Area under the curve.
    """

    fpr: np.ndarray
    tpr: np.ndarray
    auc: float


def roc_curves(
    labels: Sequence[int] | np.ndarray, probs: np.ndarray, classes: Sequence[str]
) -> dict[str, RocCurve]:
    """One-vs-rest ROC curve of every class that has both positive and negative samples.

    Args:
        labels: ``(N,)`` true class indices.
        probs: ``(N, C)`` class probabilities.
        classes: The class names.

    Returns:
        Class name to :class:`RocCurve` (classes without samples are absent).

    Raises:
        ValueError: Shapes that do not match, labels out of range, or no samples.
    """
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    _check(y, p, len(classes))
    out: dict[str, RocCurve] = {}
    for c, cls in enumerate(classes):
        positive = y == c
        if 0 < positive.sum() < len(y):
            fpr, tpr, _ = roc_curve(positive, p[:, c])
            out[cls] = RocCurve(fpr, tpr, float(roc_auc_score(positive, p[:, c])))
    return out
