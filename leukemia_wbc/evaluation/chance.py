"""What guessing scores on the same folds, and warnings when a model does no better.

A model that predicts the most common class for every cell reaches that class's share as its
accuracy, which on real, unbalanced data looks like a result (0.59 on BCCD's neutrophils). Every
comparison therefore carries two rows computed from the labels alone, on the model's own folds:

* **Majority class**: each fold predicts the most common class of its training part (all other
  folds), with the training class shares as probabilities (so its AUC is 0.5);
* **Stratified chance**: each held-out cell gets a class drawn at random (seeded) with the
  training class shares.

:func:`honesty_warnings` says when a model predicts one class for nearly all cells, or does not
beat the majority row.
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np

from ..experiments.predictions import Predictions
from ..experiments.result import CVResult, FoldResult
from ..metrics import classification_metrics

__all__ = [
    "MAJORITY",
    "ONE_CLASS_SHARE",
    "STRATIFIED",
    "chance_results",
    "honesty_warnings",
]

#: Row names of the two guessing baselines.
MAJORITY = "Majority class (no model)"
STRATIFIED = "Stratified chance (no model)"
#: A model whose out-of-fold predictions put at least this share of cells in one class is
#: reported as predicting (nearly) one class.
ONE_CLASS_SHARE = 0.9
#: How far above the majority row a model's mean accuracy must lie to count as better.
_MARGIN = 0.01


def _shares(labels: np.ndarray, n_classes: int) -> np.ndarray:
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    total = counts.sum()
    return counts / total if total else np.full(n_classes, 1.0 / n_classes)


def chance_results(result: CVResult, *, seed: int = 0) -> list[CVResult]:
    """The majority-class and stratified-chance baselines on ``result``'s folds.

    Args:
        result: A cross-validation result (its out-of-fold labels and folds are used, never
            its predictions).
        seed: Seed of the stratified draws.

    Returns:
        ``[majority, stratified]``, named :data:`MAJORITY` and :data:`STRATIFIED`.
    """
    p = result.predictions
    n_classes = len(result.classes)
    rng = np.random.default_rng(seed)
    majority = np.zeros_like(p.probs, dtype=np.float64)
    drawn = np.zeros_like(p.probs, dtype=np.float64)
    for fold in np.unique(p.fold):
        held = p.fold == fold
        shares = _shares(p.label[~held], n_classes)
        majority[held] = shares
        # ties of the arg-max go to the first class, as for the shares themselves
        drawn[held, rng.choice(n_classes, size=int(held.sum()), p=shares)] = 1.0
    out = []
    for name, probs in ((MAJORITY, majority), (STRATIFIED, drawn)):
        preds = replace(p, probs=probs)
        out.append(
            CVResult(
                name=name,
                classes=result.classes,
                folds=_folds(result, preds),
                predictions=preds,
                config={"name": name, "split": result.config.get("split", {})},
            )
        )
    return out


def _folds(result: CVResult, preds: Predictions) -> list[FoldResult]:
    folds = []
    for f in result.folds:
        held = preds.fold == f.fold
        with warnings.catch_warnings():  # a class missing from a fold: warned for the model
            warnings.simplefilter("ignore")
            metrics = classification_metrics(preds.label[held], preds.probs[held], result.classes)
        folds.append(
            FoldResult(fold=f.fold, metrics=metrics, n_train=f.n_train, n_val=f.n_val,
                       n_test=f.n_test, train_seconds=0.0, predict_ms_per_image=0.0)
        )  # fmt: skip
    return folds


def honesty_warnings(result: CVResult, majority: CVResult | None = None) -> list[str]:
    """Plain-language warnings about a model that is no better than guessing.

    Args:
        result: The model's cross-validation result.
        majority: Its majority-class row (computed when not given).

    Returns:
        One sentence per problem (empty when none): one class predicted for (nearly) all
        cells, or a mean accuracy that does not beat the majority class.
    """
    if majority is None:
        majority = chance_results(result)[0]
    found: list[str] = []
    pred = result.predictions.pred
    if pred.size:
        counts = np.bincount(pred, minlength=len(result.classes))
        top = int(counts.argmax())
        share = counts[top] / pred.size
        if share >= ONE_CLASS_SHARE:
            found.append(
                f"{result.name} predicts {result.classes[top]} for {share:.0%} of the cells: "
                "it has learned (almost) nothing beyond the most common class"
            )
    model = result.summary()["accuracy"].mean
    guess = majority.summary()["accuracy"].mean
    if model <= guess + _MARGIN:
        found.append(
            f"{result.name}'s accuracy {model:.3f} does not beat the majority-class baseline "
            f"{guess:.3f} (predicting the most common class for every cell); compare balanced "
            "accuracy and per-class recall instead"
        )
    return found
