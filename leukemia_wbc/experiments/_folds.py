"""A fold's folder and its files, and the Lightning fold runner.

Every fold model (see :mod:`leukemia_wbc.experiments.fold_model`) writes the same files into its
fold's folder through :func:`finish_fold`: ``predictions.csv`` (the held-out part) and, last,
``fold.json`` (metrics, sizes, timings, history), whose presence marks the fold finished.
:func:`run_lightning_fold` trains a Lightning task under a Trainer (resumable, DDP-aware).
"""

from __future__ import annotations

import copy
import csv
import io
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import (
    BasePredictionWriter,
    Callback,
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
)
from lightning.pytorch.loggers import CSVLogger

from .._io import atomic_write_text, json_safe
from ..data.base import WBCDataset
from ..data.datamodule import WBCDataModule
from ..data.splits import Split
from ..metrics import classification_metrics
from ._fold_checks import check_checkpoint, damaged
from .fold_result import FoldResult
from .predictions import Predictions

__all__ = [
    "CONFIG_FILE",
    "FOLD_FILE",
    "finish_fold",
    "fold_dir",
    "is_finished",
    "read_fold",
    "run_lightning_fold",
]

_log = logging.getLogger(__name__)

#: Written last in a fold's folder; its presence marks the fold finished.
FOLD_FILE = "fold.json"
#: What a run was configured with, in its output folder (the folds' parent).
CONFIG_FILE = "config.json"


def fold_dir(output_dir: Path, fold: int) -> Path:
    """The folder of fold ``fold`` under ``output_dir``."""
    return output_dir / f"fold_{fold}"


def is_finished(output_dir: Path, fold: int) -> bool:
    """Whether fold ``fold`` has written its results."""
    return (fold_dir(output_dir, fold) / FOLD_FILE).is_file()


def read_fold(folder: Path) -> tuple[FoldResult, Predictions]:
    """A finished fold's result and held-out predictions, from its folder.

    Args:
        folder: The fold's folder (``fold_<k>``).

    Returns:
        The fold's result and its held-out predictions.

    Raises:
        DamagedFoldError: ``fold.json`` or ``predictions.csv`` cannot be read; the error names
            the file and says how to train the fold again.
    """
    fold = int(folder.name.rpartition("_")[2]) if folder.name[-1:].isdigit() else -1
    path = folder / FOLD_FILE
    try:
        result = FoldResult.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError, AttributeError) as err:  # JSON and Unicode too
        raise damaged(path, fold, f"not a fold record: {_short(err)}") from None
    path = folder / "predictions.csv"
    try:
        preds = Predictions.from_csv(path)
    except (OSError, ValueError, KeyError, IndexError, csv.Error) as err:
        raise damaged(path, fold, f"no held-out predictions: {_short(err)}") from None
    return result, preds


def _short(err: BaseException) -> str:
    """``Type: message`` of an error, cut to one short line."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:120]}" if text else type(err).__name__


class _HeldOutWriter(BasePredictionWriter):
    """Collects this rank's held-out probabilities with their positions; saves them per rank."""

    def __init__(self, folder: Path) -> None:
        super().__init__(write_interval="batch")
        self.folder = folder
        self.rows: list[tuple[list[int], list[str], torch.Tensor]] = []

    def on_predict_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.rows = []

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        if batch_indices is None:
            raise RuntimeError("Lightning did not report the batch indices of a prediction")
        probs = prediction.detach().float().cpu()
        self.rows.append((list(batch_indices), list(batch.get("path", [])), probs))

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        torch.save(self.rows, self.folder / f"predict.rank{trainer.global_rank}.pt")


def _match_rows(
    rows: list[tuple[list[int], list[str], torch.Tensor]], dataset: WBCDataset, test: np.ndarray
) -> tuple[list[int], list[np.ndarray]]:
    """Dataset positions and probability rows of one rank's batches (unreadable files skipped)."""
    paths = dataset.paths
    index: list[int] = []
    probs: list[np.ndarray] = []
    for positions, batch_paths, p in rows:
        expected = [int(test[i]) for i in positions]
        if len(batch_paths) != len(expected):  # unreadable samples were dropped from the batch
            kept = iter(batch_paths)
            want = next(kept, None)
            matched = []
            for e in expected:
                if want is not None and paths[e] == want:
                    matched.append(e)
                    want = next(kept, None)
            expected = matched
        if len(expected) != p.shape[0]:
            raise RuntimeError(f"{p.shape[0]} predictions for {len(expected)} samples in a batch")
        index += expected
        probs += list(p.numpy())
    return index, probs


def _log_files(folder: Path) -> list[Path]:
    """The fold's CSV logs in the order they were written (``logs``, ``logs_1``, ...)."""
    dirs = [d for d in folder.glob("logs*") if (d / "metrics.csv").is_file()]
    dirs.sort(key=lambda d: int(d.name.partition("_")[2] or 0))
    return [d / "metrics.csv" for d in dirs]


def restart_logger(folder: Path, resumed: bool) -> CSVLogger:
    """The CSV logger of a run's (re)start: ``logs``, then ``logs_1``, ... for each restart.

    Each start logs into its own folder (CSVLogger would overwrite the last one's file);
    :func:`read_history` reads them back in order.
    """
    attempt = len(list(folder.glob("logs*"))) if resumed else 0
    return CSVLogger(folder, name="", version="logs" + (f"_{attempt}" if attempt else ""))


def read_history(folder: Path) -> list[dict[str, float]]:
    """Per-epoch logged values of a run's folder, over all its (re)starts; later runs win.

    The folder holds CSVLogger logs as a fold (or a pretraining) writes them: ``logs``,
    ``logs_1``, ... for the first start and each restart.
    """
    per_epoch: dict[int, dict[str, float]] = {}
    for metrics_csv in _log_files(folder):
        _read_log(metrics_csv, per_epoch)
    return [per_epoch[e] for e in sorted(per_epoch)]


def _read_log(metrics_csv: Path, per_epoch: dict[int, dict[str, float]]) -> None:
    """Add one CSVLogger file's values to ``per_epoch`` (the last value of each key wins).

    A row that is not numbers (a file that two runs once wrote together) is left out with a
    logged warning: the history is a record of training, not needed to score the fold.
    """
    pending: dict[str, float] = {}  # rows without an epoch (the learning rate, logged at start)
    bad: list[int] = []
    text = metrics_csv.read_text(encoding="utf-8", errors="replace").replace("\0", "")
    for line, row in enumerate(csv.DictReader(io.StringIO(text, newline="")), start=2):
        try:
            if None in row or None in row.values():  # more or fewer fields than the header
                raise ValueError(line)
            values = {
                key.removesuffix("_epoch"): float(value)
                for key, value in row.items()
                if value != "" and key not in ("epoch", "step") and not key.endswith("_step")
            }
            epoch = int(float(row["epoch"])) if row.get("epoch") else None
        except (ValueError, TypeError):
            bad.append(line)
            continue
        if epoch is None:
            pending.update(values)
            continue
        entry = per_epoch.setdefault(epoch, {"epoch": float(epoch)})
        entry.update(pending)
        entry.update(values)
        pending = {}
    if bad:
        _log.warning("%s: %d unreadable rows left out of the history (lines %s)",
                     metrics_csv, len(bad), ", ".join(map(str, bad[:5])))  # fmt: skip


def _write_fold(
    folder: Path,
    result: FoldResult,
    preds: Predictions,
) -> None:
    preds.to_csv(folder / "predictions.csv")
    atomic_write_text(folder / FOLD_FILE, json.dumps(json_safe(asdict(result)), indent=2))


def finish_fold(
    folder: Path,
    dataset: WBCDataset,
    split: Split,
    fold: int,
    index: list[int],
    probs: np.ndarray,
    timings: tuple[float, float],
    **extra: Any,
) -> FoldResult:
    """Score the held-out predictions, write the fold's files, return its result.

    Args:
        folder: The fold's folder.
        dataset: The whole dataset.
        split: The fold's split (dataset positions).
        fold: The fold index.
        index: Dataset positions of the predicted held-out samples.
        probs: Their class probabilities, one row each.
        timings: Seconds of training and of predicting the held-out part.
        **extra: Further :class:`FoldResult` fields (``checkpoint``, ``history``, ...).

    Returns:
        The fold's result.

    Raises:
        RuntimeError: A held-out sample predicted twice, or one not predicted that the dataset
            did not skip.
    """
    idx = np.asarray(index, dtype=np.int64)
    if len(np.unique(idx)) != len(idx):
        raise RuntimeError(f"fold {fold}: a held-out sample was predicted twice")
    missing = sorted(set(split.test.tolist()) - set(idx.tolist()))
    skipped = [dataset.paths[i] for i in missing]
    if missing and not set(skipped) <= set(dataset.skipped):
        raise RuntimeError(
            f"fold {fold}: {len(missing)} held-out samples were not predicted (first: {skipped[0]})"
        )
    order = np.argsort(idx)
    idx, probs = idx[order], probs[order]
    labels = dataset.labels[idx]
    classes = dataset.classes
    preds = Predictions(
        idx,
        [dataset.paths[i] for i in idx],
        [dataset.groups[i] for i in idx],
        labels,
        np.full(len(idx), fold),
        probs,
        classes,
    )
    metrics = classification_metrics(labels, probs, classes, where=f"fold {fold}")
    result = FoldResult(
        fold=fold,
        metrics=metrics,
        n_train=len(split.train),
        n_val=len(split.val),
        n_test=len(idx),
        train_seconds=timings[0],
        predict_ms_per_image=1000.0 * timings[1] / max(len(idx), 1),
        skipped=skipped,
        **extra,
    )
    _write_fold(folder, result, preds)
    return result


def run_lightning_fold(
    build: Callable[[], pl.LightningModule],
    datamodule: WBCDataModule,
    split: Split,
    fold: int,
    folder: Path,
    *,
    seed: int,
    trainer_args: dict[str, Any],
    callbacks: Sequence[Callback],
    patience: int | None,
) -> FoldResult | None:
    """Train a fresh task on the fold (resuming from ``last.ckpt``), predict the held-out part.

    Returns:
        The fold's result on the global-zero process; ``None`` on the other ranks.
    """
    pl.seed_everything(seed + fold, workers=True, verbose=False)
    model = build()
    dm = datamodule.with_split(split)
    monitor = str(getattr(model, "monitor", "val_loss"))
    ckpt_dir = folder / "checkpoints"
    # best.ckpt: weights only (what evaluation needs); last.ckpt: the full training state for
    # resuming, deleted once the fold is finished (with Adam's moments it is 3x the weights).
    best = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best",
        monitor=monitor,
        mode="min",
        save_weights_only=True,
        enable_version_counter=False,
    )
    resume = ModelCheckpoint(dirpath=ckpt_dir, filename="last", enable_version_counter=False)
    writer = _HeldOutWriter(folder)
    cbs: list[Callback] = [best, resume, LearningRateMonitor(logging_interval="epoch"), writer]
    if patience is not None:
        cbs.append(EarlyStopping(monitor=monitor, mode="min", patience=patience))
    cbs += [copy.deepcopy(c) for c in callbacks]
    last = ckpt_dir / "last.ckpt"
    resumed = last.is_file()
    if resumed:  # a damaged file fails here, with what to do, not inside Lightning
        check_checkpoint(last, fold)
    logger = restart_logger(folder, resumed)
    trainer = pl.Trainer(callbacks=cbs, logger=logger, default_root_dir=folder, **trainer_args)
    start = time.perf_counter()
    trainer.fit(model, datamodule=dm, ckpt_path=str(last) if resumed else None, weights_only=True)
    train_seconds = time.perf_counter() - start
    chosen = best.best_model_path or str(last)
    start = time.perf_counter()
    trainer.predict(
        model, datamodule=dm, ckpt_path=chosen, return_predictions=False, weights_only=True
    )
    predict_seconds = time.perf_counter() - start
    trainer.strategy.barrier("leukemia_wbc_predicted")
    result = None
    if trainer.is_global_zero:
        assert dm.split is not None
        index: list[int] = []
        probs: list[np.ndarray] = []
        for shard in sorted(folder.glob("predict.rank*.pt")):
            rows = torch.load(shard, map_location="cpu", weights_only=True)
            i, p = _match_rows(rows, dm.dataset, dm.split.test)
            index += i
            probs += p
            shard.unlink()
        result = finish_fold(
            folder,
            dm.dataset,
            dm.split,
            fold,
            index,
            np.stack(probs),
            (train_seconds, predict_seconds),
            history=read_history(folder),
            checkpoint=str(Path(chosen).resolve().relative_to(folder.parent.resolve())),
            resumed=resumed,
        )
        last.unlink(missing_ok=True)  # the fold is finished: nothing to resume
    trainer.strategy.barrier("leukemia_wbc_fold_written")
    return result
