"""A cross-validation's output folder: what was run, the fold assignment, the merged folds.

The folder holds ``config.json`` (what was run), ``folds.csv`` (the fold of every labelled
sample) and one ``fold_<k>/`` per fold (see :mod:`._folds`). A folder of another configuration
is refused, so finished results are never overwritten.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_write_text
from ..data.base import WBCDataset
from ..tasks.optim import upgrade_hparams
from ._folds import CONFIG_FILE, fold_dir, is_finished, read_fold
from ._spec import differences, jsonable
from .predictions import Predictions
from .result import CVResult, FoldResult

__all__ = ["collect_folds", "prepare_output", "samples_sha1"]


def samples_sha1(dataset: WBCDataset) -> str:
    """A digest of every sample's path, label and group (what a run's config records).

    Args:
        dataset: The dataset.

    Returns:
        The SHA-1 hex digest.
    """
    digest = hashlib.sha1()
    for path, label, grp in zip(
        dataset.paths, dataset.labels.tolist(), dataset.groups, strict=True
    ):
        digest.update(f"{path}\t{label}\t{grp}\n".encode())
    return digest.hexdigest()


def prepare_output(
    out: Path, config: dict[str, Any], dataset: WBCDataset, folds: np.ndarray
) -> None:
    """Create the folder with its ``config.json`` and ``folds.csv``, or check an existing one.

    Args:
        out: The output folder.
        config: The run's configuration.
        dataset: The dataset.
        folds: The fold of every dataset sample (-1 for unlabelled ones, which are not listed).

    Raises:
        ValueError: The folder holds results of another configuration.
    """
    out.mkdir(parents=True, exist_ok=True)
    path = out / CONFIG_FILE
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        model = saved.get("model") if isinstance(saved, dict) else None
        if isinstance(model, dict) and isinstance(model.get("hparams"), dict):
            # folders written before OptimConfig record the optimiser settings flat
            model["hparams"] = jsonable(upgrade_hparams(model["hparams"]))
        diff = differences(saved, config)
        if diff:
            raise ValueError(
                f"{out} holds results of another configuration ({'; '.join(diff[:5])}); "
                "use a new output_dir (finished results are never overwritten)"
            )
        return
    atomic_write_text(path, json.dumps(config, indent=2))
    lines = ["index,path,group,label,fold"]
    lines += [
        f"{i},{json.dumps(dataset.paths[i])},{json.dumps(dataset.groups[i])},"
        f"{int(dataset.labels[i])},{int(folds[i])}"
        for i in np.flatnonzero(folds >= 0)
    ]
    atomic_write_text(out / "folds.csv", "\n".join(lines) + "\n")


def collect_folds(out: Path, *, allow_partial: bool = False) -> CVResult:
    """Merge the finished folds of an output folder.

    Args:
        out: The folder a :class:`~leukemia_wbc.experiments.CrossValidator` wrote.
        allow_partial: Return the finished folds when some are missing (otherwise an error
            lists them).

    Returns:
        The merged :class:`~leukemia_wbc.experiments.CVResult`.

    Raises:
        FileNotFoundError: The folder has no ``config.json``.
        ValueError: Unfinished folds (without ``allow_partial``), or none finished.
    """
    if not (out / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{out / CONFIG_FILE} not found: not a CrossValidator folder")
    config = json.loads((out / CONFIG_FILE).read_text(encoding="utf-8"))
    n_splits = int(config["split"]["n_splits"])
    done = [k for k in range(n_splits) if is_finished(out, k)]
    missing = sorted(set(range(n_splits)) - set(done))
    if not done or (missing and not allow_partial):
        raise ValueError(
            f"{out}: folds {missing} of {n_splits} are not finished; run them "
            "(CrossValidator.run(folds=...)) before collecting"
        )
    folds: list[FoldResult] = []
    parts: list[Predictions] = []
    for k in done:
        fold, preds = read_fold(fold_dir(out, k))
        folds.append(fold)
        parts.append(preds)
    return CVResult(
        name=config["name"],
        classes=tuple(config["data"]["classes"]),
        folds=folds,
        predictions=Predictions.concat(parts),
        config=config,
        output_dir=out,
    )
