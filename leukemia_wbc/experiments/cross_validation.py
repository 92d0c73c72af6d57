"""``CrossValidator``: stratified (group) k-fold experiments that resume and run fold by fold."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only

from .._io import atomic_write_text
from ..data.base import UNLABELLED
from ..data.datamodule import WBCDataModule
from ..data.splits import Split, assign_folds, is_grouped, kfold_split
from ..explain import Explainer
from ..models.handcrafted import HandcraftedSVM
from ..tasks.classifier_base import ClassificationTask
from ._folds import FOLD_FILE, fold_dir, is_finished, run_lightning_fold, run_svm_fold
from ._spec import differences, jsonable, model_config, model_name, rebuild
from .attributions import write_fold_attributions
from .fold_attributions import (
    FOCUS_FILE,
    FoldAttributions,
    attributions_dir,
    check_method,
    read_fold_attributions,
)
from .predictions import Predictions
from .result import CVResult, FoldResult

__all__ = ["CrossValidator", "TaskSpec"]

_log = logging.getLogger(__name__)

#: What the validator runs: a LightningModule used as a template (rebuilt for each fold from
#: its hyperparameters), a factory returning a fresh one, or a ``HandcraftedSVM``.
TaskSpec = pl.LightningModule | Callable[[], pl.LightningModule] | HandcraftedSVM

_CONFIG = "config.json"


class CrossValidator:
    """Stratified k-fold cross-validation of a task, fold by fold, into an output folder.

    Each fold gets a fresh model, the fold's DataModule (its own stain fit and augmentation)
    and a Trainer with a best checkpoint on the task's monitored metric (``val_loss``), early
    stopping, a learning-rate monitor, a CSV log and a progress bar. The best checkpoint is
    evaluated on the held-out fold, whose class probabilities are saved. The folds come from
    :func:`~leukemia_wbc.data.splits.assign_folds`: fold ``k`` is tested; a share
    ``val_fraction`` of the other folds' samples (stratified, whole groups) validates and the
    rest trains (or, with ``val_fraction=None``, fold ``k + 1`` validates); with groups, each
    patient stays in one fold.

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

    Args:
        task: A LightningModule template, a factory, or a
            :class:`~leukemia_wbc.models.handcrafted.HandcraftedSVM`.
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
        precision: Lightning precision (``"32-true"``, ``"bf16-mixed"``, ...).
        max_epochs: Epoch limit per fold.
        early_stopping_patience: Epochs without improvement before stopping; ``None`` turns
            early stopping off.
        callbacks: Extra callbacks (copied for each fold).
        trainer_kwargs: Further ``Trainer`` arguments (``limit_train_batches``,
            ``deterministic``, ``enable_progress_bar``, ...), not those above, nor
            ``callbacks``, ``logger`` or ``default_root_dir``.
        attributions: Attribution method of each fold's held-out gallery and nucleus-focus
            table: ``"gradcam"`` or ``"integrated_gradients"``; ``None`` (default) writes
            none. Skipped, with a logged note, for a ``HandcraftedSVM`` (no gradients).
        attributions_per_class: Gallery cells per fold of each kind (most confident correct,
            most confident wrong) per true class.
        attributions_max_cells: Held-out cells per fold explained for the nucleus-focus table,
            taken in turn from each true class (the nucleus masks are the dataset's, else the
            model's segmenter's; with neither, the fold has a gallery but no table).

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
        reserved = {
            "callbacks",
            "logger",
            "default_root_dir",
            "accelerator",
            "devices",
            "strategy",
            "num_nodes",
            "precision",
            "max_epochs",
        } & set(trainer_kwargs or {})
        if reserved:
            raise ValueError(
                f"trainer_kwargs must not set {sorted(reserved)}: they are "
                "CrossValidator arguments (the validator owns the logger)"
            )
        if n_splits < 3:
            raise ValueError(
                f"n_splits must be at least 3 (train, val and test folds), got {n_splits}"
            )
        if isinstance(task, ClassificationTask):
            task.bind_data(datamodule)  # classes from the data, or a one-line error now
        if isinstance(task, pl.LightningModule):
            self.build: Callable[[], pl.LightningModule] | None = rebuild(task)
            probe: Any = task
        elif isinstance(task, HandcraftedSVM):
            self.build, probe = None, task
        elif callable(task):
            self.build = task
            probe = task()
            if isinstance(probe, ClassificationTask):
                probe.bind_data(datamodule)
            if not isinstance(probe, pl.LightningModule):
                raise ValueError(
                    f"the task factory returned a {type(probe).__name__}, "
                    "expected a LightningModule"
                )
        else:
            raise ValueError(
                f"task must be a LightningModule, a factory or a HandcraftedSVM, "
                f"got {type(task).__name__}"
            )
        self.svm = task if isinstance(task, HandcraftedSVM) else None
        if self.attributions is not None and self.svm is None:
            try:  # a network the Explainer does not know fails now, not after a fold
                Explainer(probe, self.attributions)
            except ValueError as err:
                raise ValueError(f"attributions: {err}") from None
        dataset = datamodule.dataset
        svm = self.svm
        if (
            svm is not None
            and svm.needs_nucleus
            and svm.segmenter is None
            and not dataset.has_masks
        ):
            raise ValueError(
                f"model.segmenter: {type(dataset).__name__} has no nucleus masks and "
                f"{type(svm).__name__} has no segmenter; set segmenter to a classical method "
                "(e.g. kmeans) or a trained SegmentationModule checkpoint"
            )
        self.datamodule = datamodule
        self.output_dir = Path(output_dir)
        self.n_splits, self.stratify, self.seed = n_splits, stratify, seed
        self.val_fraction = val_fraction
        self.name = name or model_name(probe)
        self.trainer_args: dict[str, Any] = {
            "accelerator": accelerator,
            "devices": devices,
            "strategy": strategy,
            "num_nodes": num_nodes,
            "precision": precision,
            "max_epochs": max_epochs,
            **(trainer_kwargs or {}),
        }
        self.patience = early_stopping_patience
        self.callbacks = list(callbacks)
        dataset = datamodule.dataset
        self.labelled = np.flatnonzero(dataset.labels != UNLABELLED)
        if self.labelled.size == 0:
            raise ValueError(f"{type(dataset).__name__} has no labelled samples to cross-validate")
        groups = [dataset.groups[i] for i in self.labelled]
        self.grouped = is_grouped(groups) if group is None else group
        self._check_sizes(dataset.labels[self.labelled], groups)
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
        self._warn_missing_classes()
        self.config = self._config(probe)

    # -- checks --------------------------------------------------------------------------------
    def _check_sizes(self, labels: np.ndarray, groups: list[str]) -> None:
        classes = self.datamodule.classes
        if self.grouped:
            n_groups = len(set(groups))
            if n_groups < self.n_splits:
                raise ValueError(
                    f"n_splits={self.n_splits} exceeds the {n_groups} groups of the "
                    "dataset: every fold needs a group of its own"
                )
        if self.stratify:
            counts = np.bincount(labels, minlength=len(classes))
            present = counts[counts > 0]
            smallest = int(np.argmin(np.where(counts > 0, counts, counts.max() + 1)))
            if present.min() < self.n_splits:
                raise ValueError(
                    f"n_splits={self.n_splits} exceeds the {int(present.min())} samples of "
                    f"class {classes[smallest]!r}: every fold needs at least one sample of each "
                    "class; lower n_splits or drop the class"
                )

    def _warn_missing_classes(self) -> None:
        labels = self.datamodule.dataset.labels
        for k in range(self.n_splits):
            present = set(labels[self.folds == k].tolist())
            missing = [
                c
                for i, c in enumerate(self.datamodule.classes)
                if i not in present and (labels == i).any()
            ]
            if missing:
                warnings.warn(
                    f"fold {k} holds no sample of {missing} (the groups do not spread over all "
                    "folds): that fold's recall and AUC of those classes are undefined (NaN)",
                    stacklevel=3,
                )

    def _config(self, probe: Any) -> dict[str, Any]:
        ds = self.datamodule.dataset
        digest = hashlib.sha1()
        for path, label, grp in zip(ds.paths, ds.labels.tolist(), ds.groups, strict=True):
            digest.update(f"{path}\t{label}\t{grp}\n".encode())
        return {
            "name": self.name,
            "model": model_config(probe),
            "data": {
                "dataset": type(ds).__name__,
                "n": len(ds),
                "classes": list(ds.classes),
                "samples_sha1": digest.hexdigest(),
                "datamodule": jsonable(dict(self.datamodule.hparams)),
            },
            "split": {
                "n_splits": self.n_splits,
                "seed": self.seed,
                "stratify": self.stratify,
                "grouped": self.grouped,
                "val_fraction": self.val_fraction,
            },
            "training": {
                "max_epochs": self.trainer_args["max_epochs"],
                "precision": str(self.trainer_args["precision"]),
                "early_stopping_patience": self.patience,
            },
        }

    # -- output folder -------------------------------------------------------------------------
    @rank_zero_only
    def _prepare_folder(self) -> None:
        out = self.output_dir
        out.mkdir(parents=True, exist_ok=True)
        path = out / _CONFIG
        if path.is_file():
            saved = json.loads(path.read_text(encoding="utf-8"))
            diff = differences(saved, self.config)
            if diff:
                raise ValueError(
                    f"{out} holds results of another configuration ({'; '.join(diff[:5])}); "
                    "use a new output_dir (finished results are never overwritten)"
                )
            return
        atomic_write_text(path, json.dumps(self.config, indent=2))
        ds = self.datamodule.dataset
        lines = ["index,path,group,label,fold"]
        lines += [
            f"{i},{json.dumps(ds.paths[i])},{json.dumps(ds.groups[i])},"
            f"{int(ds.labels[i])},{int(self.folds[i])}"
            for i in self.labelled
        ]
        atomic_write_text(out / "folds.csv", "\n".join(lines) + "\n")

    # -- running -------------------------------------------------------------------------------
    def run(self, folds: Sequence[int] | None = None) -> CVResult:
        """Run the (selected) folds that are not finished yet, then gather the results.

        Args:
            folds: Fold indices to run (default all). Others are left as they are.

        Returns:
            The results of every finished fold in the folder (all folds once all have run).

        Raises:
            ValueError: A fold index out of range, or an output folder of another
                configuration.
        """
        chosen = list(range(self.n_splits)) if folds is None else [int(k) for k in folds]
        bad = [k for k in chosen if not 0 <= k < self.n_splits]
        if bad:
            raise ValueError(f"folds {bad} out of range for n_splits={self.n_splits}")
        self._prepare_folder()
        todo = [k for k in chosen if not is_finished(self.output_dir, k)]
        for k in chosen:
            if k not in todo:
                _log.info("%s: fold %d already finished, skipped", self.name, k)
        if self.attributions is not None and self.svm is not None:
            _log.warning("%s: attributions=%r skipped: a feature baseline has no gradients to "
                         "attribute", self.name, self.attributions)  # fmt: skip
        for k in chosen:
            if k in todo:
                self.run_fold(k)
            if self.svm is None:
                self.explain_fold(k)
        complete = all(is_finished(self.output_dir, k) for k in range(self.n_splits))
        result = self.collect(self.output_dir, allow_partial=not complete)
        if complete and getattr(rank_zero_only, "rank", 0) == 0:
            result.save(self.output_dir)
        return result

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
        split = self.split(fold)
        if self.svm is not None:
            return run_svm_fold(self.svm, self.datamodule.dataset, split, fold, folder)
        assert self.build is not None
        return run_lightning_fold(
            self.build,
            self.datamodule,
            split,
            fold,
            folder,
            seed=self.seed,
            trainer_args=self.trainer_args,
            callbacks=self.callbacks,
            patience=self.patience,
        )

    def explain_fold(self, fold: int) -> FoldAttributions | None:
        """Write a finished fold's attributions (see ``attributions``) unless already there.

        Args:
            fold: The fold index.

        Returns:
            The fold's attributions; ``None`` when ``attributions`` is off, for the SVM, on
            non-zero ranks of a distributed run, or when the fold is not finished.
        """
        method = self.attributions
        if method is None or self.svm is not None or getattr(rank_zero_only, "rank", 0) != 0:
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
        result, preds = _read_fold(fold_dir(self.output_dir, fold))
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
        out = Path(output_dir)
        if not (out / _CONFIG).is_file():
            raise FileNotFoundError(f"{out / _CONFIG} not found: not a CrossValidator folder")
        config = json.loads((out / _CONFIG).read_text(encoding="utf-8"))
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
            fold, preds = _read_fold(fold_dir(out, k))
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


def _read_fold(folder: Path) -> tuple[FoldResult, Predictions]:
    """A finished fold's result and held-out predictions, from its folder."""
    body = json.loads((folder / FOLD_FILE).read_text(encoding="utf-8"))
    return FoldResult.from_dict(body), Predictions.from_csv(folder / "predictions.csv")
