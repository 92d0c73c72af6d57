"""``CVResult``: what a cross-validation produced, its summaries, and the comparison table."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._io import atomic_write_text, json_safe, markdown_row
from ..data.splits import Split, kfold_split
from ..metrics import (
    METRIC_LABELS,
    MIN_FOLDS_FOR_INTERVAL,
    PER_CLASS_METRICS,
    SUMMARY_METRICS,
    RocCurve,
    Summary,
    classification_metrics,
    confusion_matrix,
    roc_curves,
    summarize,
)
from .fold_result import FoldResult
from .predictions import Predictions

if TYPE_CHECKING:
    from .fold_attributions import FoldAttributions
    from .fold_model import FoldModel, FoldModelInfo

__all__ = ["CVResult", "FoldResult"]


@dataclass
class CVResult:
    """Per-fold results and out-of-fold predictions of one model's cross-validation.

    Attributes:
        name: Model name (a row of the comparison table).
        classes: Class names.
        folds: One :class:`FoldResult` per finished fold, by fold index.
        predictions: Out-of-fold predictions of those folds.
        config: The configuration the folds were run with (model, data, split).
        output_dir: Folder the results live in, if any.
    """

    name: str
    classes: tuple[str, ...]
    folds: list[FoldResult]
    predictions: Predictions
    config: dict[str, Any] = field(default_factory=dict)
    output_dir: Path | None = None

    def fold_metric(self, metric: str) -> np.ndarray:
        """One metric's value in each fold.

        Args:
            metric: A key of the fold metrics (``"accuracy"``, ``"f1_ALL"``, ...).

        Returns:
            ``(n_folds,)`` values (``NaN`` where undefined).

        Raises:
            KeyError: An unknown metric.
        """
        if self.folds and metric not in self.folds[0].metrics:
            raise KeyError(f"unknown metric {metric!r}; known: {sorted(self.folds[0].metrics)}")
        return np.array([f.metrics.get(metric, float("nan")) for f in self.folds])

    def summary(self) -> dict[str, Summary]:
        """Mean, std and 95 % interval across folds of every fold metric."""
        keys = list(self.folds[0].metrics) if self.folds else []
        return {k: summarize(self.fold_metric(k)) for k in keys}

    def per_class(self) -> dict[str, dict[str, Summary]]:
        """Class name to per-class metric (precision, recall, f1, auroc) summaries."""
        s = self.summary()
        return {c: {m: s[f"{m}_{c}"] for m in PER_CLASS_METRICS} for c in self.classes}

    def pooled_metrics(self) -> dict[str, float]:
        """Metrics of all out-of-fold predictions pooled (one set, not a mean over folds)."""
        return classification_metrics(
            self.predictions.label,
            self.predictions.probs,
            self.classes,
            where=f"{self.name} pooled",
        )

    def roc(self) -> dict[str, RocCurve]:
        """One-vs-rest ROC curve per class from the pooled out-of-fold predictions."""
        return roc_curves(self.predictions.label, self.predictions.probs, self.classes)

    def confusion(self, *, normalize: bool = False) -> np.ndarray:
        """Confusion matrix of the pooled out-of-fold predictions (rows true, columns predicted).

        Args:
            normalize: Divide each row by its count (rows of absent classes stay 0).

        Returns:
            ``(C, C)`` counts (``int64``) or row fractions (``float64``).
        """
        cm = confusion_matrix(self.predictions.label, self.predictions.pred, len(self.classes))
        if not normalize:
            return cm
        rows = cm.sum(axis=1, keepdims=True)
        fractions: np.ndarray = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
        return fractions

    def split(self, fold: int) -> Split:
        """The split (dataset positions) fold ``fold`` was trained and tested on.

        Rebuilt from the out-of-fold predictions (every labelled sample is held out once, with
        its label and group) and the split settings in :attr:`config`.

        Args:
            fold: Fold index.

        Returns:
            The :class:`~leukemia_wbc.data.splits.Split`.
        """
        p = self.predictions
        settings = self.config.get("split", {})
        part = kfold_split(
            p.fold,
            fold,
            labels=p.label,
            groups=p.group if settings.get("grouped") else None,
            val_fraction=settings.get("val_fraction"),
            seed=int(settings.get("seed", 0)),
        )
        return Split(p.index[part.train], p.index[part.val], p.index[part.test])

    def _checkpoint(self, fold: int) -> str:
        found = [f for f in self.folds if f.fold == fold]
        if self.output_dir is None or not found or found[0].checkpoint is None:
            raise ValueError(f"{self.name}: fold {fold} has no saved checkpoint to load")
        return found[0].checkpoint

    @property
    def model_info(self) -> FoldModelInfo:
        """What the folds trained, as its fold model describes itself (from :attr:`config`).

        Nothing is loaded: the description comes from the recorded class (or, for a class this
        program does not define, from the folds' files).
        """
        from .fold_model import describe_recorded

        files = [f.checkpoint for f in self.folds if f.checkpoint]
        return describe_recorded(self.config, files[0] if files else None)

    @property
    def is_baseline(self) -> bool:
        """Whether the folds trained a feature baseline (an SVM), not a network."""
        return not self.model_info.explainable

    def fold_model(self, fold: int, *, device: Any = "cpu", segmenter: Any = None) -> FoldModel:
        """Fold ``fold``'s fitted model, in the adapter its recorded class calls for.

        The class is looked up among the library's tasks and baselines and the user's
        subclasses by the name the folder recorded, never imported from it (see
        :func:`~leukemia_wbc.experiments.load_fold_model`).

        Args:
            fold: Fold index.
            device: Where a network runs.
            segmenter: Replace the saved segmenter (a method name, a checkpoint or a module).

        Returns:
            The :class:`~leukemia_wbc.experiments.FoldModel`; its ``predict_proba`` columns are
            :attr:`classes`.

        Raises:
            ValueError: No output folder, the fold has no checkpoint, or an unknown class.
        """
        from ._folds import fold_dir
        from .fold_model import load_fold_model

        checkpoint = self._checkpoint(fold)
        assert self.output_dir is not None
        data = {**self.config.get("data", {}), "classes": list(self.classes)}
        return load_fold_model(
            fold_dir(self.output_dir, fold),
            config={**self.config, "data": data},
            checkpoint=checkpoint,
            device=device,
            segmenter=segmenter,
        )

    def load_model(self, fold: int, **kwargs: Any) -> Any:
        """The saved model of fold ``fold``: the task (evaluation mode) or the fitted SVM.

        A task is rebuilt safely from its checkpoint (see
        :func:`~leukemia_wbc.inference.build_task`), with the segmenter it was trained with; the
        SVM class is looked up among the library's baselines and the user's subclasses by the
        name the folder recorded, never imported from it (see :meth:`fold_model`).

        Args:
            fold: Fold index.
            **kwargs: ``map_location`` (a device) is honoured; other keys are refused.

        Returns:
            The task, or the fitted SVM.

        Raises:
            ValueError: No output folder, the fold has no checkpoint, an unknown class, or
                other keyword arguments.
        """
        device = kwargs.pop("map_location", "cpu")
        if kwargs:
            raise ValueError(f"load_model: unexpected arguments {sorted(kwargs)}")
        return self.fold_model(fold, device=device).model

    def trained_model(self, fold: int, *, device: Any = "cpu", segmenter: Any = None) -> Any:
        """Fold ``fold``'s best checkpoint as a :class:`~leukemia_wbc.inference.TrainedModel`.

        Args:
            fold: Fold index.
            device: Where it runs.
            segmenter: Replace the saved segmenter (a method name, a checkpoint or a module).

        Returns:
            The trained model, with the pipeline and segmenter of its own fold.

        Raises:
            ValueError: A baseline (no deep model), or no checkpoint.
        """
        if self.is_baseline:
            raise ValueError(f"{self.name}: a feature baseline has no trained network")
        return self.fold_model(fold, device=device, segmenter=segmenter).trained_model()

    def attributions(self) -> list[FoldAttributions]:
        """The attribution galleries and nucleus-focus tables its folds wrote, if any.

        Read from ``fold_<k>/attributions/<method>/`` of :attr:`output_dir` (see
        ``CrossValidator(..., attributions=...)``), for the folds of this result only.

        Returns:
            The :class:`~leukemia_wbc.experiments.FoldAttributions`, by method then fold (empty
            without an output folder or when none were written).
        """
        from .fold_attributions import read_fold_attributions

        if self.output_dir is None:
            return []
        return read_fold_attributions(self.output_dir, folds=[f.fold for f in self.folds])

    # -- tables ------------------------------------------------------------------------------
    def to_markdown(self, digits: int = 3) -> str:
        """Per-fold metrics, then mean ± std and the 95 % interval, as a Markdown table.

        Args:
            digits: Decimals.

        Returns:
            The table.
        """
        head = ["fold", "n test", *(METRIC_LABELS[m] for m in SUMMARY_METRICS)]
        lines = [markdown_row(head), markdown_row(["---"] * len(head))]
        for f in self.folds:
            values = [_fmt(f.metrics[m], digits) for m in SUMMARY_METRICS]
            lines.append(markdown_row([str(f.fold), str(f.n_test), *values]))
        s = self.summary()
        lines.append(
            markdown_row(["mean ± std", "", *(s[m].format(digits) for m in SUMMARY_METRICS)])
        )
        ci = [_interval(s[m], digits) for m in SUMMARY_METRICS]
        n = len(self.folds)
        label = "95 % CI" if n >= MIN_FOLDS_FOR_INTERVAL else f"95 % CI ({n} folds: rough)"
        lines.append(markdown_row([label, "", *ci]))
        return "\n".join(lines) + "\n"

    # -- persistence -------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write ``result.json`` and ``predictions.csv`` into folder ``path``.

        Args:
            path: Output folder (created if needed).
        """
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        body = {
            "name": self.name,
            "classes": list(self.classes),
            "config": self.config,
            "folds": [json_safe(asdict(f)) for f in self.folds],
            "summary": {k: json_safe(asdict(v)) for k, v in self.summary().items()},
        }
        atomic_write_text(out / "result.json", json.dumps(body, indent=2))
        self.predictions.to_csv(out / "predictions.csv")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CVResult:
        """Read a folder written by :meth:`save`.

        Args:
            path: The folder.

        Returns:
            The result.

        Raises:
            FileNotFoundError: ``result.json`` or ``predictions.csv`` is missing.
        """
        folder = Path(path)
        for name in ("result.json", "predictions.csv"):
            if not (folder / name).is_file():
                raise FileNotFoundError(
                    f"{folder / name} not found: expected a folder written "
                    "by CVResult.save or CrossValidator.run"
                )
        body = json.loads((folder / "result.json").read_text(encoding="utf-8"))
        return cls(
            name=body["name"],
            classes=tuple(body["classes"]),
            folds=[FoldResult.from_dict(f) for f in body["folds"]],
            predictions=Predictions.from_csv(folder / "predictions.csv"),
            config=body.get("config", {}),
            output_dir=folder,
        )


def _interval(summary: Summary, digits: int) -> str:
    """``[low, high]``, or why there is no interval (one fold, no spread, undefined)."""
    if summary.n == 0:
        return "undefined"
    if summary.n == 1:
        return "n/a (one fold)"
    if summary.std < 1e-9:  # equal values in every fold (up to rounding)
        return "n/a (no spread over folds)"
    return f"[{_fmt(summary.ci_low, digits)}, {_fmt(summary.ci_high, digits)}]"


def _fmt(value: float, digits: int) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"
