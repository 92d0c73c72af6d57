"""``compare``: the paper's comparison table of several models under identical folds."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from .._io import atomic_write_text, markdown_row
from ..experiments.result import CVResult
from ..metrics import (
    METRIC_LABELS,
    MIN_FOLDS_FOR_INTERVAL,
    PER_CLASS_METRICS,
    SUMMARY_METRICS,
    Summary,
)
from .chance import _MARGIN, chance_results, honesty_warnings

__all__ = ["AUC_NOTE", "compare", "comparison_warnings", "shortcut_warnings"]

#: What the AUC of the tables is, said wherever it appears (the ROC figures show the pooled one).
AUC_NOTE = (
    "AUC in tables is the mean of the per-fold one-vs-rest AUCs (macro over classes); the ROC "
    "figures give the AUC of all out-of-fold predictions pooled, which can differ."
)


def comparison_warnings(results: Sequence[CVResult], majority: CVResult | None = None) -> list[str]:
    """The :func:`~leukemia_wbc.evaluation.chance.honesty_warnings` of every model.

    Args:
        results: Cross-validation results on identical folds.
        majority: Their majority-class row (computed from ``results[0]`` when not given).

    Returns:
        The warnings, model by model.
    """
    if not results:
        return []
    if majority is None:
        majority = chance_results(results[0])[0]
    return [w for r in results for w in honesty_warnings(r, majority)]


def shortcut_warnings(
    results: Sequence[CVResult], stain_shift: Mapping[str, float] | None = None
) -> list[str]:
    """Warnings about models that do no better than colour alone, clean or under a stain shift.

    The reference is the colour-shortcut baseline among ``results`` (a model whose
    :attr:`~leukemia_wbc.experiments.FoldModelInfo.shortcut` is ``"colour"``, e.g.
    :class:`~leukemia_wbc.models.ColourShortcutBaseline` on the same folds); without one there
    is nothing to compare with. A model is named when its mean accuracy does not beat the
    baseline's by more than a point, and when its stain-shift accuracy (see
    :func:`~leukemia_wbc.evaluation.cv_robustness`) does not beat the baseline's under the
    same shift: then what it scores rests on the stain, not on the cell.

    Args:
        results: Cross-validation results on identical folds.
        stain_shift: Model name to its accuracy under the strongest stain perturbation.

    Returns:
        The warnings, model by model (empty without a colour baseline).
    """
    colour = [r for r in results if r.model_info.shortcut == "colour"]
    if not colour:
        return []
    base = colour[0]
    base_clean = base.summary()["accuracy"].mean
    base_shift = None if stain_shift is None else stain_shift.get(base.name)
    found: list[str] = []
    for r in results:
        if r.model_info.shortcut is not None:
            continue
        clean = r.summary()["accuracy"].mean
        if clean <= base_clean + _MARGIN:
            found.append(
                f"{r.name}'s accuracy {clean:.3f} does not beat {base.name} ({base_clean:.3f}), "
                "which sees only whole-image colour statistics: on these data it may have "
                "learned the stain, not the cell"
            )
        shifted = None if stain_shift is None else stain_shift.get(r.name)
        if shifted is not None and base_shift is not None and shifted <= base_shift + _MARGIN:
            found.append(
                f"under a stain shift {r.name} scores {shifted:.3f}, no better than colour "
                f"alone ({base.name}: {base_shift:.3f}): what it learned does not survive "
                "another stain (see the robustness section)"
            )
    return found


def _per_class_cell(values: dict[str, Summary], metric: str, digits: int) -> str:
    value = values[metric]
    if value.n == 0 and metric == "precision" and values["recall"].n > 0:
        return "undefined (never predicted)"
    if value.n == 0:
        return "undefined (no sample)"
    return value.format(digits)


def compare(
    results: Sequence[CVResult],
    path: str | os.PathLike[str] | None = None,
    *,
    digits: int = 3,
    stain_shift: Mapping[str, float] | None = None,
    chance: bool = True,
) -> str:
    """The paper's comparison table: models under identical splits, mean ± std over folds.

    One row per model (accuracy, balanced accuracy, macro precision, recall, F1 and AUC), then
    the majority-class and stratified-chance rows on the same folds, the warnings of
    :func:`comparison_warnings` and a note on the AUC, then one row per model and class
    (precision, recall, F1, AUC; "undefined" with the reason where a value does not exist).

    Args:
        results: Cross-validation results of the models to compare.
        path: Markdown file to write the table to (replaced if it exists: it is derived from
            the results, which are never touched).
        digits: Decimals.
        stain_shift: Model name to its stain-shift accuracy (e.g.
            :meth:`RobustnessResult.worst <leukemia_wbc.evaluation.RobustnessResult.worst>`):
            adds a "Stain-shift accuracy" column ("n/a" for a model without one).
        chance: Add the majority-class and stratified-chance rows and the warnings.

    Returns:
        The Markdown text.

    Raises:
        ValueError: No results, results over different classes, or results whose splits
            differ (a comparison is only fair on identical folds).
    """
    if not results:
        raise ValueError("compare needs at least one CVResult")
    classes = results[0].classes
    for r in results[1:]:
        if r.classes != classes:
            raise ValueError(f"{r.name} has classes {r.classes}, {results[0].name} {classes}")
        same = np.array_equal(r.predictions.index, results[0].predictions.index) and np.array_equal(
            r.predictions.fold, results[0].predictions.fold
        )
        if not same:
            raise ValueError(
                f"{r.name} and {results[0].name} were not run on identical folds; "
                "run every model with the same dataset, n_splits and seed"
            )
    head = ["Model", *(METRIC_LABELS[m] for m in SUMMARY_METRICS)]
    head += ["Stain-shift accuracy"] if stain_shift is not None else []
    lines = [markdown_row(head), markdown_row(["---"] * len(head))]
    guesses = chance_results(results[0]) if chance else []
    for r in [*results, *guesses]:
        s = r.summary()
        cells = [r.name, *(s[m].format(digits) for m in SUMMARY_METRICS)]
        if stain_shift is not None:
            value = stain_shift.get(r.name)
            cells.append("n/a" if value is None else f"{value:.{digits}f}")
        lines.append(markdown_row(cells))
    if chance:
        for warning in comparison_warnings(results, guesses[0]):
            lines += ["", f"**Warning:** {warning}."]
        lines += ["", AUC_NOTE, _interval_note(results)]
    lines += [
        "",
        markdown_row(["Model", "Class", *(METRIC_LABELS[m] for m in PER_CLASS_METRICS)]),
        markdown_row(["---"] * (2 + len(PER_CLASS_METRICS))),
    ]
    for r in results:
        for cls, values in r.per_class().items():
            lines.append(
                markdown_row(
                    [r.name, cls, *(_per_class_cell(values, m, digits) for m in PER_CLASS_METRICS)]
                )
            )
    text = "\n".join(line for i, line in enumerate(lines) if line or lines[i - 1]) + "\n"
    if path is not None:
        atomic_write_text(path, text)
    return text


def _interval_note(results: Sequence[CVResult]) -> str:
    """Mean ± std is over folds; a word of caution where the folds are few."""
    n = min(len(r.folds) for r in results)
    text = f"± is the standard deviation over {n} folds."
    if n < MIN_FOLDS_FOR_INTERVAL:
        text += (
            f" With fewer than {MIN_FOLDS_FOR_INTERVAL} folds the 95 % intervals of the "
            "per-model tables are wide and unreliable; read them as a rough range."
        )
    return text
