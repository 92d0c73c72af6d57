"""Whole smears: fields, white-cell detectors, their training, blast counts, metrics, overlays.

Modules follow the library's layers: :mod:`~leukemia_wbc.smear.data` (fields) <-
:mod:`~leukemia_wbc.smear.detections`, :mod:`~leukemia_wbc.smear.mask_rcnn`,
:mod:`~leukemia_wbc.smear.detectors` (networks and classical detectors) <-
:mod:`~leukemia_wbc.smear.task` and :mod:`~leukemia_wbc.smear.datamodule` (Lightning) <-
:mod:`~leukemia_wbc.smear.analysis`, :mod:`~leukemia_wbc.smear.metrics`,
:mod:`~leukemia_wbc.smear.scoring`, :mod:`~leukemia_wbc.smear.overlay`.
"""

from __future__ import annotations

from .analysis import DEFAULT_BLAST_CLASSES, SmearAnalyzer
from .data import SmearField, SyntheticSmear, detection_collate
from .datamodule import SmearDataModule
from .detections import Detections, detect_tiled, mask_nms, tile_starts, to_unit_image
from .detectors import ROMANOWSKY_STAINS, CellDetector, ClassicalCellDetector, HybridCellDetector
from .mask_rcnn import MaskRCNNCellDetector, create_mask_rcnn, load_detector_weights
from .metrics import (
    ACUTE_LEUKEMIA_BLAST_THRESHOLD,
    ALLIDB1Evaluation,
    ALLIDB1ImageResult,
    PointMatch,
    blast_share_interval,
    evaluate_allidb1,
    match_points,
)
from .overlay import class_colours, draw_cells
from .result import SmearAnalysis, save_smear_overlay, smear_overlay
from .scoring import DetectorScore, compare_detectors, detector_table
from .task import DETECTION_OPTIM, DetectionModule

__all__ = [
    "ACUTE_LEUKEMIA_BLAST_THRESHOLD",
    "DEFAULT_BLAST_CLASSES",
    "DETECTION_OPTIM",
    "ROMANOWSKY_STAINS",
    "ALLIDB1Evaluation",
    "ALLIDB1ImageResult",
    "CellDetector",
    "ClassicalCellDetector",
    "DetectionModule",
    "Detections",
    "DetectorScore",
    "HybridCellDetector",
    "MaskRCNNCellDetector",
    "PointMatch",
    "SmearAnalysis",
    "SmearAnalyzer",
    "SmearDataModule",
    "SmearField",
    "SyntheticSmear",
    "blast_share_interval",
    "class_colours",
    "compare_detectors",
    "create_mask_rcnn",
    "detect_tiled",
    "detection_collate",
    "detector_table",
    "draw_cells",
    "evaluate_allidb1",
    "load_detector_weights",
    "mask_nms",
    "match_points",
    "save_smear_overlay",
    "smear_overlay",
    "tile_starts",
    "to_unit_image",
]
