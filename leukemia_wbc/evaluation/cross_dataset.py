"""Cross-dataset testing: every fold's model of a cross-validation scored on another dataset.

Train on one lab's images, test on another's: the models of each fold of a
:class:`~leukemia_wbc.experiments.CrossValidator` run predict every image of a second dataset
(another lab, stain, camera), whose classes are mapped onto the training classes. The drop from
the cross-validated figure is the cost of the domain shift.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..data.base import WBCDataset
from ..metrics import Summary, classification_metrics, summarize
from .robustness import fold_predictor, framed_like, sample_batches

__all__ = ["CrossDatasetResult", "class_mapping", "cross_dataset_test"]


def class_mapping(
    source: Sequence[str], target: Sequence[str], overrides: Mapping[str, str | None] | None = None
) -> dict[str, str | None]:
    """Map each target class to a source class (same name unless ``overrides`` says otherwise).

    Args:
        source: The training classes.
        target: The test dataset's classes.
        overrides: ``{target class: source class}``; ``None`` excludes a target class.

    Returns:
        ``{target class: source class or None}`` for every target class.

    Raises:
        ValueError: A target class that is neither a source class nor mapped, or a mapping
            to an unknown source class or from an unknown target class.
    """
    extra = dict(overrides or {})
    unknown_keys = [k for k in extra if k not in target]
    if unknown_keys:
        raise ValueError(f"class map: {unknown_keys} are not test classes {list(target)}")
    bad_values = [v for v in extra.values() if v is not None and v not in source]
    if bad_values:
        raise ValueError(f"class map: {bad_values} are not training classes {list(source)}")
    mapping: dict[str, str | None] = {}
    missing = []
    for name in target:
        if name in extra:
            mapping[name] = extra[name]
        elif name in source:
            mapping[name] = name
        else:
            missing.append(name)
    if missing:
        raise ValueError(
            f"test classes {missing} have no training class of the same name; map each to one "
            f"of {list(source)} or to None (excluded, and counted as such)"
        )
    return mapping


@dataclass(frozen=True)
class CrossDatasetResult:
    """Scores of each fold's model on another dataset.

    Attributes:
        name: The cross-validated model's name.
        target: A name for the test dataset.
        classes: The training classes (the label space of the scores).
        mapping: ``{test class: training class or None}``.
        fold_metrics: The metrics of each fold's model on the test images.
        n_images: Test images scored.
        excluded: Test images of classes mapped to ``None``.
    """

    name: str
    target: str
    classes: tuple[str, ...]
    mapping: dict[str, str | None]
    fold_metrics: list[dict[str, float]] = field(default_factory=list)
    n_images: int = 0
    excluded: int = 0

    def summary(self) -> dict[str, Summary]:
        """Mean, spread and interval over folds of each metric."""
        keys = self.fold_metrics[0].keys() if self.fold_metrics else ()
        return {k: summarize([m[k] for m in self.fold_metrics]) for k in keys}

    def to_markdown(self, digits: int = 3) -> str:
        """A one-line table of accuracy, F1 and AUC (mean ± std over folds)."""
        s = self.summary()
        cells = [s[k].format(digits) for k in ("accuracy", "f1", "auroc")]
        head = "| model | test data | images | accuracy | F1 | AUC |\n" + "| --- " * 6 + "|\n"
        return (
            head + f"| {self.name} | {self.target} | {self.n_images} | " + " | ".join(cells) + " |"
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types."""
        return {
            "name": self.name, "target": self.target, "classes": list(self.classes),
            "mapping": self.mapping, "fold_metrics": self.fold_metrics,
            "n_images": self.n_images, "excluded": self.excluded,
        }  # fmt: skip


def cross_dataset_test(
    result: Any,
    dataset: WBCDataset,
    *,
    class_map: Mapping[str, str | None] | None = None,
    pipeline: Any = None,
    target_name: str | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> CrossDatasetResult:
    """Score every fold's model of a cross-validation on all images of another dataset.

    Args:
        result: A :class:`~leukemia_wbc.experiments.CVResult` with an output folder.
        dataset: The test dataset (another lab, stain or camera); resampled to the run's
            physical scale if it had one (see
            :func:`~leukemia_wbc.evaluation.robustness.framed_like`).
        class_map: ``{test class: training class or None}`` for the classes whose names differ
            (see :func:`class_mapping`).
        pipeline: Deprecated and unused: each fold's checkpoint carries its pipeline (e.g.
            its fitted stain target; see :class:`~leukemia_wbc.inference.TrainedModel`).
        target_name: Name of the test dataset in tables (default: its class name).
        batch_size: Images per batch.
        progress: Show a progress bar.

    Returns:
        The per-fold scores.

    Raises:
        ValueError: Unmappable classes, or no test image left after the mapping.
    """
    dataset = framed_like(result, dataset)
    classes = tuple(result.classes)
    mapping = class_mapping(classes, dataset.classes, class_map)
    target_to_source = np.array(
        [-1 if mapping[c] is None else classes.index(str(mapping[c])) for c in dataset.classes]
    )
    labels = target_to_source[np.asarray(dataset.labels)]
    keep = np.flatnonzero(labels >= 0)
    if not len(keep):
        raise ValueError("no test image is left after the class mapping")
    batches = sample_batches(dataset, keep.tolist(), batch_size)
    fold_metrics = []
    for fold in tqdm([f.fold for f in result.folds], desc="cross-dataset", disable=not progress):
        predict = fold_predictor(result, fold, pipeline)  # warns when pipeline is given
        probs = np.concatenate([predict(b) for b in batches])
        fold_metrics.append(
            classification_metrics(labels[keep], probs, classes, where=f"fold {fold}")
        )
    return CrossDatasetResult(
        name=result.name,
        target=target_name or type(dataset).__name__,
        classes=classes,
        mapping=mapping,
        fold_metrics=fold_metrics,
        n_images=len(keep),
        excluded=int((labels < 0).sum()),
    )
