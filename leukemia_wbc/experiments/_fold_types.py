"""Plain records shared by the fold-model protocol and its adapters (no model code here).

Private module behind :mod:`leukemia_wbc.experiments.fold_model`, which re-exports its public
names; the adapters import it so that the protocol module can import the adapters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from lightning.pytorch.callbacks import Callback

from ._spec import jsonable

__all__ = [
    "CheckpointKind",
    "FoldModelInfo",
    "FoldSettings",
    "model_record",
    "predict_batches",
    "recorded_class",
]

#: The kind of file a fold model saves into its fold's folder.
CheckpointKind = Literal["lightning", "sklearn"]


@dataclass(frozen=True)
class FoldModelInfo:
    """How a fold model describes itself.

    Code that must treat fold models differently asks this record, never the model's type or
    its file's name.

    Attributes:
        name: The model's name in tables: the class and its backbones
            (``CellClassifier(resnet50)``, ``HandcraftedSVM``).
        config: ``{"class": "<module>.<qualname>", "hparams": {...}}`` in JSON types: what a run
            records in its ``config.json`` and compares when it resumes.
        explainable: Whether the model is a network with gradients: attribution maps, Grad-CAM
            and a :class:`~leukemia_wbc.inference.TrainedModel` apply to it.
        checkpoint: The kind of file it saves into a fold's folder: ``"lightning"`` (a Lightning
            checkpoint, loaded with ``weights_only=True``) or ``"sklearn"`` (a fitted feature
            baseline in ``HandcraftedSVM.save``'s format, read without unpickling).
        shortcut: The shortcut cue the model alone sees (``"colour"``: whole-image colour
            statistics), or ``None`` for a model of the cell. A report presents a shortcut
            model's score as how far a dataset is separable without looking at a cell.
    """

    name: str
    config: dict[str, Any]
    explainable: bool
    checkpoint: CheckpointKind
    shortcut: str | None = None


@dataclass(frozen=True)
class FoldSettings:
    """How every fold of a cross-validation trains (what the validator hands each fold model).

    Attributes:
        seed: Base seed; fold ``k`` trains with ``seed + k``.
        trainer_args: ``Trainer`` arguments of a Lightning fold (accelerator, devices, strategy,
            precision, max_epochs and the user's ``trainer_kwargs``).
        callbacks: Extra Lightning callbacks (copied for each fold).
        patience: Early-stopping patience in epochs; ``None`` turns early stopping off.
    """

    seed: int = 0
    trainer_args: Mapping[str, Any] = field(default_factory=dict)
    callbacks: Sequence[Callback] = ()
    patience: int | None = None


def predict_batches(
    predict: Callable[[Mapping[str, Any]], np.ndarray], loader: Iterable[Mapping[str, Any]]
) -> np.ndarray:
    """Class probabilities of every batch of ``loader``, stacked in order.

    Args:
        predict: One batch to ``(B, C)`` probabilities.
        loader: A ``DataLoader`` (or any iterable) of untransformed, collated batches (uint8
            ``image``, optional ``mask`` and ``cell_mask``).

    Returns:
        ``(N, C)`` probabilities.

    Raises:
        ValueError: The loader yields no batch.
    """
    parts = [predict(batch) for batch in loader]
    if not parts:
        raise ValueError("loader: no batch to predict (an empty dataset or loader)")
    return np.concatenate(parts)


def recorded_class(config: Mapping[str, Any]) -> str | None:
    """The model class a run's configuration records (``config["model"]["class"]``), if any.

    Args:
        config: A run's ``config.json`` content (or a :class:`CVResult`'s ``config``).

    Returns:
        The recorded ``<module>.<qualname>``, or ``None`` when the config names none.
    """
    model = config.get("model")
    name = model.get("class") if isinstance(model, Mapping) else None
    return name if isinstance(name, str) and name else None


def model_record(kind: type, params: Mapping[str, Any]) -> dict[str, Any]:
    """The ``config`` of a :class:`FoldModelInfo`: a class path and its settings in JSON types.

    Args:
        kind: The model's class.
        params: Its constructor settings.

    Returns:
        ``{"class": "<module>.<qualname>", "hparams": {...}}``.
    """
    return {"class": f"{kind.__module__}.{kind.__qualname__}", "hparams": jsonable(dict(params))}
