"""LightningModules: segmentation and classification tasks, their losses and optimiser settings."""

from __future__ import annotations

from .._deprecation import moved_names
from .base import BaseTask, Stage
from .branches import BranchInput, TaskBranch
from .classification import CellClassifier, DualBranchClassifier, NucleusClassifier
from .classifier_base import ClassificationTask, LossKind
from .losses import FocalLoss, HybridFocalCELoss
from .mask_cache import MaskCache, segmenter_fingerprint
from .optim import OptimConfig, OptimizerKind, SchedulerKind
from .pretrain import PretrainMethod, PretrainModule
from .segment_once import SegmentOnce
from .segmentation import SegmentationMode, SegmentationModule

#: Names that moved to other packages: still served, with a DeprecationWarning.
__getattr__ = moved_names(
    __name__,
    {
        "DetectionModule": "leukemia_wbc.smear",
    },
)

__all__ = [
    "BaseTask",
    "BranchInput",
    "CellClassifier",
    "ClassificationTask",
    "DualBranchClassifier",
    "FocalLoss",
    "HybridFocalCELoss",
    "LossKind",
    "MaskCache",
    "NucleusClassifier",
    "OptimConfig",
    "OptimizerKind",
    "PretrainMethod",
    "PretrainModule",
    "SchedulerKind",
    "SegmentOnce",
    "SegmentationMode",
    "SegmentationModule",
    "Stage",
    "TaskBranch",
    "segmenter_fingerprint",
]
