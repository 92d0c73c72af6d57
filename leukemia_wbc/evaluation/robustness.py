"""Robustness under stain and acquisition shift: models scored on perturbed held-out images.

A trained model is scored on its held-out images as they are, then under the seeded
perturbations of :mod:`leukemia_wbc.evaluation.perturbations` at several strengths, so that
every model sees the same perturbed images. The drop from the clean figure tells how much of a
model's accuracy rests on the stain and the camera rather than on the cell.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..data.base import WBCDataset
from ..data.datamodule import collate_samples
from ..experiments.fold_model import FoldModel, SklearnFoldModel
from ..metrics import classification_metrics
from .perturbations import PERTURBATIONS, Perturbation, perturb

__all__ = [
    "PERTURBATIONS",
    "Perturbation",
    "Predictor",
    "RobustnessResult",
    "baseline_predictor",
    "cv_robustness",
    "evaluate_robustness",
    "fold_predictor",
    "framed_like",
    "perturb",
    "sample_batches",
    "task_predictor",
]


@dataclass(frozen=True)
class RobustnessResult:
    """Scores of one model under every perturbation and strength.

    Attributes:
        clean: Metrics on the unperturbed images (``accuracy``, ``f1``, ``auroc``, ...).
        scores: ``{perturbation: {strength: metrics}}``.
        n_images: Images scored.
    """

    clean: dict[str, float]
    scores: dict[str, dict[float, dict[str, float]]] = field(default_factory=dict)
    n_images: int = 0

    def drop(self, perturbation: str, strength: float, metric: str = "accuracy") -> float:
        """Clean minus perturbed value of ``metric``.

        Args:
            perturbation: Perturbation name.
            strength: Strength evaluated.
            metric: Metric name.

        Returns:
            The drop (positive when the perturbation hurts).
        """
        return self.clean[metric] - self.scores[perturbation][strength][metric]

    def worst(self, prefix: str = "stain", metric: str = "accuracy") -> float:
        """The lowest ``metric`` over the perturbations whose name starts with ``prefix``.

        Args:
            prefix: Name prefix (``"stain"``: the stain-shift accuracy of the report).
            metric: Metric name.

        Returns:
            The lowest value at any strength (NaN when no perturbation matches).
        """
        values = [
            m[metric] for name, by in self.scores.items() if name.startswith(prefix)
            for m in by.values()
        ]  # fmt: skip
        return float(min(values)) if values else float("nan")

    def to_rows(self) -> list[dict[str, Any]]:
        """One row per perturbation and strength (the clean row first, strength 0)."""
        keys = ("accuracy", "f1", "auroc")
        rows = [{"perturbation": "none", "strength": 0.0, **{k: self.clean[k] for k in keys},
                 "accuracy_drop": 0.0}]  # fmt: skip
        for name, by in self.scores.items():
            for strength, m in by.items():
                rows.append({"perturbation": name, "strength": strength,
                             **{k: m[k] for k in keys},
                             "accuracy_drop": self.clean["accuracy"] - m["accuracy"]})  # fmt: skip
        return rows

    def table(self) -> str:
        """A Markdown table: accuracy (drop) per perturbation and strength."""
        strengths = sorted({s for by in self.scores.values() for s in by})
        head = "| perturbation | " + " | ".join(f"strength {s:g}" for s in strengths) + " |"
        clean = f"| none | {self.clean['accuracy']:.3f} |" + " |" * (len(strengths) - 1)
        rows = [head, "| --- |" + " --- |" * len(strengths), clean]
        for name, by in self.scores.items():
            cells = [
                f"{by[s]['accuracy']:.3f} ({-self.drop(name, s):+.3f})" if s in by else "-"
                for s in strengths
            ]
            rows.append(f"| {name} | " + " | ".join(cells) + " |")
        return "\n".join(rows)


#: A model under test: a batch dict (uint8 ``image`` ``(B, 3, H, W)``, ``mask``) to ``(B, C)``
#: class probabilities.
Predictor = Callable[[dict[str, Any]], np.ndarray]


def evaluate_robustness(
    predict: Predictor,
    dataset: WBCDataset,
    indices: Iterable[int] | None = None,
    *,
    perturbations: Sequence[str] = tuple(PERTURBATIONS),
    strengths: Sequence[float] = (0.25, 0.5, 1.0),
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
) -> RobustnessResult:
    """Score a model on images of ``dataset``, clean and under every perturbation.

    Args:
        predict: The model (see :func:`task_predictor` and :func:`baseline_predictor`).
        dataset: Labelled dataset; its samples' ``image`` (uint8) and ``mask`` are used.
        indices: The held-out samples (all when ``None``).
        perturbations: Names from :data:`PERTURBATIONS`.
        strengths: Strengths in ``(0, 1]``.
        batch_size: Images per batch.
        seed: Seed of the perturbations (the same for every model).
        progress: Show a progress bar.

    Returns:
        The scores.

    Raises:
        ValueError: An unknown perturbation, a strength outside ``(0, 1]`` or no samples.
    """
    unknown = [p for p in perturbations if p not in PERTURBATIONS]
    if unknown:
        raise ValueError(
            f"unknown perturbations {unknown}; expected names of {sorted(PERTURBATIONS)}"
        )
    if not strengths or any(not 0.0 < s <= 1.0 for s in strengths):
        raise ValueError(f"strengths must lie in (0, 1], got {list(strengths)}")
    idx = list(range(len(dataset))) if indices is None else [int(i) for i in indices]
    if not idx:
        raise ValueError("no samples to evaluate")
    batches = sample_batches(dataset, idx, batch_size)
    labels = np.concatenate([b["label"].numpy() for b in batches])
    conditions = [("none", 0.0)] + [(p, float(s)) for p in perturbations for s in strengths]
    results: dict[tuple[str, float], dict[str, float]] = {}
    for name, strength in tqdm(conditions, desc="robustness", disable=not progress):
        probs = []
        for k, batch in enumerate(batches):
            image = (
                batch["image"]
                if name == "none"
                else perturb(batch["image"], name, strength, seed + k)
            )
            probs.append(predict({**batch, "image": image}))
        results[(name, strength)] = classification_metrics(
            labels, np.concatenate(probs), dataset.classes, where=f"{name} {strength:g}"
        )
    scores: dict[str, dict[float, dict[str, float]]] = {}
    for (name, strength), metrics in results.items():
        if name != "none":
            scores.setdefault(name, {})[strength] = metrics
    return RobustnessResult(clean=results[("none", 0.0)], scores=scores, n_images=len(idx))


def task_predictor(task: Any, pipeline: Any = None) -> Predictor:
    """A :data:`Predictor` from a classification task and its evaluation pipeline.

    Args:
        task: A :class:`~leukemia_wbc.tasks.ClassificationTask` (put in evaluation mode).
        pipeline: Its :class:`~leukemia_wbc.transforms.DevicePipeline` (default: channel
            normalisation with ImageNet statistics; the CLI restores a checkpoint's own).

    Returns:
        The predictor.
    """
    from ..transforms.pipeline import DevicePipeline

    task.eval()
    stage = DevicePipeline() if pipeline is None else pipeline

    @torch.inference_mode()
    def predict(batch: dict[str, Any]) -> np.ndarray:
        device = next(task.parameters()).device
        moved = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
        prepare = getattr(task, "prepare_batch", None)  # segmenting the decoded images
        moved = prepare(moved) if callable(prepare) else moved
        out = task.forward_batch(stage.to(device)(moved, train=False)).float().softmax(1)
        return np.asarray(out.cpu().numpy())

    return predict


def baseline_predictor(model: Any, num_classes: int) -> Predictor:
    """A :data:`Predictor` from a fitted feature baseline (SVM or colour shortcut).

    Args:
        model: A fitted :class:`~leukemia_wbc.models.HandcraftedSVM` or subclass.
        num_classes: Columns of the output (classes absent from training get 0).

    Returns:
        The predictor (:meth:`~leukemia_wbc.experiments.FoldModel.predict_proba` of its
        fold model).
    """
    return SklearnFoldModel(model, num_classes=num_classes).predict_proba


def cv_robustness(
    result: Any,
    dataset: WBCDataset,
    *,
    pipeline: Any = None,
    perturbations: Sequence[str] = tuple(PERTURBATIONS),
    strengths: Sequence[float] = (0.25, 0.5, 1.0),
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
) -> RobustnessResult:
    """Each fold's best model on its own held-out images, clean and perturbed, pooled.

    Every fold is scored with :func:`evaluate_robustness` on exactly the images it was tested
    on in the cross-validation; the metrics of each condition are then the means over folds.

    Args:
        result: A :class:`~leukemia_wbc.experiments.CVResult` with an output folder (its
            checkpoints or fitted baselines are loaded).
        dataset: The dataset the cross-validation ran on (resampled to the run's physical
            scale, if it had one and ``dataset`` is not at it: see :func:`framed_like`).
        pipeline: Deprecated and unused: each fold's model is applied with the pipeline its
            checkpoint carries (e.g. the Macenko target fitted on its training images).
        perturbations: Names from :data:`PERTURBATIONS`.
        strengths: Strengths in ``(0, 1]``.
        batch_size: Images per batch.
        seed: Seed of the perturbations.
        progress: Show progress bars.

    Returns:
        The fold-mean scores; ``n_images`` counts every held-out image once.

    Raises:
        ValueError: A fold without a saved model, or the checks of :func:`evaluate_robustness`.
    """
    _warn_pipeline(pipeline)
    dataset = framed_like(result, dataset)
    per_fold: list[RobustnessResult] = []
    for fold in tqdm([f.fold for f in result.folds], desc="folds", disable=not progress):
        predict = fold_predictor(result, fold)
        per_fold.append(
            evaluate_robustness(
                predict, dataset, result.split(fold).test, perturbations=perturbations,
                strengths=strengths, batch_size=batch_size, seed=seed, progress=False,
            )
        )  # fmt: skip
    return _mean(per_fold)


def fold_predictor(result: Any, fold: int, pipeline: Any = None) -> Predictor:
    """A :data:`Predictor` of fold ``fold``'s saved model, deep task or feature baseline.

    The fold's :class:`~leukemia_wbc.experiments.FoldModel` predicts (see
    :meth:`CVResult.fold_model`): a deep task is loaded as a
    :class:`~leukemia_wbc.inference.TrainedModel`, with the pipeline its checkpoint carries
    (e.g. the Macenko target fitted on the fold's own training images) and its segmenter.

    Args:
        result: A :class:`~leukemia_wbc.experiments.CVResult` with an output folder.
        fold: Fold index.
        pipeline: Deprecated and unused: each fold's checkpoint carries its pipeline.

    Returns:
        The predictor, its columns the result's classes.

    Raises:
        ValueError: The fold has no saved model.
    """
    _warn_pipeline(pipeline)
    model: FoldModel = result.fold_model(fold, device="cpu")
    return model.predict_proba


def framed_like(result: Any, dataset: WBCDataset) -> WBCDataset:
    """``dataset`` at the physical scale the run's training images were resampled to.

    A run whose DataModule had ``target_pixels_per_um`` records it in its configuration; a
    dataset scored against its models is then resampled the same way (its pixel size must be
    known), unless it already is.

    Args:
        result: A :class:`~leukemia_wbc.experiments.CVResult`.
        dataset: The images to score.

    Returns:
        ``dataset``, or its :meth:`~leukemia_wbc.data.WBCDataset.with_scale` view.

    Raises:
        ValueError: The run had a physical scale and a sample's pixel size is not known.
    """
    config = getattr(result, "config", None) or {}
    scale = config.get("data", {}).get("datamodule", {}).get("target_pixels_per_um")
    if scale is None or dataset.target_pixels_per_um == scale:
        return dataset
    return dataset.with_scale(float(scale))


def _warn_pipeline(pipeline: Any) -> None:
    if pipeline is not None:
        warnings.warn(
            "the pipeline argument is no longer used: each fold's checkpoint carries the "
            "pipeline it was trained with",
            DeprecationWarning,
            stacklevel=3,
        )


def sample_batches(
    dataset: WBCDataset, indices: Sequence[int], batch_size: int
) -> list[dict[str, Any]]:
    """The samples at ``indices`` decoded once, as collated batches.

    Args:
        dataset: The dataset.
        indices: Sample positions, in order.
        batch_size: Samples per batch.

    Returns:
        The batches.
    """
    return [
        collate_samples([dataset[int(i)] for i in indices[start : start + batch_size]])
        for start in range(0, len(indices), batch_size)
    ]


def _mean(parts: Sequence[RobustnessResult]) -> RobustnessResult:
    """The fold-mean of several results over the same conditions."""

    def average(items: Sequence[dict[str, float]]) -> dict[str, float]:
        return {k: float(np.nanmean([m[k] for m in items])) for k in items[0]}

    clean = average([p.clean for p in parts])
    scores = {
        name: {s: average([p.scores[name][s] for p in parts]) for s in by}
        for name, by in parts[0].scores.items()
    }
    return RobustnessResult(clean, scores, sum(p.n_images for p in parts))
