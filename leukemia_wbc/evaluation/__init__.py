"""Evaluation: cross-validation, metrics with confidence intervals, attributions, reports."""

from __future__ import annotations

from .compare import compare
from .cross_dataset import CrossDatasetResult, class_mapping, cross_dataset_test
from .cross_validation import CrossValidator, TaskSpec
from .detection import DetectorScore, compare_detectors, detector_table
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
from .fold_attributions import (
    ATTRIBUTION_METHODS,
    ExplainedCell,
    FoldAttributions,
    focus_table,
    pooled_focus,
    read_fold_attributions,
)
from .gallery import (
    GalleryItem,
    attribution_gallery,
    held_out_focus,
    save_overlays,
    select_cells,
    write_fold_attributions,
)
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
from .robustness import (
    PERTURBATIONS,
    RobustnessResult,
    baseline_predictor,
    cv_robustness,
    evaluate_robustness,
    perturb,
    task_predictor,
)
from .smear import DEFAULT_BLAST_CLASSES, SmearAnalysis, SmearAnalyzer
from .smear_metrics import (
    ACUTE_LEUKEMIA_BLAST_THRESHOLD,
    ALLIDB1Evaluation,
    ALLIDB1ImageResult,
    PointMatch,
    blast_share_interval,
    evaluate_allidb1,
    match_points,
)
from .smear_overlay import save_smear_overlay, smear_overlay

__all__ = [
    "ACUTE_LEUKEMIA_BLAST_THRESHOLD",
    "ATTRIBUTION_METHODS",
    "DEFAULT_BLAST_CLASSES",
    "PERTURBATIONS",
    "PER_CLASS_METRICS",
    "SUMMARY_METRICS",
    "ALLIDB1Evaluation",
    "ALLIDB1ImageResult",
    "Attribution",
    "AttributionMethod",
    "CVResult",
    "CrossDatasetResult",
    "CrossValidator",
    "DetectorScore",
    "ExplainedCell",
    "Explainer",
    "FoldAttributions",
    "FoldResult",
    "GalleryItem",
    "NucleusFocus",
    "PointMatch",
    "Predictions",
    "ReportFiles",
    "RobustnessResult",
    "RocCurve",
    "SmearAnalysis",
    "SmearAnalyzer",
    "Summary",
    "TaskSpec",
    "attribution_gallery",
    "attribution_share",
    "baseline_predictor",
    "blast_share_interval",
    "class_mapping",
    "classification_metrics",
    "compare",
    "compare_detectors",
    "confusion_matrix",
    "cross_dataset_test",
    "cv_robustness",
    "detector_table",
    "environment",
    "evaluate_allidb1",
    "evaluate_robustness",
    "focus_table",
    "held_out_focus",
    "last_conv_layer",
    "match_points",
    "nucleus_focus",
    "overlay",
    "perturb",
    "pooled_focus",
    "read_fold_attributions",
    "roc_curves",
    "save_overlays",
    "save_smear_overlay",
    "select_cells",
    "smear_overlay",
    "summarize",
    "task_predictor",
    "write_fold_attributions",
    "write_report",
]
