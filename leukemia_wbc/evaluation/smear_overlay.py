"""Deprecated: moved to :mod:`leukemia_wbc.smear.result`; removed in 0.3."""

from __future__ import annotations

from .._deprecation import moved_module

__getattr__ = moved_module(__name__, "leukemia_wbc.smear.result")
