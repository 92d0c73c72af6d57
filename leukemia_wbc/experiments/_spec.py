"""What the cross-validator runs, described: rebuilding a task, its name, config differences."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl

__all__ = ["differences", "jsonable", "model_name", "rebuild"]


def rebuild(template: pl.LightningModule) -> Callable[[], pl.LightningModule]:
    """A factory building a fresh ``type(template)`` from its saved hyperparameters."""
    kwargs = dict(template.hparams)
    for name in getattr(template, "hparams_ignore", ()):  # modules kept out of hparams
        kwargs[name] = getattr(template, name)
    cls = type(template)
    return lambda: cls(**kwargs)


def model_name(model: Any) -> str:
    """A table name: the class and its branches' backbones (``CellClassifier(resnet50)``).

    A classification task's :meth:`~leukemia_wbc.tasks.ClassificationTask.branches` give the
    backbones (``DualBranchClassifier(resnet50+mobilenetv2_100)``), followed by the dual
    branch's handcrafted features (``+all features``) and a stain-consistency weight
    (``, stain consistency 1``) where the model has them; a model without branches (a
    scikit-learn baseline), or a task without its network yet (no classes), by its class.
    """
    cls = type(model).__name__
    branches = getattr(model, "branches", None)
    if not callable(branches) or not getattr(model, "ready", True):
        return cls
    labels = [branch.label for branch in branches().values()]
    features = getattr(getattr(model, "options", None), "features", None)
    if features:  # the dual branch's third input
        labels.append(f"{features} features")
    name = f"{cls}({'+'.join(labels)})" if labels else cls
    consistency = getattr(model, "consistency", None)
    weight = getattr(consistency, "weight", None)
    return name if weight is None else f"{name}, stain consistency {weight:g}"


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types (tuples to lists, other objects to strings)."""
    return json.loads(json.dumps(value, default=str))


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """``key: old -> new`` lines for every leaf where two nested dicts differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            out += differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]
