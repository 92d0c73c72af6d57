"""Experiments: k-fold cross-validation, its folds, results, predictions, per-fold attributions."""

from __future__ import annotations

from .attributions import GalleryItem, save_overlays, select_cells, write_fold_attributions
from .cross_validation import CrossValidator, TaskSpec
from .fold_attributions import (
    ATTRIBUTION_METHODS,
    ExplainedCell,
    FoldAttributions,
    focus_table,
    pooled_focus,
    read_fold_attributions,
)
from .predictions import Predictions
from .result import CVResult, FoldResult

__all__ = [
    "ATTRIBUTION_METHODS",
    "CVResult",
    "CrossValidator",
    "ExplainedCell",
    "FoldAttributions",
    "FoldResult",
    "GalleryItem",
    "Predictions",
    "TaskSpec",
    "focus_table",
    "pooled_focus",
    "read_fold_attributions",
    "save_overlays",
    "select_cells",
    "write_fold_attributions",
]
