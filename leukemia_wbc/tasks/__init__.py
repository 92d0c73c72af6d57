"""LightningModules: segmentation and classification tasks, and their losses."""

from __future__ import annotations

from .base import BaseTask, Stage
from .classification import CellClassifier, DualBranchClassifier, NucleusClassifier
from .classifier_base import ClassificationTask, LossKind
from .detection import DetectionModule
from .losses import FocalLoss, HybridFocalCELoss
from .optim import OptimizerKind, SchedulerKind
from .segmentation import SegmentationMode, SegmentationModule

__all__ = [
    "BaseTask",
    "CellClassifier",
    "ClassificationTask",
    "DetectionModule",
    "DualBranchClassifier",
    "FocalLoss",
    "HybridFocalCELoss",
    "LossKind",
    "NucleusClassifier",
    "OptimizerKind",
    "SchedulerKind",
    "SegmentationMode",
    "SegmentationModule",
    "Stage",
]
