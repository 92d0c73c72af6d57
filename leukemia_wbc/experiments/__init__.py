"""Experiments: k-fold cross-validation, fold models, results, predictions, fold attributions."""

from __future__ import annotations

from .attributions import (
    GalleryItem,
    gallery_items,
    nucleus_masks,
    save_overlays,
    select_cells,
    write_fold_attributions,
)
from .cross_validation import CrossValidator, TaskSpec
from .fold_attributions import (
    ATTRIBUTION_METHODS,
    ExplainedCell,
    FoldAttributions,
    focus_table,
    pooled_focus,
    read_fold_attributions,
)
from .fold_model import (
    FoldModel,
    FoldModelInfo,
    FoldSettings,
    LightningFoldModel,
    SklearnFoldModel,
    as_fold_model,
    load_fold_model,
)
from .precision import cpu_has_bf16, resolve_precision
from .predictions import Predictions
from .pretraining import PretrainResult, pretrain, pretrain_split
from .result import CVResult, FoldResult

__all__ = [
    "ATTRIBUTION_METHODS",
    "CVResult",
    "CrossValidator",
    "ExplainedCell",
    "FoldAttributions",
    "FoldModel",
    "FoldModelInfo",
    "FoldResult",
    "FoldSettings",
    "GalleryItem",
    "LightningFoldModel",
    "Predictions",
    "PretrainResult",
    "SklearnFoldModel",
    "TaskSpec",
    "as_fold_model",
    "cpu_has_bf16",
    "focus_table",
    "gallery_items",
    "load_fold_model",
    "nucleus_masks",
    "pooled_focus",
    "pretrain",
    "pretrain_split",
    "read_fold_attributions",
    "resolve_precision",
    "save_overlays",
    "select_cells",
    "write_fold_attributions",
]
