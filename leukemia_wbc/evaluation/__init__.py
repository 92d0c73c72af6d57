"""Evaluation: cross-validation, metrics with confidence intervals, attributions, reports."""

from __future__ import annotations

from .compare import compare
from .cross_validation import CrossValidator, TaskSpec
from .metrics import (
    PER_CLASS_METRICS,
    SUMMARY_METRICS,
    RocCurve,
    Summary,
    classification_metrics,
    confusion_matrix,
    roc_curves,
    summarize,
)
from .result import CVResult, FoldResult, Predictions

__all__ = [
    "PER_CLASS_METRICS",
    "SUMMARY_METRICS",
    "CVResult",
    "CrossValidator",
    "FoldResult",
    "Predictions",
    "RocCurve",
    "Summary",
    "TaskSpec",
    "classification_metrics",
    "compare",
    "confusion_matrix",
    "roc_curves",
    "summarize",
]
