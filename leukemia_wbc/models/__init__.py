"""Plain ``torch.nn`` networks (no Lightning): backbones, segmenters, classifiers, baselines."""

from __future__ import annotations

from .._deprecation import moved_names
from .backbones import create_backbone, feature_dim, read_state_dict
from .cell_net import CellNet
from .colour_baseline import COLOUR_FEATURE_NAMES, ColourShortcutBaseline, colour_statistics
from .dual_branch import Branch, DualBranchNet, DualBranchOptions
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
from .segmenter import NetworkSegmenter, SegmenterSpec, load_segmenter, resolve_segmenter
from .slim_vgg import vgg11_bn_quarter

#: Names that moved to other packages: still served, with a DeprecationWarning.
__getattr__ = moved_names(
    __name__,
    {
        "CellDetector": "leukemia_wbc.smear",
        "ClassicalCellDetector": "leukemia_wbc.smear",
        "Detections": "leukemia_wbc.smear",
        "HybridCellDetector": "leukemia_wbc.smear",
        "MaskRCNNCellDetector": "leukemia_wbc.smear",
        "ROMANOWSKY_STAINS": "leukemia_wbc.smear",
        "create_mask_rcnn": "leukemia_wbc.smear",
        "detect_tiled": "leukemia_wbc.smear",
        "load_detector_weights": "leukemia_wbc.smear",
        "mask_nms": "leukemia_wbc.smear",
        "tile_starts": "leukemia_wbc.smear",
    },
)

__all__ = [
    "COLOUR_FEATURE_NAMES",
    "FEATURE_NAMES",
    "AttentionFusion",
    "Branch",
    "CellNet",
    "ClassicalMethod",
    "ClassicalNucleusSegmenter",
    "ClassifierHead",
    "ColourShortcutBaseline",
    "ConcatFusion",
    "DualBranchNet",
    "DualBranchOptions",
    "FusionKind",
    "GatedFusion",
    "HandcraftedSVM",
    "KeepMode",
    "NetworkSegmenter",
    "NucleusCrops",
    "SegmenterSpec",
    "colour_statistics",
    "create_backbone",
    "create_segmentation_net",
    "crop_nucleus",
    "feature_dim",
    "load_segmenter",
    "make_fusion",
    "mask_boxes",
    "nucleus_features",
    "postprocess_masks",
    "read_state_dict",
    "resolve_segmenter",
    "segmentation_architectures",
    "vgg11_bn_quarter",
]
