"""Evaluation: cross-validation, metrics with confidence intervals, attributions, reports."""

from __future__ import annotations

from .compare import compare
from .cross_validation import CrossValidator, TaskSpec
from .explain import (
    Attribution,
    AttributionMethod,
    Explainer,
    NucleusFocus,
    attribution_share,
    last_conv_layer,
    nucleus_focus,
    overlay,
)
from .gallery import GalleryItem, attribution_gallery, held_out_focus, save_overlays, select_cells
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
from .predictions import Predictions
from .report import ReportFiles, environment, write_report
from .result import CVResult, FoldResult

__all__ = [
    "PER_CLASS_METRICS",
    "SUMMARY_METRICS",
    "Attribution",
    "AttributionMethod",
    "CVResult",
    "CrossValidator",
    "Explainer",
    "FoldResult",
    "GalleryItem",
    "NucleusFocus",
    "Predictions",
    "ReportFiles",
    "RocCurve",
    "Summary",
    "TaskSpec",
    "attribution_gallery",
    "attribution_share",
    "classification_metrics",
    "compare",
    "confusion_matrix",
    "environment",
    "held_out_focus",
    "last_conv_layer",
    "nucleus_focus",
    "overlay",
    "roc_curves",
    "save_overlays",
    "select_cells",
    "summarize",
    "write_report",
]
