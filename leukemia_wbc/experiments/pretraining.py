"""Self-supervised pretraining into a folder: resumable, locked, held-out cells left out.

:func:`pretrain` trains a :class:`~leukemia_wbc.tasks.PretrainModule` on the cells of a
DataModule and writes, into ``output_dir``:

- ``backbone.pt``: the backbone's weights, a plain state dict (the ``weights=`` file);
- ``pretrain.json``: what was trained on what (backbone, method, samples, epochs, losses);
- ``logs/metrics.csv``: the per-epoch losses; ``checkpoints/last.ckpt`` while it runs.

A run killed midway resumes from ``checkpoints/last.ckpt`` when started again with the same
settings; a finished folder is never overwritten without ``overwrite=True``; two runs into one
folder at once are refused (a lock file, taken over when its process is gone).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from .._io import atomic_write_text, json_safe
from ..data.base import UNLABELLED
from ..data.datamodule import WBCDataModule
from ..data.splits import Split
from ..tasks.loading import plain_hparams
from ..tasks.pretrain import PretrainModule
from ._fold_lock import FoldLock, run_id
from ._folds import read_history, restart_logger
from .precision import resolve_precision

__all__ = ["BACKBONE_FILE", "PretrainResult", "pretrain", "pretrain_split"]

_log = logging.getLogger(__name__)

#: The weights file a pretraining run writes into its folder.
BACKBONE_FILE = "backbone.pt"
_SUMMARY = "pretrain.json"


@dataclass(frozen=True)
class PretrainResult:
    """What a pretraining run wrote.

    Attributes:
        backbone: The backbone's weights file (pass it as ``weights=``).
        backbone_name: The timm architecture the weights are for.
        method: ``"simclr"`` or ``"byol"``.
        train_samples: Cells trained on.
        val_samples: Cells the validation loss was measured on (0: none).
        excluded: Labelled cells left out as the DataModule's test part.
        epochs: Epochs trained (over all restarts).
        history: Per-epoch ``train_loss`` (and ``val_loss``, ``*_embedding_std`` when logged).
        seconds: Wall time of the training, this start only.
    """

    backbone: Path
    backbone_name: str
    method: str
    train_samples: int
    val_samples: int
    excluded: int
    epochs: int
    history: list[dict[str, float]]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready values."""
        out: dict[str, Any] = json_safe(asdict(self))
        out["backbone"] = self.backbone.name
        return out


def pretrain_split(
    datamodule: WBCDataModule,
    *,
    exclude_test: bool = True,
    val_fraction: float = 0.1,
    split: Split | None = None,
) -> tuple[Split, int]:
    """The cells a pretraining run trains and validates on, and how many it leaves out.

    With ``exclude_test`` and labelled cells in the data, the DataModule's own split decides:
    its training part (and the unlabelled cells) train, its validation part validates, its
    test part is left out, so that a model evaluated on that part never had its cells in
    pretraining either. Otherwise every cell is used, and a seeded share ``val_fraction`` of
    the groups (patients, smears) validates. A given ``split`` (a cross-validation fold's)
    takes the place of the DataModule's.

    Args:
        datamodule: The data.
        exclude_test: Leave out the DataModule's test part.
        val_fraction: Share of groups to validate on when the data has no split (0: none).
        split: The split to follow instead of the DataModule's (its test part is left out
            whatever ``exclude_test`` says).

    Returns:
        The split (its ``test`` part is what is left out) and the number of cells left out.

    Raises:
        ValueError: ``val_fraction`` outside ``[0, 1)``.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"argument 'val_fraction': expected a value in [0, 1), got {val_fraction}")
    dataset = datamodule.dataset
    labels = dataset.labels
    unlabelled = np.flatnonzero(labels == UNLABELLED)
    if split is not None or (exclude_test and unlabelled.size < len(labels)):
        part = split if split is not None else datamodule.make_split()
        train = np.union1d(part.train, unlabelled)
        return Split(train=train, val=np.sort(part.val), test=np.sort(part.test)), len(part.test)
    groups = np.asarray(dataset.groups, dtype=object)
    names = sorted(set(groups.tolist()))
    rng = np.random.default_rng(datamodule.split_options.seed)
    n_val = round(val_fraction * len(names)) if len(names) > 1 else 0
    if val_fraction > 0 and len(names) > 1:
        n_val = min(max(n_val, 1), len(names) - 1)
    held = set(rng.permutation(names)[:n_val].tolist())
    is_val = np.array([g in held for g in groups.tolist()], dtype=bool)
    empty = np.arange(0, dtype=np.int64)
    return Split(train=np.flatnonzero(~is_val), val=np.flatnonzero(is_val), test=empty), 0


class _EpochLosses(Callback):
    """Logs one line per epoch (what ``--no_progress`` shows instead of the bar)."""

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if "epoch" in k}
        text = ", ".join(f"{k.removesuffix('_epoch')} {v:.4f}" for k, v in sorted(metrics.items()))
        _log.info("pretraining epoch %d: %s", trainer.current_epoch, text)


def _check_resumable(last: Path, module: PretrainModule) -> None:
    """Refuse a ``last.ckpt`` that is damaged or from another configuration."""
    try:
        ckpt = torch.load(last, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, empty, foreign or pickled objects
        raise ValueError(
            f"{last}: cannot resume from it ({type(err).__name__}); remove the folder or pass "
            "overwrite=True (--overwrite) to start again"
        ) from None
    saved = plain_hparams(ckpt.get("hyper_parameters", {}) if isinstance(ckpt, dict) else {},
                          str(last))  # fmt: skip
    mine = json_safe(dict(module.hparams))
    differ = sorted(k for k in set(saved) | set(mine) if json_safe(saved.get(k)) != mine.get(k))
    if differ:
        key = differ[0]
        raise ValueError(
            f"{last} is an unfinished run with other settings ({key}: {saved.get(key)!r} there, "
            f"{mine.get(key)!r} now): use another output folder, or overwrite=True "
            "(--overwrite) to start again"
        )


def _prepare_folder(folder: Path, overwrite: bool) -> None:
    """Refuse a finished run without ``overwrite``; clear it with ``overwrite`` (lock held)."""
    finished = folder / BACKBONE_FILE
    if finished.exists() and not overwrite:
        raise FileExistsError(
            f"{finished} exists (a finished pretraining): choose another output folder, or "
            "pass overwrite=True (--overwrite) to replace it"
        )
    if overwrite:
        for name in (BACKBONE_FILE, _SUMMARY, "pretrain.png"):
            (folder / name).unlink(missing_ok=True)
        for sub in [folder / "checkpoints", *folder.glob("logs*")]:
            shutil.rmtree(sub, ignore_errors=True)


def pretrain(
    module: PretrainModule,
    datamodule: WBCDataModule,
    output_dir: str | Path,
    *,
    max_epochs: int = 100,
    exclude_test: bool = True,
    val_fraction: float = 0.1,
    overwrite: bool = False,
    accelerator: str = "auto",
    devices: int | str | Sequence[int] = 1,
    precision: str | int = "auto",
    progress: bool = True,
    seed: int = 0,
    trainer_args: dict[str, Any] | None = None,
    split: Split | None = None,
) -> PretrainResult:
    """Pretrain ``module``'s backbone on the cells of ``datamodule`` into ``output_dir``.

    The DataModule's device stage (stain normalisation, equalisation, colour mode) is applied,
    its augmentation is not (the module draws its own views). See :func:`pretrain_split` for
    which cells are used.

    Args:
        module: The pretraining task.
        datamodule: The cells (labels are not used; a labelled set's test part is left out).
        output_dir: The run's folder (created).
        max_epochs: Epochs to train.
        exclude_test: Leave out the DataModule's test part (see :func:`pretrain_split`).
        val_fraction: Share of groups validated on when the data has no split.
        overwrite: Replace a finished run in ``output_dir``.
        accelerator: Lightning accelerator.
        devices: The one Lightning device to train on (``1``, or ``[k]`` for GPU ``k``); a run
            holds its folder's lock in one process, so several devices are refused.
        precision: Lightning precision, or ``"auto"`` (see
            :func:`~leukemia_wbc.experiments.resolve_precision`).
        progress: Show Lightning's progress bar.
        seed: Seed of the views and of the initialisation.
        trainer_args: Further ``Trainer`` arguments (e.g. ``limit_train_batches``).
        split: Follow this split (a cross-validation fold's) instead of the DataModule's.

    Returns:
        What was written.

    Raises:
        FileExistsError: ``output_dir`` holds a finished run and ``overwrite`` is false.
        NotADirectoryError: ``output_dir`` is a file.
        RuntimeError: Another live run writes into ``output_dir``.
        ValueError: A damaged ``last.ckpt``, one of other settings, too few cells, or more than
            one device.
    """
    if max_epochs < 1:
        raise ValueError(f"argument 'max_epochs': expected >= 1, got {max_epochs}")
    single = devices in (1, "1") or (isinstance(devices, Sequence) and not isinstance(devices, str)
                                     and len(devices) == 1)  # fmt: skip
    if not single:
        raise ValueError(f"argument 'devices': pretraining runs on one device, got {devices!r}")
    folder = Path(output_dir)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"argument 'output_dir': {folder} is a file, not a folder")
    split, excluded = pretrain_split(datamodule, exclude_test=exclude_test,
                                     val_fraction=val_fraction, split=split)  # fmt: skip
    if len(split.train) < 2:
        raise ValueError(f"pretraining needs at least 2 training cells, got {len(split.train)}")
    lock = FoldLock(folder, 0)
    owner = lock.acquire(run_id())
    if owner is not None:
        raise RuntimeError(
            f"another pretraining run writes into {folder} ({owner.describe()}); wait for it "
            "or choose another output folder"
        )
    try:
        _prepare_folder(folder, overwrite)  # under the lock: never clears a live run's files
        return _run(module, datamodule, split, excluded, folder, max_epochs=max_epochs,
                    accelerator=accelerator, devices=devices, precision=precision,
                    progress=progress, seed=seed, trainer_args=trainer_args or {})  # fmt: skip
    finally:
        lock.release()


def _run(
    module: PretrainModule,
    datamodule: WBCDataModule,
    split: Split,
    excluded: int,
    folder: Path,
    *,
    max_epochs: int,
    accelerator: str,
    devices: int | str | Sequence[int],
    precision: str | int,
    progress: bool,
    seed: int,
    trainer_args: dict[str, Any],
) -> PretrainResult:
    pl.seed_everything(seed, workers=True, verbose=False)
    dm = datamodule.with_split(split)
    dm.pipeline.augment = None  # the module draws its own views
    last = folder / "checkpoints" / "last.ckpt"
    resumed = last.is_file()
    if resumed:
        _check_resumable(last, module)
        _log.info("resuming the pretraining in %s from %s", folder, last)
    logger = restart_logger(folder, resumed)
    checkpoint = ModelCheckpoint(dirpath=folder / "checkpoints", filename="last",
                                 enable_version_counter=False)  # fmt: skip
    args: dict[str, Any] = {
        "max_epochs": max_epochs,
        "accelerator": accelerator,
        "devices": devices,
        "precision": resolve_precision(precision, accelerator),
        "enable_progress_bar": progress,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "log_every_n_steps": 1,
    }
    if len(split.val) == 0:
        args["limit_val_batches"] = 0
    args.update(trainer_args)
    trainer = pl.Trainer(callbacks=[checkpoint, _EpochLosses()], logger=logger,
                         default_root_dir=folder, **args)  # fmt: skip
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm, ckpt_path=str(last) if resumed else None,
                weights_only=True)  # fmt: skip
    seconds = time.perf_counter() - start
    result = PretrainResult(
        backbone=folder / BACKBONE_FILE,
        backbone_name=module.backbone_name,
        method=module.method,
        train_samples=len(split.train),
        val_samples=len(split.val),
        excluded=excluded,
        epochs=int(trainer.current_epoch),
        history=read_history(folder),
        seconds=seconds,
    )
    module.export_backbone(result.backbone)  # one process: pretrain() refuses several devices
    summary = {**result.to_dict(), "settings": json_safe(dict(module.hparams))}
    atomic_write_text(folder / _SUMMARY, json.dumps(summary, indent=2))
    last.unlink(missing_ok=True)  # finished: nothing to resume
    return result
