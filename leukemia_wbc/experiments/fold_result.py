"""``FoldResult``: one cross-validation fold's outcome, as its ``fold.json`` records it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["FoldResult"]


@dataclass
class FoldResult:
    """One fold's outcome.

    Attributes:
        fold: Fold index.
        metrics: Metrics of the held-out part (see :func:`classification_metrics`).
        n_train: Training samples.
        n_val: Validation samples.
        n_test: Held-out samples.
        train_seconds: Wall time of training.
        predict_ms_per_image: Wall time of predicting the held-out part, per image.
        history: Per-epoch logged values (``epoch``, ``train_loss``, ``val_loss``, ...).
        checkpoint: The best checkpoint (relative to the output folder), if any.
        skipped: Held-out samples that could not be read (so not predicted).
        resumed: Whether training continued from an interrupted run's last checkpoint.
    """

    fold: int
    metrics: dict[str, float]
    n_train: int
    n_val: int
    n_test: int
    train_seconds: float
    predict_ms_per_image: float
    history: list[dict[str, float]] = field(default_factory=list)
    checkpoint: str | None = None
    skipped: list[str] = field(default_factory=list)
    resumed: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FoldResult:
        """Rebuild from :func:`dataclasses.asdict` output as stored in JSON (``null`` = NaN).

        A fold written before ``balanced_accuracy`` was recorded gets it from its macro recall
        (the same quantity).
        """
        body = dict(data)
        body["metrics"] = _unjson_metrics(body["metrics"])
        if "recall" in body["metrics"]:
            body["metrics"].setdefault("balanced_accuracy", body["metrics"]["recall"])
        body["history"] = [_unjson_metrics(h) for h in body.get("history", [])]
        return cls(**body)


def _unjson_metrics(data: dict[str, Any]) -> dict[str, float]:
    return {k: float("nan") if v is None else float(v) for k, v in data.items()}
