"""Probability calibration of the SVM baseline when classes are small.

Private module behind :class:`~leukemia_wbc.models.HandcraftedSVM`: Platt calibration
(``CalibratedClassifierCV`` on stratified folds) needs every class in every calibration fold,
so the number of folds is lowered to the smallest class count, and calibration is turned off
when a class has fewer than :data:`MIN_SAMPLES` training samples; the probabilities are then a
softmax of the SVM's decision values.

Why 3: with 2 samples of a class, each calibration fold's SVM sees one, the held-out decision
values are unrepresentative and the class's sigmoid can invert its ranking. Measured on BCCD
(3-fold CV, 2 training basophils in folds 0 and 1): basophil AUC 0.017 and 0.147 calibrated
with 2 folds, 0.983 and 0.483 uncalibrated (macro AUC 0.770 and 0.764 against 0.968 and
0.834); with the training monocytes cut to 2 (9 draws), their AUC averaged 0.718 calibrated
(worst 0.318) against 0.843, and at 3 to 8 samples the two stayed within 0.04, without
inversion. On separable synthetic features (4 classes, one small; 20 draws) the small class's
ranking inverted (AUC < 0.5) when calibrated in 9 draws at 2 samples, 5 at 3, 2 at 4, 1 at 5
and 6, none at 8 and 10, and never uncalibrated; accuracy was the same either way. The risk
thus falls with the count rather than stopping at 3: 3 keeps the folds' calibration wherever
each calibration fold trains on at least 2 samples of every class.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.pipeline import Pipeline

__all__ = ["MIN_SAMPLES", "calibration_folds", "fitted_folds", "softmax_scores"]

#: Fewest training samples of every class for a calibrated fit (see the module docstring).
MIN_SAMPLES = 3

_log = logging.getLogger(__name__)


def calibration_folds(
    model: str,
    requested: int,
    classes: np.ndarray,
    counts: np.ndarray,
    names: Sequence[str] | None = None,
) -> int:
    """The calibration folds the training class counts allow, with a warning when fewer.

    Args:
        model: The model's name, for the warning.
        requested: The ``calibration_folds`` asked for.
        classes: The class indices seen in training.
        counts: Their training sample counts.
        names: Names of the class indices (default: the indices).

    Returns:
        ``requested`` when every class has that many samples, else the smallest count, or 0
        (calibration off) when a class has fewer than :data:`MIN_SAMPLES`.
    """
    smallest = int(counts.min())
    if smallest >= max(requested, MIN_SAMPLES):
        return requested
    off = smallest < MIN_SAMPLES
    limit = MIN_SAMPLES if off else requested  # the classes the warning names
    small = [
        (f"{names[c]!r}" if names is not None and c < len(names) else str(c), n)
        for c, n in zip(classes.tolist(), counts.tolist(), strict=True)
        if n < limit
    ]
    if len(small) == 1:
        name, n = small[0]
        what = f"{model}: class {name} has {n} training sample{'' if n == 1 else 's'}"
    else:
        what = (
            f"{model}: classes {', '.join(c for c, _ in small)} have "
            f"{', '.join(str(n) for _, n in small)} training samples"
        )
    if off:
        _log.warning(
            "%s; Platt calibration needs at least %d of every class (with fewer it can invert "
            "the class's ranking): calibration off, probabilities are a softmax of the SVM's "
            "decision values (uncalibrated)", what, MIN_SAMPLES,
        )  # fmt: skip
        return 0
    _log.warning(
        "%s, fewer than calibration_folds=%d: probabilities calibrated with %d folds",
        what, requested, smallest,
    )  # fmt: skip
    return smallest


def fitted_folds(pipeline: Pipeline | None) -> int | None:
    """The calibration folds a fitted pipeline used (0: calibration off; ``None``: unfitted)."""
    if pipeline is None:
        return None
    final = pipeline[-1]
    if isinstance(final, CalibratedClassifierCV):
        return int(final.cv.get_n_splits())
    return 0


def softmax_scores(scores: np.ndarray) -> np.ndarray:
    """Probabilities from an SVM's decision values: a softmax over classes.

    Args:
        scores: ``(N, C)`` one-vs-rest decision values, or ``(N,)`` signed distances of two
            classes (positive: the second class).

    Returns:
        ``(N, C)`` probabilities (``(N, 2)`` for two classes); rows sum to 1.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 1:
        s = np.stack([np.zeros_like(s), s], axis=1)
    e = np.exp(s - s.max(axis=1, keepdims=True))
    proba: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return proba
