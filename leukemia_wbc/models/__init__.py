"""Plain ``torch.nn`` networks (no Lightning): backbones, segmenters, classifiers, baselines."""

from __future__ import annotations

from .backbones import create_backbone, feature_dim, read_state_dict
from .cell_net import CellNet
from .dual_branch import Branch, DualBranchNet
from .handcrafted import FEATURE_NAMES, HandcraftedSVM, nucleus_features
from .heads import (
    AttentionFusion,
    ClassifierHead,
    ConcatFusion,
    FusionKind,
    GatedFusion,
    make_fusion,
)
from .nucleus_crop import NucleusCrops, crop_nucleus, mask_boxes
from .segmentation import (
    ClassicalMethod,
    ClassicalNucleusSegmenter,
    KeepMode,
    create_segmentation_net,
    postprocess_masks,
    segmentation_architectures,
)
from .slim_vgg import vgg11_bn_quarter

__all__ = [
    "FEATURE_NAMES",
    "AttentionFusion",
    "Branch",
    "CellNet",
    "ClassicalMethod",
    "ClassicalNucleusSegmenter",
    "ClassifierHead",
    "ConcatFusion",
    "DualBranchNet",
    "FusionKind",
    "GatedFusion",
    "HandcraftedSVM",
    "KeepMode",
    "NucleusCrops",
    "create_backbone",
    "create_segmentation_net",
    "crop_nucleus",
    "feature_dim",
    "make_fusion",
    "mask_boxes",
    "nucleus_features",
    "postprocess_masks",
    "read_state_dict",
    "segmentation_architectures",
    "vgg11_bn_quarter",
]
