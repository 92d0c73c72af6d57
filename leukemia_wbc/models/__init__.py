"""Plain ``torch.nn`` networks (no Lightning): backbones, segmenters, classifiers, baselines."""

from __future__ import annotations

from .backbones import create_backbone, feature_dim, read_state_dict
from .cell_detectors import (
    ROMANOWSKY_STAINS,
    CellDetector,
    ClassicalCellDetector,
    HybridCellDetector,
)
from .cell_net import CellNet
from .colour_baseline import COLOUR_FEATURE_NAMES, ColourShortcutBaseline, colour_statistics
from .detection import (
    Detections,
    MaskRCNNCellDetector,
    create_mask_rcnn,
    detect_tiled,
    load_detector_weights,
    mask_nms,
)
from .detections import tile_starts
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
from .segmenter import NetworkSegmenter, SegmenterSpec, load_segmenter, resolve_segmenter
from .slim_vgg import vgg11_bn_quarter

__all__ = [
    "COLOUR_FEATURE_NAMES",
    "FEATURE_NAMES",
    "ROMANOWSKY_STAINS",
    "AttentionFusion",
    "Branch",
    "CellDetector",
    "CellNet",
    "ClassicalCellDetector",
    "ClassicalMethod",
    "ClassicalNucleusSegmenter",
    "ClassifierHead",
    "ColourShortcutBaseline",
    "ConcatFusion",
    "Detections",
    "DualBranchNet",
    "FusionKind",
    "GatedFusion",
    "HandcraftedSVM",
    "HybridCellDetector",
    "KeepMode",
    "MaskRCNNCellDetector",
    "NetworkSegmenter",
    "NucleusCrops",
    "SegmenterSpec",
    "colour_statistics",
    "create_backbone",
    "create_mask_rcnn",
    "create_segmentation_net",
    "crop_nucleus",
    "detect_tiled",
    "feature_dim",
    "load_detector_weights",
    "load_segmenter",
    "make_fusion",
    "mask_boxes",
    "mask_nms",
    "nucleus_features",
    "postprocess_masks",
    "read_state_dict",
    "resolve_segmenter",
    "segmentation_architectures",
    "tile_starts",
    "vgg11_bn_quarter",
]
