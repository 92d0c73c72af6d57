"""The DataModule's device pipeline: built from :class:`PipelineOptions`, stain target fitted.

:func:`build_pipeline` turns the options into a
:class:`~leukemia_wbc.transforms.DevicePipeline`; :func:`stain_reference` gathers the images
the Macenko target is fitted on (a reference image, or a seeded sample of training images,
never validation or test ones).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..transforms.augment import paper_augmentation
from ..transforms.pipeline import DevicePipeline, make_equalizer
from ..transforms.stain import MacenkoNormalizer
from .base import WBCDataset
from .images import image_tensor, read_rgb
from .options import PipelineOptions, StainChoice

__all__ = ["build_pipeline", "pipeline_flags", "stain_reference"]

_log = logging.getLogger(__name__)


def _stain_normalizer(choice: StainChoice) -> MacenkoNormalizer | None:
    """A new normaliser for ``True`` / ``"torch"`` / ``"staintools"``, the one given, or None."""
    if choice is True or choice == "torch":
        return MacenkoNormalizer()
    if choice == "staintools":
        return MacenkoNormalizer(backend="staintools")
    return choice if isinstance(choice, MacenkoNormalizer) else None


def build_pipeline(options: PipelineOptions) -> DevicePipeline:
    """The device pipeline of ``options`` (its stain target not fitted yet, unless given so).

    Args:
        options: The pipeline group of a DataModule.

    Returns:
        A new pipeline: stain normalisation, background removal, equalisation, augmentation
        (with ``augment=True``: :func:`~leukemia_wbc.transforms.paper_augmentation`, plus
        stain augmentation of strength ``stain_augmentation``), normalisation.

    Raises:
        ImportError: ``stain_normalization="staintools"`` without staintools installed.
    """
    background: nn.Module | None
    if options.background_removal is True:
        from ..transforms.enhance import BackgroundRemoval

        background = BackgroundRemoval()
    else:
        background = options.background_removal or None
    augment = options.augment
    return DevicePipeline(
        stain=_stain_normalizer(options.stain_normalization),
        background=background,
        equalize=make_equalizer(options.equalize),
        augment=(
            paper_augmentation(stain=options.stain_augmentation or None)
            if augment is True
            else augment or None
        ),
        mean=options.mean,
        std=options.std,
        colour=options.colour,
    )


def pipeline_flags(pipeline: DevicePipeline) -> dict[str, Any]:
    """What a checkpoint records of the pipeline's modules, as plain values.

    Args:
        pipeline: A DataModule's pipeline.

    Returns:
        ``{"stain_normalization": "staintools" | bool, "background_removal": bool}``.
    """
    stain = pipeline.stain
    backend = getattr(stain, "backend", None)
    return {
        "stain_normalization": "staintools" if backend == "staintools" else stain is not None,
        "background_removal": pipeline.background is not None,
    }


def stain_reference(
    reference: str | os.PathLike[str] | Tensor | None,
    dataset: WBCDataset,
    train: np.ndarray,
    *,
    samples: int,
    seed: int,
) -> tuple[Tensor, np.ndarray | None]:
    """The images to fit a Macenko target on.

    Args:
        reference: An image file (read at the dataset's size), an image tensor (``(3, H, W)``
            or a batch), or ``None`` to draw ``samples`` training images with ``seed``.
        dataset: The DataModule's dataset.
        train: Dataset indices of the training part (the only images drawn).
        samples: How many training images to draw without a reference.
        seed: Seed of the draw.

    Returns:
        ``(images, drawn indices)``: ``uint8`` images, and the sorted dataset indices they came
        from (``None`` when a reference was given).

    Raises:
        ValueError: None of the drawn training images could be read.
        ~leukemia_wbc.data.ImageReadError: The reference file cannot be read.
    """
    if isinstance(reference, Tensor):
        return reference, None
    if reference is not None:
        return image_tensor(read_rgb(reference, dataset.size)), None
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(train, size=min(samples, len(train)), replace=False))
    images = [s["image"] for s in (dataset[int(i)] for i in chosen) if s is not None]
    if not images:
        raise ValueError("fit_stain: none of the sampled training images could be read")
    _log.info("fitting the Macenko target on %d training images", len(images))
    return torch.stack(images), chosen
