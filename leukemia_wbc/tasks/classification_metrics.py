"""The metric collections of :class:`~leukemia_wbc.tasks.ClassificationTask`, per stage."""

from __future__ import annotations

from collections.abc import Sequence

from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)
from torchmetrics.wrappers import ClasswiseWrapper

__all__ = ["per_class_metrics", "stage_metrics"]


def _summary(num_classes: int) -> dict[str, Metric | MetricCollection]:
    """Fresh overall accuracy and macro precision, recall, F1 and one-vs-rest AUROC."""
    n = num_classes
    return {
        "accuracy": MulticlassAccuracy(n, average="micro"),
        "precision": MulticlassPrecision(n, average="macro"),
        "recall": MulticlassRecall(n, average="macro"),
        "f1": MulticlassF1Score(n, average="macro"),
        "auroc": MulticlassAUROC(n, average="macro"),
    }


def stage_metrics(num_classes: int) -> tuple[MetricCollection, MetricCollection, MetricCollection]:
    """The training, validation and test collections, prefixed ``train_``, ``val_``, ``test_``.

    Training keeps overall ``accuracy`` and macro ``f1`` (cheap per step); validation and test
    add macro ``precision``, ``recall`` and one-vs-rest ``auroc``.

    Args:
        num_classes: Number of classes.

    Returns:
        ``(train, val, test)``, each a fresh ``MetricCollection`` of class probabilities.
    """
    n = num_classes
    train = MetricCollection(
        {"accuracy": MulticlassAccuracy(n, average="micro"),
         "f1": MulticlassF1Score(n, average="macro")},
        prefix="train_",
    )  # fmt: skip
    return (
        train,
        MetricCollection(_summary(n), prefix="val_"),
        MetricCollection(_summary(n), prefix="test_"),
    )


def per_class_metrics(num_classes: int, classes: Sequence[str]) -> MetricCollection:
    """Per-class precision, recall and F1, computed as ``test_<metric>_<class>``.

    Args:
        num_classes: Number of classes.
        classes: Class names (the suffixes of the logged names).

    Returns:
        A fresh ``MetricCollection``.
    """
    n, labels = num_classes, [str(c) for c in classes]
    return MetricCollection(
        {
            name: ClasswiseWrapper(metric, labels=labels, prefix=f"test_{name}_")
            for name, metric in (
                ("precision", MulticlassPrecision(n, average=None)),
                ("recall", MulticlassRecall(n, average=None)),
                ("f1", MulticlassF1Score(n, average=None)),
            )
        },
        compute_groups=False,
    )
