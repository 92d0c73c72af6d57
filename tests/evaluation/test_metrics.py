"""Metrics from probabilities and their summaries across folds, against scikit-learn and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import accuracy_score, precision_recall_fscore_support, roc_auc_score

from leukemia_wbc.evaluation import classification_metrics, confusion_matrix, roc_curves, summarize

CLASSES = ("ALL", "AML", "CLL", "normal")


def random_predictions(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    logits = rng.normal(size=(n, 4)) + 1.5 * np.eye(4)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return labels, probs


def test_metrics_match_scikit_learn() -> None:
    labels, probs = random_predictions()
    m = classification_metrics(labels, probs, CLASSES)
    pred = probs.argmax(1)
    p, r, f, _ = precision_recall_fscore_support(labels, pred, labels=range(4), zero_division=0)
    assert m["accuracy"] == pytest.approx(accuracy_score(labels, pred))
    assert m["precision"] == pytest.approx(p.mean())
    assert m["recall"] == pytest.approx(r.mean())
    assert m["f1"] == pytest.approx(f.mean())
    assert m["auroc"] == pytest.approx(roc_auc_score(labels, probs, multi_class="ovr"))
    for c, name in enumerate(CLASSES):
        assert m[f"recall_{name}"] == pytest.approx(r[c])
        assert m[f"f1_{name}"] == pytest.approx(f[c])
        assert m[f"auroc_{name}"] == pytest.approx(roc_auc_score(labels == c, probs[:, c]))
    curves = roc_curves(labels, probs, CLASSES)
    assert curves["CLL"].auc == pytest.approx(m["auroc_CLL"])
    assert curves["CLL"].fpr[0] == 0 and curves["CLL"].tpr[-1] == 1


def test_confusion_matrix_counts() -> None:
    cm = confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_missing_class_is_undefined_not_zero() -> None:
    labels, probs = random_predictions()
    keep = labels != 3
    with pytest.warns(UserWarning, match=r"fold 4 has no sample of class\(es\) \['normal'\]"):
        m = classification_metrics(labels[keep], probs[keep], CLASSES, where="fold 4")
    assert math.isnan(m["recall_normal"]) and math.isnan(m["auroc_normal"])
    defined = [m[f"recall_{c}"] for c in CLASSES[:3]]
    assert m["recall"] == pytest.approx(np.mean(defined))
    assert set(roc_curves(labels[keep], probs[keep], CLASSES)) == set(CLASSES[:3])


def test_never_predicted_class_has_undefined_precision_and_counts_zero_in_the_macro() -> None:
    labels = np.array([0, 1, 1, 0])
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])
    m = classification_metrics(labels, probs, ("a", "b"))
    assert math.isnan(m["precision_b"]) and m["f1_b"] == 0.0 and m["recall_b"] == 0.0
    assert m["precision"] == pytest.approx(0.25)  # (0.5 + 0) / 2: not flattered to 0.5
    assert m["balanced_accuracy"] == pytest.approx(0.5) == m["recall"]
    assert m["accuracy"] == pytest.approx(0.5)


def test_summary_is_the_t_interval() -> None:
    values = [0.8, 0.85, 0.9, float("nan"), 0.75]
    s = summarize(values)
    v = np.array([0.8, 0.85, 0.9, 0.75])
    half = stats.t.ppf(0.975, 3) * v.std(ddof=1) / 2
    assert (s.n, s.mean, s.std) == (4, pytest.approx(v.mean()), pytest.approx(v.std(ddof=1)))
    assert (s.ci_low, s.ci_high) == (pytest.approx(v.mean() - half), pytest.approx(v.mean() + half))
    assert s.format() == "0.825 ± 0.065"
    assert summarize([0.99, 0.5]).ci_high == 1.0  # clipped to the metric's range
    assert summarize([float("nan")]).format() == "n/a"
    assert math.isnan(summarize([0.7]).std)


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match=r"shape \(N, 4\)"):
        classification_metrics([0, 1], np.ones((2, 3)) / 3, CLASSES)
    with pytest.raises(ValueError, match="labels must lie in"):
        classification_metrics([0, 5], np.ones((2, 4)) / 4, CLASSES)
    with pytest.raises(ValueError, match="no predictions"):
        classification_metrics([], np.ones((0, 4)), CLASSES)
