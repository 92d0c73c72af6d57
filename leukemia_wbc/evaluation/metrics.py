"""Metrics with confidence intervals (defined in :mod:`leukemia_wbc.metrics`, below experiments)."""

from __future__ import annotations

from ..metrics import (
    METRIC_LABELS,
    PER_CLASS_METRICS,
    SUMMARY_METRICS,
    RocCurve,
    Summary,
    classification_metrics,
    confusion_matrix,
    roc_curves,
    summarize,
)

__all__ = [
    "METRIC_LABELS",
    "PER_CLASS_METRICS",
    "SUMMARY_METRICS",
    "RocCurve",
    "Summary",
    "classification_metrics",
    "confusion_matrix",
    "roc_curves",
    "summarize",
]
