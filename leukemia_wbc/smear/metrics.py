"""Smear-level metrics: blast detection against annotated centroids, and blast shares.

A detector is scored by matching its predicted blast centroids one-to-one to the annotated ones
within a radius (:func:`match_points`); :func:`evaluate_allidb1` does so over ALL-IDB1. The
share of blasts among counted cells comes with its Wilson interval (:func:`blast_share_interval`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.stats import norm
from tqdm.auto import tqdm

from ..data.allidb import ALLIDB1

__all__ = [
    "ACUTE_LEUKEMIA_BLAST_THRESHOLD",
    "ALLIDB1Evaluation",
    "ALLIDB1ImageResult",
    "PointMatch",
    "blast_share_interval",
    "evaluate_allidb1",
    "match_points",
]

#: WHO threshold for acute leukemia: at least 20 % blasts among the counted cells of blood or
#: marrow. Arber D. A. et al., "The 2016 revision to the World Health Organization
#: classification of myeloid neoplasms and acute leukemia", Blood 127(20), 2016, pp. 2391-2405.
ACUTE_LEUKEMIA_BLAST_THRESHOLD: float = 0.20


def _ratio(num: int, den: int, empty: float) -> float:
    """``num / den``, or ``empty`` when ``den`` is 0."""
    return num / den if den else empty


def _check_radius(radius: float) -> None:
    """Raise ``ValueError`` unless ``radius`` is a finite number > 0."""
    if not (isinstance(radius, int | float | np.number) and math.isfinite(radius) and radius > 0):
        raise ValueError(f"radius: expected a finite number > 0 (pixels), got {radius!r}")


def _points(points: Any, name: str) -> np.ndarray:
    """``points`` as a ``float64`` ``(N, 2)`` array; ``ValueError`` naming ``name`` otherwise."""
    arr = np.asarray(points)
    if arr.size == 0 and arr.ndim <= 2:
        return np.zeros((0, 2), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(
            f"{name}: expected an (N, 2) array of (x, y) points, got shape {arr.shape}"
        )
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"{name}: expected real (x, y) coordinates, got dtype {arr.dtype}")
    out = arr.astype(np.float64)
    if not np.isfinite(out).all():
        raise ValueError(f"{name}: expected finite coordinates, got NaN or infinity")
    return out


class _Scores:
    """Precision, recall and F1 from the ``(TP, FP, FN)`` that a subclass counts."""

    def _counts(self) -> tuple[int, int, int]:
        raise NotImplementedError

    @property
    def precision(self) -> float:
        """``TP / (TP + FP)``; 1.0 when nothing was predicted (nothing was claimed wrongly)."""
        tp, fp, _ = self._counts()
        return _ratio(tp, tp + fp, 1.0)

    @property
    def recall(self) -> float:
        """``TP / (TP + FN)``; 1.0 when there is no true point (nothing could be missed)."""
        tp, _, fn = self._counts()
        return _ratio(tp, tp + fn, 1.0)

    @property
    def f1(self) -> float:
        """Harmonic mean of :attr:`precision` and :attr:`recall` (0 when both are 0)."""
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r > 0 else 0.0


@dataclass(frozen=True)
class PointMatch(_Scores):
    """One-to-one matching of predicted points to true points.

    :attr:`precision` is 1.0 when there is no prediction and :attr:`recall` is 1.0 when there
    is no true point; :attr:`f1` is their harmonic mean (0 when both are 0).

    Attributes:
        pairs: ``int64`` ``(K, 2)`` array of ``(predicted index, true index)``, sorted by the
            predicted index; every pair lies within the matching radius.
        true_positives: Matched predictions, ``K``.
        false_positives: Predictions left unmatched.
        false_negatives: True points left unmatched.
    """

    pairs: np.ndarray
    true_positives: int
    false_positives: int
    false_negatives: int

    def _counts(self) -> tuple[int, int, int]:
        return self.true_positives, self.false_positives, self.false_negatives


def match_points(predicted: np.ndarray, truth: np.ndarray, radius: float) -> PointMatch:
    """Match predicted points to true points one-to-one within ``radius`` pixels.

    Among the one-to-one matchings whose pairs are at most ``radius`` apart (inclusive), the
    one with the most pairs, and among those the smallest total distance, is found exactly by
    :func:`scipy.optimize.linear_sum_assignment`; unlike greedy nearest-first matching, it
    never loses a match by taking a point another prediction needed.

    Args:
        predicted: ``(N, 2)`` predicted points ``(x, y)``; an empty array means none.
        truth: ``(M, 2)`` true points ``(x, y)`` in the same pixel frame.
        radius: Largest distance in pixels at which a prediction matches a true point; > 0.

    Returns:
        The pairs and the TP / FP / FN counts.

    Raises:
        ValueError: ``predicted`` or ``truth`` is not an ``(N, 2)`` array of finite real numbers
            (the message names the argument and the shape received), or ``radius`` is not > 0.
    """
    pred, true = _points(predicted, "predicted"), _points(truth, "truth")
    _check_radius(radius)
    pairs = np.zeros((0, 2), dtype=np.int64)
    if len(pred) and len(true):
        dist = np.hypot(pred[:, None, 0] - true[None, :, 0], pred[:, None, 1] - true[None, :, 1])
        allowed = dist <= radius
        # An allowed pair earns a bonus above the summed normalised distances (each <= 1) of
        # any matching, so more pairs always win; forbidden pairs cost 0 and are dropped below.
        cost = np.where(allowed, dist / radius - (min(dist.shape) + 2.0), 0.0)
        rows, cols = (np.asarray(a, dtype=np.int64) for a in linear_sum_assignment(cost))
        keep = allowed[rows, cols]
        pairs = np.stack([rows[keep], cols[keep]], axis=1)
    k = len(pairs)
    return PointMatch(pairs, k, len(pred) - k, len(true) - k)


def blast_share_interval(
    n_blast: int, n_cells: int, confidence: float = 0.95
) -> tuple[float, float, float]:
    """Share of blasts among counted cells, with its Wilson score interval.

    The Wilson interval (Wilson E. B., J. Am. Stat. Assoc. 22, 1927) keeps its coverage for
    small counts and shares near 0 or 1, where the normal (Wald) interval fails. Compare it
    with :data:`ACUTE_LEUKEMIA_BLAST_THRESHOLD` to tell whether a count is decisive.

    Args:
        n_blast: Number of blasts counted, ``0 <= n_blast <= n_cells``.
        n_cells: Number of cells counted, blasts included, ``>= 0``.
        confidence: Two-sided confidence level, strictly between 0 and 1.

    Returns:
        ``(share, low, high)``. With ``n_cells == 0`` the share is undefined: ``(nan, 0.0,
        1.0)``, the interval that excludes nothing.

    Raises:
        ValueError: A count is not an integer, ``n_cells < 0``, ``n_blast`` is outside
            ``[0, n_cells]``, or ``confidence`` is not in ``(0, 1)``.
    """
    for name, value in (("n_blast", n_blast), ("n_cells", n_cells)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ValueError(f"{name}: expected an integer count, got {value!r}")
    if n_cells < 0:
        raise ValueError(f"n_cells: expected a count >= 0, got {n_cells}")
    if not 0 <= n_blast <= n_cells:
        raise ValueError(f"n_blast: expected 0 <= n_blast <= n_cells = {n_cells}, got {n_blast}")
    if not (isinstance(confidence, int | float | np.floating) and 0 < confidence < 1):
        raise ValueError(f"confidence: expected a level strictly between 0 and 1, got {confidence}")
    if n_cells == 0:
        return math.nan, 0.0, 1.0
    n, share = int(n_cells), int(n_blast) / int(n_cells)
    z2 = float(norm.ppf(0.5 + confidence / 2)) ** 2
    centre = (share + z2 / (2 * n)) / (1 + z2 / n)
    half = math.sqrt(z2 * (share * (1 - share) / n + z2 / (4 * n * n))) / (1 + z2 / n)
    low = 0.0 if n_blast == 0 else max(0.0, centre - half)
    high = 1.0 if n_blast == n_cells else min(1.0, centre + half)
    return share, low, high


@dataclass(frozen=True)
class ALLIDB1ImageResult:
    """Detection result of one ALL-IDB1 smear.

    Attributes:
        stem: File stem, e.g. ``"Im001_1"``.
        path: Image file.
        label: 1 when the smear is annotated as holding blasts (``Y`` of ``ImNNN_Y``), else 0.
        n_true: Annotated blast centroids.
        n_predicted: Predicted blast centroids.
        true_positives: Predictions matched to an annotated blast.
        false_positives: Unmatched predictions.
        false_negatives: Unmatched annotated blasts.
        predicted_present: At least one blast was predicted.
    """

    stem: str
    path: str
    label: int
    n_true: int
    n_predicted: int
    true_positives: int
    false_positives: int
    false_negatives: int
    predicted_present: bool


@dataclass(frozen=True)
class ALLIDB1Evaluation(_Scores):
    """Blast detection scores over an ALL-IDB1 dataset.

    :attr:`precision`, :attr:`recall` and :attr:`f1` are pooled: the TP / FP / FN of all images
    are summed first (precision 1.0 without predictions, recall 1.0 without annotated blasts).
    Image-level scores compare "at least one blast predicted" with the label; each is ``NaN``
    when undefined (no image; no blast image for sensitivity; no blast-free one for specificity).

    Attributes:
        images: One result per image, in dataset order.
        radius: Matching radius in pixels.
    """

    images: tuple[ALLIDB1ImageResult, ...]
    radius: float

    def _counts(self) -> tuple[int, int, int]:
        return self.true_positives, self.false_positives, self.false_negatives

    @property
    def true_positives(self) -> int:
        """Matched predictions over all images."""
        return sum(r.true_positives for r in self.images)

    @property
    def false_positives(self) -> int:
        """Unmatched predictions over all images."""
        return sum(r.false_positives for r in self.images)

    @property
    def false_negatives(self) -> int:
        """Unmatched annotated blasts over all images."""
        return sum(r.false_negatives for r in self.images)

    @property
    def image_accuracy(self) -> float:
        """Share of images whose predicted presence of blasts equals the label (NaN: none)."""
        right = sum(r.predicted_present == bool(r.label) for r in self.images)
        return _ratio(right, len(self.images), math.nan)

    @property
    def image_sensitivity(self) -> float:
        """Share of blast images (label 1) predicted with blasts (NaN: no blast image)."""
        positives = [r.predicted_present for r in self.images if r.label]
        return _ratio(sum(positives), len(positives), math.nan)

    @property
    def image_specificity(self) -> float:
        """Share of blast-free images (label 0) predicted without blasts (NaN: none)."""
        negatives = [not r.predicted_present for r in self.images if not r.label]
        return _ratio(sum(negatives), len(negatives), math.nan)

    def to_rows(self) -> list[dict[str, Any]]:
        """One dict per image, for ``csv.DictWriter`` or ``pandas.DataFrame``.

        Returns:
            Dicts with the fields of :class:`ALLIDB1ImageResult`, in declaration order.
        """
        return [asdict(r) for r in self.images]

    def summary(self, digits: int = 3) -> str:
        """A short text table of the pooled detection and the image-level scores.

        Args:
            digits: Decimals of the scores.

        Returns:
            A title, a header, the pooled blast-level and the image-level scores, one a line.
        """

        def fmt(value: float) -> str:
            return "n/a" if math.isnan(value) else f"{value:.{digits}f}"

        scores = (self.precision, self.recall, self.f1)
        return "\n".join(
            [
                f"ALL-IDB1 blast detection: {len(self.images)} images, radius {self.radius:g} px",
                f"{'':<8}{'TP':>6}{'FP':>6}{'FN':>6}{'precision':>11}{'recall':>11}{'F1':>11}",
                f"{'blasts':<8}{self.true_positives:>6}{self.false_positives:>6}"
                f"{self.false_negatives:>6}" + "".join(f"{fmt(v):>11}" for v in scores),
                f"{'images':<8}accuracy {fmt(self.image_accuracy)}, sensitivity "
                f"{fmt(self.image_sensitivity)}, specificity {fmt(self.image_specificity)}",
            ]
        )


def evaluate_allidb1(
    dataset: ALLIDB1,
    predict: Callable[[int], np.ndarray],
    *,
    radius: float = 40.0,
    progress: bool = True,
) -> ALLIDB1Evaluation:
    """Score a blast detector on every smear of an ALL-IDB1 dataset.

    ``predict(index)`` gives the predicted blast centroids of each image, matched to
    :meth:`ALLIDB1.centroids` by :func:`match_points`; an image is predicted "blasts present"
    when it has at least one. The default radius: ALL-IDB1 blasts are roughly 80-120 px across
    in the 2592x1944 images, so 40 px accepts a detection whose centroid lies inside the
    annotated cell. Scale it if the images were resized (and scale centroids back to full size).

    Args:
        dataset: The ALL-IDB1 smears with their annotated centroids.
        predict: Maps a dataset index to an ``(N, 2)`` array of predicted blast centroids
            ``(x, y)`` in the full-size image's pixels; an empty array means no blast.
        radius: Matching radius in pixels (inclusive), > 0.
        progress: Show a tqdm progress bar.

    Returns:
        The per-image results and the pooled and image-level scores.

    Raises:
        ValueError: ``predict`` returned something other than finite ``(N, 2)`` points (the
            message names the image file and the shape), or ``radius`` is not > 0.
    """
    _check_radius(radius)
    results: list[ALLIDB1ImageResult] = []
    for index in tqdm(range(len(dataset)), desc="ALL-IDB1", unit="img", disable=not progress):
        record = dataset.records[index]
        predicted = _points(predict(index), f"{record.path}: predict({index})")
        match = match_points(predicted, dataset.centroids(index), radius)
        (tp, fp, fn), n = match._counts(), len(predicted)
        stem, label = Path(record.path).stem, int(record.label)
        results.append(ALLIDB1ImageResult(stem, record.path, label, tp + fn, n, tp, fp, fn, n > 0))
    return ALLIDB1Evaluation(tuple(results), float(radius))
