"""What attributions explain in a classifier: its branches, and the input each reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

__all__ = ["BranchInput", "TaskBranch", "module_label"]

#: What a branch of a classifier reads: the whole (normalised) image, or the nucleus crops of
#: :meth:`~leukemia_wbc.tasks.nucleus_masks.NucleusMaskMixin.nucleus_crops`.
BranchInput = Literal["image", "nucleus"]


@dataclass(frozen=True)
class TaskBranch:
    """One branch of a classifier: the module an attribution explains and what it reads.

    Attributes:
        module: The branch's feature extractor (Grad-CAM takes its last convolutional stage).
        input: ``"image"`` or ``"nucleus"`` (see :data:`BranchInput`).
        label: Its name in tables, e.g. the timm model name (``"resnet50"``).
    """

    module: nn.Module
    input: BranchInput
    label: str


def module_label(module: nn.Module) -> str:
    """A module's name in tables: timm's architecture name, else the class name.

    Args:
        module: The module.

    Returns:
        The name.
    """
    config = getattr(module, "pretrained_cfg", None)
    name = config.get("architecture") if isinstance(config, dict) else None
    return str(name) if name else type(module).__name__
