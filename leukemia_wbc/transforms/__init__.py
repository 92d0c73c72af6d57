"""Batched tensor transforms that run on the device (GPU when there is one)."""

from __future__ import annotations

from .augment import MaskedAugmentation, paper_augmentation

__all__ = ["MaskedAugmentation", "paper_augmentation"]
