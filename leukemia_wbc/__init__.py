"""leukemia_wbc: white-blood-cell classification in blood-smear microscopy, aimed at leukemia.

The data layer lives in :mod:`leukemia_wbc.data` (datasets, leakage-free splits and the
:class:`~leukemia_wbc.data.WBCDataModule`); batched device-side transforms in
:mod:`leukemia_wbc.transforms`.
"""

from __future__ import annotations

from .data import CNMC2019, SyntheticWBC, WBCDataModule, WBCDataset

__version__ = "0.1.0"

__all__ = ["CNMC2019", "SyntheticWBC", "WBCDataModule", "WBCDataset", "__version__"]
