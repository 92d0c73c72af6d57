"""Batched tensor transforms that run on the device (GPU when there is one)."""

from __future__ import annotations

from .augment import MaskedAugmentation, StainAugment, paper_augmentation
from .enhance import CLAHE, BackgroundRemoval, Cue, Grayscale, HistogramEqualization
from .macenko import StainEstimate, estimate_stains
from .pipeline import DevicePipeline, EqualizeMode, make_equalizer
from .registry import register_pipeline_module, registered_pipeline_modules
from .stain import MacenkoNormalizer
from .views import CellViews

__all__ = [
    "CLAHE",
    "BackgroundRemoval",
    "CellViews",
    "Cue",
    "DevicePipeline",
    "EqualizeMode",
    "Grayscale",
    "HistogramEqualization",
    "MacenkoNormalizer",
    "MaskedAugmentation",
    "StainAugment",
    "StainEstimate",
    "estimate_stains",
    "make_equalizer",
    "paper_augmentation",
    "register_pipeline_module",
    "registered_pipeline_modules",
]
