"""Attributions (moved to :mod:`leukemia_wbc.explain`, below the trained-model object)."""

from __future__ import annotations

from ..explain import (
    Attribution,
    AttributionMethod,
    Explainer,
    NucleusFocus,
    attribution_share,
    last_conv_layer,
    nucleus_focus,
    overlay,
)

__all__ = [
    "Attribution",
    "AttributionMethod",
    "Explainer",
    "NucleusFocus",
    "attribution_share",
    "last_conv_layer",
    "nucleus_focus",
    "overlay",
]
