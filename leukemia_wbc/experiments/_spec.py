"""What the cross-validator runs, described: rebuilding a task, its name, its configuration."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl

from ..models.handcrafted import HandcraftedSVM

__all__ = ["differences", "jsonable", "model_config", "model_name", "rebuild"]


def rebuild(template: pl.LightningModule) -> Callable[[], pl.LightningModule]:
    """A factory building a fresh ``type(template)`` from its saved hyperparameters."""
    kwargs = dict(template.hparams)
    for name in getattr(template, "hparams_ignore", ()):  # modules kept out of hparams
        kwargs[name] = getattr(template, name)
    cls = type(template)
    return lambda: cls(**kwargs)


def model_name(model: Any) -> str:
    """A table name: the class and its backbones (``CellClassifier(resnet50)``)."""
    cls = type(model).__name__
    if hasattr(model, "backbone_name"):
        return f"{cls}({model.backbone_name})"
    names = getattr(model, "names", None)
    if isinstance(names, tuple) and all(isinstance(n, str) for n in names):
        return f"{cls}({'+'.join(names)})"
    return cls


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types (tuples to lists, other objects to strings)."""
    return json.loads(json.dumps(value, default=str))


def model_config(model: Any) -> dict[str, Any]:
    """The class path and constructor settings of a task or SVM (JSON types)."""
    kind = type(model)
    if isinstance(model, HandcraftedSVM):
        params = {
            k: getattr(model, k)
            for k in ("C", "kernel", "gamma", "calibration_folds", "seed", "on_empty")
        }
        params["segmenter"] = model.segmenter_spec or (
            type(model.segmenter).__name__ if model.segmenter else None
        )
        if model.mask_source != "batch":  # recorded only when set, so older runs still resume
            params["mask_source"] = model.mask_source
    else:
        params = dict(model.hparams)
    return {"class": f"{kind.__module__}.{kind.__qualname__}", "hparams": jsonable(params)}


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """``key: old -> new`` lines for every leaf where two nested dicts differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            out += differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]
