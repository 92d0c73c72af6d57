"""leukemia_wbc: white-blood-cell classification in blood-smear microscopy, aimed at leukemia.

The main names are reachable from the top (``leukemia_wbc.DualBranchClassifier``); each lives
in its package: datasets, leakage-free splits and the :class:`~leukemia_wbc.data.WBCDataModule`
in :mod:`leukemia_wbc.data`; batched device-side transforms in :mod:`leukemia_wbc.transforms`;
networks in :mod:`leukemia_wbc.models`; LightningModules in :mod:`leukemia_wbc.tasks`; the
trained model in :mod:`leukemia_wbc.inference`; cross-validation in
:mod:`leukemia_wbc.experiments`.

Importing the package is cheap: a name (and a subpackage, ``leukemia_wbc.data``) is imported
on first use (PEP 562), so ``import leukemia_wbc`` and ``leukemia-wbc --help`` load neither
PyTorch nor Lightning.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .data import CNMC2019, SyntheticWBC, WBCDataModule, WBCDataset
    from .experiments import CrossValidator
    from .inference import TrainedModel
    from .models import HandcraftedSVM
    from .tasks import (
        CellClassifier,
        DualBranchClassifier,
        NucleusClassifier,
        PretrainModule,
        SegmentationModule,
    )

__version__ = "0.1.0"

#: Public name -> the package it is imported from on first use.
_LAZY_NAMES: dict[str, str] = {
    "CNMC2019": ".data",
    "SyntheticWBC": ".data",
    "WBCDataModule": ".data",
    "WBCDataset": ".data",
    "CellClassifier": ".tasks",
    "DualBranchClassifier": ".tasks",
    "NucleusClassifier": ".tasks",
    "PretrainModule": ".tasks",
    "SegmentationModule": ".tasks",
    "HandcraftedSVM": ".models",
    "TrainedModel": ".inference",
    "CrossValidator": ".experiments",
}

#: Public subpackages and modules, imported on first attribute access (``leukemia_wbc.data``
#: worked after a plain ``import leukemia_wbc`` when the package imported it eagerly).
_SUBMODULES = frozenset(
    {
        "checkpoint",
        "cli",
        "configs",
        "data",
        "demo",
        "evaluation",
        "experiments",
        "explain",
        "inference",
        "metrics",
        "models",
        "report",
        "smear",
        "tasks",
        "transforms",
    }
)

__all__ = [
    "CNMC2019",
    "CellClassifier",
    "CrossValidator",
    "DualBranchClassifier",
    "HandcraftedSVM",
    "NucleusClassifier",
    "PretrainModule",
    "SegmentationModule",
    "SyntheticWBC",
    "TrainedModel",
    "WBCDataModule",
    "WBCDataset",
    "__version__",
]


def __getattr__(name: str) -> Any:
    """Import a public name or subpackage on first access (PEP 562).

    Args:
        name: The attribute asked for.

    Returns:
        The class (cached in the module's namespace) or the submodule.

    Raises:
        AttributeError: ``name`` is neither a public name nor a subpackage.
    """
    if name in _LAZY_NAMES:
        value = getattr(importlib.import_module(_LAZY_NAMES[name], __name__), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """The module's names with the lazy ones and the subpackages (for completion)."""
    return sorted({*globals(), *__all__, *_SUBMODULES})
