"""Datasets, leakage-free splits and the Lightning DataModule."""

from __future__ import annotations

from .._deprecation import moved_names
from .allidb import ALLIDB1, ALLIDB2, read_xyc
from .aml_cytomorphology import AML_CLASS_NAMES, AMLCytomorphology
from .base import (
    IMAGE_EXTENSIONS,
    UNLABELLED,
    ImageReadError,
    MaskCodeError,
    Record,
    Sample,
    WBCDataset,
    decode_mask,
    read_rgb,
)
from .class_folders import ClassFolderWBC
from .cnmc import CNMC2019, subject_is_healthy
from .datamodule import WBCDataModule
from .folder import BCCD_GROUP_PATTERN, ImageFolderWBC
from .loading import collate_samples
from .manifest import ManifestWBC, write_manifest
from .options import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FlatOptions,
    LoaderOptions,
    PipelineOptions,
    SplitOptions,
)
from .pbc import PBC
from .raabin import RaabinWBC
from .segmentation_wbc import SegmentationWBC2018
from .splits import (
    Split,
    assign_folds,
    cv_split,
    fold_split,
    holdout_split,
    is_grouped,
    kfold_split,
)
from .synthetic import SYNTHETIC_CLASSES, SyntheticWBC
from .unlabelled import UnlabelledImages

#: Names that moved to other packages: still served, with a DeprecationWarning.
__getattr__ = moved_names(
    __name__,
    {
        "SmearField": "leukemia_wbc.smear",
        "SyntheticSmear": "leukemia_wbc.smear",
        "detection_collate": "leukemia_wbc.smear",
    },
)

__all__ = [
    "ALLIDB1",
    "ALLIDB2",
    "AML_CLASS_NAMES",
    "BCCD_GROUP_PATTERN",
    "CNMC2019",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "PBC",
    "SYNTHETIC_CLASSES",
    "UNLABELLED",
    "AMLCytomorphology",
    "ClassFolderWBC",
    "FlatOptions",
    "ImageFolderWBC",
    "ImageReadError",
    "LoaderOptions",
    "ManifestWBC",
    "MaskCodeError",
    "PipelineOptions",
    "RaabinWBC",
    "Record",
    "Sample",
    "SegmentationWBC2018",
    "Split",
    "SplitOptions",
    "SyntheticWBC",
    "UnlabelledImages",
    "WBCDataModule",
    "WBCDataset",
    "assign_folds",
    "collate_samples",
    "cv_split",
    "decode_mask",
    "fold_split",
    "holdout_split",
    "is_grouped",
    "kfold_split",
    "read_rgb",
    "read_xyc",
    "subject_is_healthy",
    "write_manifest",
]
