"""A cross-validation's output folder: what was run, the fold assignment, the merged folds.

The folder holds ``config.json`` (what was run), ``folds.csv`` (the fold of every labelled
sample) and one ``fold_<k>/`` per fold (see :mod:`._folds`). A folder of another configuration
is refused, so finished results are never overwritten; a fold trained again from the start has
its files moved to ``restarted/fold_<k>-<time>/`` first, never deleted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_write_text
from ..data.base import WBCDataset
from ..data.datamodule import WBCDataModule
from ..tasks.optim import upgrade_hparams
from ._fold_checks import RESTARTED_DIR
from ._folds import CONFIG_FILE, fold_dir, is_finished, read_fold
from ._spec import differences, jsonable
from .predictions import Predictions
from .result import CVResult, FoldResult

__all__ = ["collect_folds", "move_aside", "prepare_output", "run_config", "samples_sha1"]

_log = logging.getLogger(__name__)


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


def run_config(
    name: str,
    model: dict[str, Any],
    datamodule: WBCDataModule,
    *,
    split: dict[str, Any],
    training: dict[str, Any],
) -> dict[str, Any]:
    """What a run records in ``config.json`` (and compares when it resumes).

    Args:
        name: The model's name in tables.
        model: The fold model's ``info.config``.
        datamodule: The data.
        split: The fold settings (``n_splits``, ``seed``, ``stratify``, ``grouped``,
            ``val_fraction``).
        training: The training settings (``max_epochs``, ``precision``,
            ``early_stopping_patience``).

    Returns:
        The configuration, in JSON types.
    """
    ds = datamodule.dataset
    data = {
        "dataset": type(ds).__name__,
        "n": len(ds),
        "classes": list(ds.classes),
        "samples_sha1": samples_sha1(ds),
        "datamodule": jsonable(dict(datamodule.hparams)),
    }
    return {"name": name, "model": model, "data": data, "split": split, "training": training}


#: Task arguments added after runs were recorded, with their defaults: a folder whose
#: ``config.json`` lacks one ran with its default, so it still compares equal.
_ADDED_ARGUMENTS: dict[str, Any] = {"consistency": 0.0, "features": None, "feature_width": 32}


def _fill_added_arguments(saved: dict[str, Any], config: dict[str, Any]) -> None:
    """Give a saved run's hyperparameters the defaults of arguments added since it ran."""
    new = config.get("model", {}).get("hparams", {})
    for key, default in _ADDED_ARGUMENTS.items():
        if key not in saved and key in new and new[key] == default:
            saved[key] = default


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
            _fill_added_arguments(model["hparams"], config)
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


def move_aside(out: Path, fold: int, *, keep: str) -> Path | None:
    """Move a fold's files to ``out/restarted/fold_<k>-<time>/`` so that it trains from the start.

    Args:
        out: The output folder.
        fold: The fold index.
        keep: A file name left in the fold's folder (its lock).

    Returns:
        The folder the files went to; ``None`` when the fold had none.
    """
    folder = fold_dir(out, fold)
    entries = sorted(p for p in folder.iterdir() if p.name != keep) if folder.is_dir() else []
    if not entries:
        return None
    base = out / RESTARTED_DIR / f"fold_{fold}-{time.strftime('%Y%m%d-%H%M%S')}"
    dest, n = base, 0
    while dest.exists():
        n += 1
        dest = base.with_name(f"{base.name}-{n}")
    dest.mkdir(parents=True)
    for entry in entries:
        entry.rename(dest / entry.name)
    _log.warning("fold %d: its files are moved to %s (kept, not deleted); training it from the "
                 "start", fold, dest)  # fmt: skip
    return dest
