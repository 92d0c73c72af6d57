"""``CrossValidator``: stratified (group) k-fold experiments that resume and run fold by fold."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only

from ..data.base import UNLABELLED
from ..data.datamodule import WBCDataModule
from ..data.splits import Split, assign_folds, is_grouped, kfold_split
from ..tasks.pretrain import PretrainModule
from ..tasks.segment_once import SegmentOnce
from ._fold_checks import check_fold_sizes, warn_missing_classes, warn_small_classes
from ._fold_lock import LOCK_FILE, FoldLock, rank, run_fold_locked, run_id
from ._fold_pretrain import FoldPretraining
from ._folds import fold_dir, is_finished, read_fold
from ._output import collect_folds, move_aside, prepare_output, run_config
from .attributions import write_fold_attributions
from .fold_attributions import (
    FOCUS_FILE,
    FoldAttributions,
    attributions_dir,
    check_method,
    read_fold_attributions,
)
from .fold_model import FoldModel, FoldModelSpec, FoldSettings, as_fold_model
from .precision import resolve_precision
from .result import CVResult, FoldResult

__all__ = ["CrossValidator", "TaskSpec"]

_log = logging.getLogger(__name__)

#: What the validator runs: a LightningModule used as a template (rebuilt for each fold from
#: its hyperparameters), a factory returning a fresh one, a ``HandcraftedSVM``, or any
#: :class:`~leukemia_wbc.experiments.FoldModel` (see
#: :func:`~leukemia_wbc.experiments.as_fold_model`).
TaskSpec = FoldModelSpec


class CrossValidator:
    """Stratified k-fold cross-validation of a task, fold by fold, into an output folder.

    The task becomes a :class:`~leukemia_wbc.experiments.FoldModel` (see
    :func:`~leukemia_wbc.experiments.as_fold_model`), which trains each fold. A Lightning task
    gets a fresh model per fold, the fold's DataModule (its own stain fit and augmentation)
    and a Trainer with a best checkpoint on the task's monitored metric (``val_loss``), early
    stopping, a learning-rate monitor, a CSV log and a progress bar; the best checkpoint is
    evaluated on the held-out fold. A feature baseline fits on the fold's training part. The
    held-out class probabilities are saved. The folds come from
    :func:`~leukemia_wbc.data.splits.assign_folds`: fold ``k`` is tested; a share
    ``val_fraction`` of the other folds' samples (stratified, whole groups) validates and the
    rest trains (or, with ``val_fraction=None``, fold ``k + 1`` validates); with groups, each
    patient stays in one fold. A class of which some fold trains on fewer than 3 samples is
    named in a warning (its count, those folds, what to do) before any fold runs.

    The output folder holds ``config.json`` (what was run), ``folds.csv`` (the assignment),
    one ``fold_<k>/`` per fold (``predictions.csv``, ``fold.json``, checkpoints and logs) and,
    once every fold is finished, ``result.json`` and the pooled ``predictions.csv``.

    With ``attributions`` set, each fold, once trained, also writes its held-out attribution
    gallery and nucleus-focus table into ``fold_<k>/attributions/<method>/`` (see
    :func:`~leukemia_wbc.experiments.write_fold_attributions`); :meth:`CVResult.attributions`
    reads them back and :func:`~leukemia_wbc.report.write_report` shows them.

    Resuming: running again on the same folder skips finished folds and continues an
    interrupted fold from its ``last.ckpt``; a folder of another configuration is refused.
    A finished fold's attributions are kept; a finished fold without them (trained before
    ``attributions`` was set, or stopped while explaining) gets them on the next run. The
    attribution settings are not part of the configuration check: turning them on for a
    finished run adds the maps without retraining.
    Scaling: ``run(folds=[...])`` runs some folds only (one per SLURM array task or torchrun
    job) and :meth:`collect` merges them; inside a fold, ``devices``, ``num_nodes`` and
    ``strategy`` go to Lightning (DDP), and the held-out predictions of all ranks are merged so
    that every held-out sample is scored exactly once.
    Concurrent runs into one folder: a run takes a fold's lock (``fold_<k>/fold.lock``: process
    id, host, start time) while it trains or explains the fold; a fold another live run holds
    is skipped and listed in :attr:`skipped`, a stale lock (its process gone) is taken over. In
    a distributed run only rank 0 takes locks. A damaged ``last.ckpt`` or ``fold.json`` stops
    the run with an error naming the file; ``run(restart_folds=[k])`` trains fold ``k`` again
    after moving its files to ``restarted/`` (nothing is deleted).

    Args:
        task: A LightningModule template, a factory, a
            :class:`~leukemia_wbc.models.handcrafted.HandcraftedSVM`, or a
            :class:`~leukemia_wbc.experiments.FoldModel`.
        datamodule: The data; its ``split`` settings are replaced by the folds.
        output_dir: Folder of the results.
        n_splits: Number of folds (at least 3: train, validation and test).
        stratify: Keep class proportions in every fold.
        val_fraction: Share of each fold's non-test samples used for validation (early
            stopping and the best checkpoint); ``None`` validates on the next fold instead
            (which trains on only a third of the data with 3 folds).
        group: Keep groups (patients) within folds: ``None`` decides from the dataset (yes
            when some group holds more than one sample).
        seed: Seed of the folds and of each fold's training (``seed + fold``).
        name: Model name in tables (default: class and backbones).
        accelerator: Lightning accelerator.
        devices: Devices per node (several start DDP processes: use a script, not a
            notebook).
        strategy: Lightning strategy (``"ddp"`` for several devices).
        num_nodes: Nodes.
        precision: Lightning precision (``"32-true"``, ``"bf16-mixed"``, ...), or ``"auto"``:
            bfloat16 autocast where the GPU or CPU computes it natively, else float32.
        max_epochs: Epoch limit per fold.
        early_stopping_patience: Epochs without improvement before stopping; ``None`` turns
            early stopping off.
        callbacks: Extra callbacks (copied for each fold).
        trainer_kwargs: Further ``Trainer`` arguments (``limit_train_batches``,
            ``deterministic``, ``enable_progress_bar``, ...), not those above, nor
            ``callbacks``, ``logger`` or ``default_root_dir``.
        attributions: Attribution method of each fold's held-out gallery and nucleus-focus
            table: ``"gradcam"`` or ``"integrated_gradients"``; ``None`` (default) writes
            none. Skipped, with a logged note, for a model without gradients (a feature
            baseline).
        attributions_per_class: Gallery cells per fold of each kind (most confident correct,
            most confident wrong) per true class.
        attributions_max_cells: Held-out cells per fold explained for the nucleus-focus table,
            taken in turn from each true class (the nucleus masks are the dataset's, else the
            model's segmenter's; with neither, the fold has a gallery but no table).
        mask_cache: Where a model that segments its cells (a dual branch or nucleus-only
            model with a ``segmenter``, on data without masks) keeps the masks, so that each
            cell is segmented once for all folds and later runs (see
            :class:`~leukemia_wbc.tasks.SegmentOnce`): ``True`` (default):
            ``<output_dir>/mask_cache``; a folder (shared by runs); ``False``: in memory,
            once per fold.
        pretrain: Pretrain the backbone without labels before each fold, on that fold's
            training and validation cells only, into ``<output_dir>/fold_<k>/pretrain/``, and
            start the fold's model from it (see :doc:`/pretraining`); reused when a fold reruns.
        pretrain_epochs: Epochs of each fold's pretraining.

    Raises:
        ValueError: ``n_splits`` below 3 or above the number of groups or the size of the
            smallest class, an empty dataset, a bad task, an unknown ``attributions`` method,
            negative attribution counts, or a network :class:`Explainer` cannot explain.
    """

    def __init__(
        self,
        task: TaskSpec,
        datamodule: WBCDataModule,
        output_dir: str | os.PathLike[str],
        *,
        n_splits: int = 10,
        stratify: bool = True,
        val_fraction: float | None = 0.15,
        group: bool | None = None,
        seed: int = 0,
        name: str | None = None,
        accelerator: str = "auto",
        devices: int | str | Sequence[int] = 1,
        strategy: str = "auto",
        num_nodes: int = 1,
        precision: str | int = "32-true",
        max_epochs: int = 50,
        early_stopping_patience: int | None = 10,
        callbacks: Sequence[Callback] = (),
        trainer_kwargs: dict[str, Any] | None = None,
        attributions: str | None = None,
        attributions_per_class: int = 2,
        attributions_max_cells: int = 64,
        mask_cache: bool | str | os.PathLike[str] = True,
        pretrain: PretrainModule | None = None,
        pretrain_epochs: int = 50,
    ) -> None:
        self.attributions = check_method(attributions, "attributions")
        for arg, value in (("attributions_per_class", attributions_per_class),
                           ("attributions_max_cells", attributions_max_cells)):  # fmt: skip
            if value < 0:
                raise ValueError(f"{arg} must be >= 0, got {value}")
        if self.attributions is not None and attributions_per_class == attributions_max_cells == 0:
            raise ValueError("attributions_per_class and attributions_max_cells are both 0: "
                             "nothing to explain")  # fmt: skip
        self.attributions_per_class = attributions_per_class
        self.attributions_max_cells = attributions_max_cells
        reserved = {"callbacks", "logger", "default_root_dir", "accelerator", "devices", "strategy",
                    "num_nodes", "precision", "max_epochs"} & set(trainer_kwargs or {})  # fmt: skip
        if reserved:
            raise ValueError(
                f"trainer_kwargs must not set {sorted(reserved)}: they are "
                "CrossValidator arguments (the validator owns the logger)"
            )
        if n_splits < 3:
            raise ValueError(
                f"n_splits must be at least 3 (train, val and test folds), got {n_splits}"
            )
        #: What each fold trains.
        self.model: FoldModel = as_fold_model(task)
        self.model.check(datamodule, attributions=self.attributions)
        self.pretraining: FoldPretraining | None = None  # each fold's, with ``pretrain``
        if pretrain is not None:
            self.pretraining = FoldPretraining(pretrain, pretrain_epochs, self.model)
        info = self.model.info
        self.explainable = info.explainable
        self.datamodule = datamodule
        self.output_dir = Path(output_dir)
        self.n_splits, self.stratify, self.seed = n_splits, stratify, seed
        self.val_fraction = val_fraction
        self.name = name or info.name
        self.trainer_args: dict[str, Any] = {
            "accelerator": accelerator,
            "devices": devices,
            "strategy": strategy,
            "num_nodes": num_nodes,
            "precision": resolve_precision(precision, accelerator),
            "max_epochs": max_epochs,
            **(trainer_kwargs or {}),
        }
        self.patience = early_stopping_patience
        self.callbacks = list(callbacks)
        if mask_cache is not False and not any(isinstance(c, SegmentOnce) for c in callbacks):
            where = self.output_dir / "mask_cache" if mask_cache is True else Path(mask_cache)
            self.callbacks.append(SegmentOnce(where))
        self.settings = FoldSettings(seed, self.trainer_args, self.callbacks, self.patience)
        dataset = datamodule.dataset
        self.labelled = np.flatnonzero(dataset.labels != UNLABELLED)
        if self.labelled.size == 0:
            raise ValueError(f"{type(dataset).__name__} has no labelled samples to cross-validate")
        groups = [dataset.groups[i] for i in self.labelled]
        self.grouped = is_grouped(groups) if group is None else group
        check_fold_sizes(dataset.labels[self.labelled], groups, datamodule.classes,
                         n_splits=n_splits, grouped=self.grouped, stratify=stratify)  # fmt: skip
        folds = assign_folds(
            dataset.labels[self.labelled],
            groups if self.grouped else None,
            n_splits=n_splits,
            seed=seed,
            stratify=stratify,
        )
        #: Fold of every dataset sample (-1 for unlabelled ones).
        self.folds = np.full(len(dataset), -1, dtype=np.int64)
        self.folds[self.labelled] = folds
        warn_missing_classes(dataset.labels, self.folds, datamodule.classes, n_splits)
        warn_small_classes(dataset.labels, [self.split(k) for k in range(n_splits)],
                           datamodule.classes, val_fraction=val_fraction)  # fmt: skip
        self.config = run_config(
            self.name, info.config, datamodule,
            split={"n_splits": n_splits, "seed": seed, "stratify": stratify,
                   "grouped": self.grouped, "val_fraction": val_fraction},
            training={"max_epochs": max_epochs, "precision": str(precision),
                      "early_stopping_patience": early_stopping_patience,
                      **(self.pretraining.config() if self.pretraining else {})},
        )  # fmt: skip
        #: Folds the last :meth:`run` skipped because another run held their lock.
        self.skipped: list[int] = []

    # -- output folder -------------------------------------------------------------------------
    @rank_zero_only
    def _prepare_folder(self) -> None:
        prepare_output(self.output_dir, self.config, self.datamodule.dataset, self.folds)

    # -- running -------------------------------------------------------------------------------
    def run(
        self, folds: Sequence[int] | None = None, *, restart_folds: Sequence[int] | None = None
    ) -> CVResult:
        """Run the (selected) folds that are not finished yet, then gather the results.

        Each fold is locked while this run trains it (see the class docstring); a fold that
        another live run holds is skipped and listed in :attr:`skipped`; the merged
        ``result.json`` is written only once every fold is finished (by this run or another).

        Args:
            folds: Fold indices to run (default all). Others are left as they are.
            restart_folds: Folds (among ``folds``) to train again from the start, finished or
                not: their files are first moved to ``restarted/fold_<k>-<time>/`` in the
                output folder (kept, never deleted).

        Returns:
            The results of every finished fold in the folder (all folds once all have run).

        Raises:
            ValueError: A fold index out of range, a restarted fold not among ``folds``, or an
                output folder of another configuration.
            DamagedFoldError: A fold's ``fold.json``, ``predictions.csv`` or ``last.ckpt``
                cannot be read (the error names the file and the fold to restart).
            RuntimeError: Every fold run was skipped and none is finished: nothing to merge.
        """
        chosen = self._indices(folds, "folds")
        restart = self._indices(restart_folds or [], "restart_folds")
        if not set(restart) <= set(chosen):
            raise ValueError(f"restart_folds {sorted(set(restart) - set(chosen))} are not "
                             f"among the folds run ({chosen})")  # fmt: skip
        self._prepare_folder()
        for k in chosen:  # a damaged finished fold fails now, before any training
            if k not in restart and is_finished(self.output_dir, k):
                read_fold(fold_dir(self.output_dir, k))
        if self.attributions is not None and not self.explainable:
            _log.warning("%s: attributions=%r skipped: a feature baseline has no gradients to "
                         "attribute", self.name, self.attributions)  # fmt: skip
        run, self.skipped = run_id(), []
        for i, k in enumerate(chosen):
            later = [fold_dir(self.output_dir, j) for j in chosen[i + 1 :]]
            if not self._run_locked(k, run, k in restart, later):
                self.skipped.append(k)
        complete = all(is_finished(self.output_dir, k) for k in range(self.n_splits))
        if self.skipped and not complete and rank() == 0:
            _log.warning("%s: folds %s skipped (other runs hold them); the merged result is not "
                         "written: run again once they finish, or collect the folder",
                         self.name, self.skipped)  # fmt: skip
        if self.skipped and not any(is_finished(self.output_dir, k) for k in range(self.n_splits)):
            raise RuntimeError(f"{self.output_dir}: folds {self.skipped} are being trained by "
                               "other runs (see above) and no fold is finished yet: nothing to "
                               "merge; run again once they finish")  # fmt: skip
        result = self.collect(self.output_dir, allow_partial=not complete)
        if complete and rank() == 0:  # the other runs' folds may have finished meanwhile
            result.save(self.output_dir)
        return result

    def _indices(self, folds: Sequence[int] | None, arg: str) -> list[int]:
        chosen = list(range(self.n_splits)) if folds is None else [int(k) for k in folds]
        bad = [k for k in chosen if not 0 <= k < self.n_splits]
        if bad:
            raise ValueError(f"{arg} {bad} out of range for n_splits={self.n_splits}")
        return list(dict.fromkeys(chosen))

    def _run_locked(self, fold: int, run: str, restart: bool, later: list[Path]) -> bool:
        out = self.output_dir

        def prepare() -> None:
            if restart:
                move_aside(out, fold, keep=LOCK_FILE)

        explain = self.explainable and self.attributions is not None
        return run_fold_locked(
            FoldLock(fold_dir(out, fold), fold), run, later=later, name=self.name,
            needs=lambda: restart or not is_finished(out, fold), prepare=prepare,
            train=lambda: self.run_fold(fold),
            explain=(lambda: self.explain_fold(fold)) if explain else None,
        )  # fmt: skip

    def split(self, fold: int) -> Split:
        """The :class:`~leukemia_wbc.data.splits.Split` (dataset positions) of fold ``fold``."""
        lab = self.labelled
        ds = self.datamodule.dataset
        part = kfold_split(
            self.folds[lab],
            fold,
            labels=ds.labels[lab],
            val_fraction=self.val_fraction,
            groups=[ds.groups[i] for i in lab] if self.grouped else None,
            seed=self.seed,
        )
        return Split(train=lab[part.train], val=lab[part.val], test=lab[part.test])

    def run_fold(self, fold: int) -> FoldResult | None:
        """Run one fold (resuming it if it was interrupted) and write its files.

        Args:
            fold: The fold index.

        Returns:
            The fold's result (``None`` on non-zero ranks of a distributed run).
        """
        _log.info("%s: fold %d of %d", self.name, fold, self.n_splits)
        folder = fold_dir(self.output_dir, fold)
        model, split = self.model, self.split(fold)
        if self.pretraining is not None:
            model = self.pretraining.model_for(model, fold, folder, self.datamodule, split,
                                               self.trainer_args, self.seed)  # fmt: skip
        return model.fit_fold(self.datamodule, split, fold, folder, self.settings)

    def explain_fold(self, fold: int) -> FoldAttributions | None:
        """Write a finished fold's attributions (see ``attributions``) unless already there.

        Args:
            fold: The fold index.

        Returns:
            The fold's attributions; ``None`` when ``attributions`` is off, for a model without
            gradients, on non-zero ranks of a distributed run, or when the fold is not finished.
        """
        method = self.attributions
        if method is None or not self.explainable or rank() != 0:
            return None
        if not is_finished(self.output_dir, fold):
            return None
        if (attributions_dir(fold_dir(self.output_dir, fold), method) / FOCUS_FILE).is_file():
            done = read_fold_attributions(self.output_dir, folds=[fold], method=method)[0]
            if (done.per_class, done.max_cells) != (self.attributions_per_class,
                                                    self.attributions_max_cells):  # fmt: skip
                _log.warning("%s: fold %d: %s attributions of per_class=%d, max_cells=%d kept; "
                             "delete %s to recompute them", self.name, fold, method,
                             done.per_class, done.max_cells, done.folder)  # fmt: skip
            return done
        result, preds = read_fold(fold_dir(self.output_dir, fold))
        one = CVResult(self.name, tuple(self.config["data"]["classes"]), [result], preds,
                       self.config, self.output_dir)  # fmt: skip
        _log.info("%s: fold %d: %s attributions", self.name, fold, method)
        return write_fold_attributions(
            one, self.datamodule.dataset, fold, method=method,
            per_class=self.attributions_per_class, max_cells=self.attributions_max_cells,
            device="cpu" if str(self.trainer_args["accelerator"]) == "cpu" else "auto",
            batch_size=self.datamodule.batch_size,
        )  # fmt: skip

    # -- gathering -----------------------------------------------------------------------------
    @staticmethod
    def collect(output_dir: str | os.PathLike[str], *, allow_partial: bool = False) -> CVResult:
        """Merge the finished folds of an output folder (e.g. after separate fold jobs).

        Args:
            output_dir: The folder a :class:`CrossValidator` wrote.
            allow_partial: Return the finished folds when some are missing (otherwise an
                error lists them).

        Returns:
            The merged :class:`CVResult`.

        Raises:
            FileNotFoundError: The folder has no ``config.json``.
            ValueError: Unfinished folds (without ``allow_partial``), or none finished.
        """
        return collect_folds(Path(output_dir), allow_partial=allow_partial)
