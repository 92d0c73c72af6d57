"""Evaluation of trained models: metrics, comparison, attributions, robustness, cross-dataset.

Metrics come with confidence intervals; attributions with galleries of held-out cells.

Cross-validation lives in :mod:`leukemia_wbc.experiments`, reports in :mod:`leukemia_wbc.report`
and whole smears in :mod:`leukemia_wbc.smear`.
"""

from __future__ import annotations

from .._deprecation import moved_names
from ..metrics import (
    PER_CLASS_METRICS,
    SUMMARY_METRICS,
    RocCurve,
    Summary,
    classification_metrics,
    confusion_matrix,
    roc_curves,
    summarize,
)
from .chance import chance_results, honesty_warnings
from .compare import compare, comparison_warnings, shortcut_warnings
from .cross_dataset import CrossDatasetResult, class_mapping, cross_dataset_test
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
from .gallery import attribution_gallery, held_out_focus
from .robustness import (
    PERTURBATIONS,
    RobustnessResult,
    baseline_predictor,
    cv_robustness,
    evaluate_robustness,
    perturb,
    task_predictor,
)

#: Names that moved to other packages: still served, with a DeprecationWarning.
__getattr__ = moved_names(
    __name__,
    {
        "ACUTE_LEUKEMIA_BLAST_THRESHOLD": "leukemia_wbc.smear",
        "ALLIDB1Evaluation": "leukemia_wbc.smear",
        "ALLIDB1ImageResult": "leukemia_wbc.smear",
        "ATTRIBUTION_METHODS": "leukemia_wbc.experiments",
        "CVResult": "leukemia_wbc.experiments",
        "CrossValidator": "leukemia_wbc.experiments",
        "DEFAULT_BLAST_CLASSES": "leukemia_wbc.smear",
        "DetectorScore": "leukemia_wbc.smear",
        "ExplainedCell": "leukemia_wbc.experiments",
        "FoldAttributions": "leukemia_wbc.experiments",
        "FoldResult": "leukemia_wbc.experiments",
        "write_fold_attributions": "leukemia_wbc.experiments",
        "select_cells": "leukemia_wbc.experiments",
        "save_overlays": "leukemia_wbc.experiments",
        "GalleryItem": "leukemia_wbc.experiments",
        "PointMatch": "leukemia_wbc.smear",
        "Predictions": "leukemia_wbc.experiments",
        "ReportFiles": "leukemia_wbc.report",
        "SmearAnalysis": "leukemia_wbc.smear",
        "SmearAnalyzer": "leukemia_wbc.smear",
        "TaskSpec": "leukemia_wbc.experiments",
        "blast_share_interval": "leukemia_wbc.smear",
        "compare_detectors": "leukemia_wbc.smear",
        "detector_table": "leukemia_wbc.smear",
        "environment": "leukemia_wbc.report",
        "evaluate_allidb1": "leukemia_wbc.smear",
        "focus_table": "leukemia_wbc.experiments",
        "match_points": "leukemia_wbc.smear",
        "pooled_focus": "leukemia_wbc.experiments",
        "read_fold_attributions": "leukemia_wbc.experiments",
        "save_smear_overlay": "leukemia_wbc.smear",
        "smear_overlay": "leukemia_wbc.smear",
        "write_report": "leukemia_wbc.report",
    },
)

__all__ = [
    "PERTURBATIONS",
    "PER_CLASS_METRICS",
    "SUMMARY_METRICS",
    "Attribution",
    "AttributionMethod",
    "CrossDatasetResult",
    "Explainer",
    "NucleusFocus",
    "RobustnessResult",
    "RocCurve",
    "Summary",
    "attribution_gallery",
    "attribution_share",
    "baseline_predictor",
    "chance_results",
    "class_mapping",
    "classification_metrics",
    "compare",
    "comparison_warnings",
    "confusion_matrix",
    "cross_dataset_test",
    "cv_robustness",
    "evaluate_robustness",
    "held_out_focus",
    "honesty_warnings",
    "last_conv_layer",
    "nucleus_focus",
    "overlay",
    "perturb",
    "roc_curves",
    "shortcut_warnings",
    "summarize",
    "task_predictor",
]
