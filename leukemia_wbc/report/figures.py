"""Figures of a cross-validation: each returns PNG bytes.

The attribution gallery's grid lives in :mod:`~leukemia_wbc.report.gallery` (its two functions
are re-exported here).

Figures are plain :class:`matplotlib.figure.Figure` objects rendered by their own canvas, never
pyplot: importing this module changes no matplotlib state, and nothing is left open.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from matplotlib.figure import Figure

from ..experiments.pretraining import PretrainResult
from ..experiments.result import CVResult
from .gallery import fold_gallery_figure, gallery_figure

__all__ = [
    "class_balance_figure",
    "confusion_figure",
    "curves_figure",
    "fold_gallery_figure",
    "folds_figure",
    "gallery_figure",
    "pretrain_figure",
    "robustness_figure",
    "roc_figure",
]


def _subplots(
    *args: Any,
    figsize: tuple[float, float],
    layout: Literal["constrained"] | None = None,
    **kwargs: Any,
) -> tuple[Figure, Any]:
    """A new figure (not registered with pyplot) and its axes, as ``pyplot.subplots`` gives."""
    fig = Figure(figsize=figsize, layout=layout)
    return fig, fig.subplots(*args, **kwargs)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def class_balance_figure(classes: Sequence[str], counts: Sequence[int]) -> bytes:
    """Bar chart of samples per class."""
    fig, ax = _subplots(figsize=(1.6 + 0.8 * len(classes), 3.4))
    bars = ax.bar(list(classes), list(counts), color="#4c72b0")
    ax.bar_label(bars)
    ax.margins(y=0.12)  # room for the count above the tallest bar
    ax.tick_params(axis="x", labelrotation=30)
    for label in ax.get_xticklabels():  # long names slanted, anchored at their bar
        label.set_horizontalalignment("right")
        label.set_rotation_mode("anchor")
    ax.set_ylabel("cells")
    ax.set_title("Class balance")
    fig.tight_layout()
    return _png(fig)


def folds_figure(result: CVResult) -> bytes:
    """Stacked bars of held-out cells per class in each fold, with the number of groups."""
    p = result.predictions
    folds = sorted({int(f) for f in p.fold})
    fig, ax = _subplots(figsize=(1.5 + 0.6 * len(folds), 3))
    bottom = np.zeros(len(folds))
    for c, cls in enumerate(result.classes):
        counts = np.array([np.sum((p.fold == k) & (p.label == c)) for k in folds], dtype=float)
        ax.bar([str(k) for k in folds], counts, bottom=bottom, label=cls)
        bottom += counts
    groups = [len({g for g, f in zip(p.group, p.fold, strict=True) if f == k}) for k in folds]
    for i, n in enumerate(groups):
        ax.text(i, bottom[i], f"{n} groups", ha="center", va="bottom", fontsize=8)
    ax.set_xlabel("fold")
    ax.set_ylabel("held-out cells")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    ax.set_ylim(0, bottom.max() * 1.12)
    ax.set_title("Folds")
    return _png(fig)


def roc_figure(result: CVResult) -> bytes:
    """One-vs-rest ROC curves per class from the pooled out-of-fold predictions."""
    fig, ax = _subplots(figsize=(4.2, 4))
    for cls, curve in result.roc().items():
        ax.plot(curve.fpr, curve.tpr, label=f"{cls} (pooled AUC {curve.auc:.3f})")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.set_title(f"ROC of the pooled out-of-fold predictions: {result.name}", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def confusion_figure(result: CVResult) -> bytes:
    """Pooled confusion matrix: counts (left) and row-normalised (right)."""
    n = len(result.classes)
    fig, axes = _subplots(1, 2, figsize=(3.0 + 1.6 * n, 1.2 + 0.8 * n), layout="constrained")
    for ax, norm in zip(axes, (False, True), strict=True):
        cm = result.confusion(normalize=norm)
        ax.imshow(cm, cmap="Blues", vmin=0, vmax=1 if norm else max(int(cm.max()), 1))
        for i in range(n):
            for j in range(n):
                text = f"{cm[i, j]:.2f}" if norm else str(int(cm[i, j]))
                dark = cm[i, j] > (0.5 if norm else cm.max() / 2)
                ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if dark else "black",
                )
        ax.set_xticks(range(n), result.classes, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(n), result.classes, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title("row-normalised" if norm else "counts", fontsize=9)
    fig.suptitle(f"Confusion: {result.name}", fontsize=9)
    return _png(fig)


def curves_figure(result: CVResult) -> bytes | None:
    """Training and validation loss (and validation accuracy) per epoch, one line per fold.

    Returns:
        PNG bytes, or ``None`` when no fold has a training history (the SVM).
    """
    folds = [f for f in result.folds if f.history]
    if not folds:
        return None
    fig, (ax_loss, ax_acc) = _subplots(1, 2, figsize=(8, 3), layout="constrained")
    for f in folds:
        epochs = [h["epoch"] for h in f.history]
        colour = ax_loss.plot(
            epochs, [h.get("train_loss", math.nan) for h in f.history], label=f"fold {f.fold} train"
        )[0].get_color()
        ax_loss.plot(
            epochs,
            [h.get("val_loss", math.nan) for h in f.history],
            ls="--",
            color=colour,
            label=f"fold {f.fold} val",
        )
        ax_acc.plot(
            epochs,
            [h.get("val_accuracy", math.nan) for h in f.history],
            color=colour,
            label=f"fold {f.fold}",
        )
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend(fontsize=7)
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("validation accuracy")
    for ax in (ax_loss, ax_acc):
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(f"Training curves: {result.name}", fontsize=9)
    return _png(fig)


def pretrain_figure(result: PretrainResult, projection_dim: int) -> bytes:
    """A pretraining run per epoch: its losses, and the spread of its embeddings.

    The spread (``*_embedding_std``) is drawn against ``1/sqrt(projection_dim)``, its value
    for features spread evenly over the sphere; a fall towards 0 is a collapse (every cell
    mapped to one point), which a falling loss alone does not show.

    Args:
        result: The run (its per-epoch history).
        projection_dim: The projection size of the run's module.

    Returns:
        PNG bytes.
    """
    history = result.history
    epochs = list(range(1, len(history) + 1))
    fig, (ax_loss, ax_std) = _subplots(1, 2, figsize=(8, 3), layout="constrained")
    for stage, style in (("train", "-"), ("val", "--")):
        ax_loss.plot(epochs, [h.get(f"{stage}_loss", math.nan) for h in history], ls=style,
                     color="C0", label=stage)  # fmt: skip
        ax_std.plot(epochs, [h.get(f"{stage}_embedding_std", math.nan) for h in history],
                    ls=style, color="C1", label=stage)  # fmt: skip
    ax_std.axhline(1 / math.sqrt(projection_dim), color="0.5", lw=0.8, ls=":",
                   label="spread evenly")  # fmt: skip
    ax_std.set_ylim(bottom=0)
    ax_loss.set_ylabel(f"{result.method} loss")
    ax_std.set_ylabel("embedding spread (0 = collapse)")
    for ax in (ax_loss, ax_std):
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=7)
    fig.suptitle(f"Pretraining {result.backbone_name} ({result.method}) on "
                 f"{result.train_samples} cells", fontsize=9)  # fmt: skip
    return _png(fig)


def robustness_figure(robustness: Mapping[str, Any]) -> bytes:
    """Accuracy against perturbation strength: one panel per perturbation, a line per model.

    Args:
        robustness: Model name to :class:`~leukemia_wbc.evaluation.RobustnessResult`.

    Returns:
        PNG bytes.
    """
    names = list(dict.fromkeys(p for r in robustness.values() for p in r.scores))
    cols = min(4, max(1, len(names)))
    rows = math.ceil(len(names) / cols)
    fig, axes = _subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        for model, r in robustness.items():
            by = r.scores.get(name, {})
            xs = [0.0, *sorted(by)]
            ys = [r.clean["accuracy"], *(by[s]["accuracy"] for s in sorted(by))]
            ax.plot(xs, ys, marker="o", label=model)
        ax.set_title(name.replace("_", " "))
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("strength")
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)
