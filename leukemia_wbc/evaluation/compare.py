"""``compare``: the paper's comparison table of several models under identical folds."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from .._io import atomic_write_text, markdown_row
from ..experiments.result import CVResult
from ..metrics import METRIC_LABELS, PER_CLASS_METRICS, SUMMARY_METRICS

__all__ = ["compare"]


def compare(
    results: Sequence[CVResult],
    path: str | os.PathLike[str] | None = None,
    *,
    digits: int = 3,
    stain_shift: Mapping[str, float] | None = None,
) -> str:
    """The paper's comparison table: models under identical splits, mean ± std over folds.

    One row per model (accuracy, macro precision, recall, F1 and AUC), then one row per model
    and class (precision, recall, F1, AUC).

    Args:
        results: Cross-validation results of the models to compare.
        path: Markdown file to write the table to (replaced if it exists: it is derived from
            the results, which are never touched).
        digits: Decimals.
        stain_shift: Model name to its stain-shift accuracy (e.g.
            :meth:`RobustnessResult.worst <leukemia_wbc.evaluation.RobustnessResult.worst>`):
            adds a "Stain-shift accuracy" column ("n/a" for a model without one).

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
    for r in results:
        s = r.summary()
        cells = [r.name, *(s[m].format(digits) for m in SUMMARY_METRICS)]
        if stain_shift is not None:
            value = stain_shift.get(r.name)
            cells.append("n/a" if value is None else f"{value:.{digits}f}")
        lines.append(markdown_row(cells))
    lines += [
        "",
        markdown_row(["Model", "Class", *(METRIC_LABELS[m] for m in PER_CLASS_METRICS)]),
        markdown_row(["---"] * (2 + len(PER_CLASS_METRICS))),
    ]
    for r in results:
        for cls, values in r.per_class().items():
            lines.append(
                markdown_row([r.name, cls, *(values[m].format(digits) for m in PER_CLASS_METRICS)])
            )
    text = "\n".join(lines) + "\n"
    if path is not None:
        atomic_write_text(path, text)
    return text
