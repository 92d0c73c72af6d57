"""What a cross-validation fold trains: the ``FoldModel`` protocol, its adapters, their lookup.

A fold model fits on a fold's split, predicts class probabilities (of a batch, or of every
batch of a loader), saves itself into the fold's folder, loads from it, and describes itself
(:class:`FoldModelInfo`: a name for tables, a JSON-able config, whether it has gradients, the
kind of file it saves, the shortcut cue it stands for). Two adapters implement it:

- :class:`LightningFoldModel` wraps a LightningModule template or factory; each fold trains a
  fresh task under a ``Trainer`` (resumable, distributed) and loads back as a
  :class:`~leukemia_wbc.inference.TrainedModel`;
- :class:`SklearnFoldModel` wraps a :class:`~leukemia_wbc.models.HandcraftedSVM` or a
  subclass, fitted on handcrafted features.

:func:`as_fold_model` turns what a user passes to the
:class:`~leukemia_wbc.experiments.CrossValidator` into a fold model, and
:func:`load_fold_model` reads a finished fold back in the adapter its run recorded. These
functions and the adapters are the only code that tells models apart by type or by file name;
everything else asks :attr:`FoldModel.info`.

Loading is safe in the library's sense: the recorded class is looked up by name among the
classes defined in the running program (the library's tasks and baselines, and subclasses a
user's code defines), never imported from the name a file holds. No file is unpickled: the
baseline's file holds plain data and a scikit-learn estimator read by skops with an explicit
list of trusted types.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeAlias, runtime_checkable

import lightning.pytorch as pl
import numpy as np
import torch

from ..data.datamodule import WBCDataModule
from ..data.splits import Split
from ..inference import TrainedModel
from ..models.handcrafted import HandcraftedSVM
from ..models.segmenter import SegmenterSpec
from ..tasks.base import BaseTask
from ._fold_lightning import LightningFoldModel
from ._fold_sklearn import SklearnFoldModel
from ._fold_types import CheckpointKind, FoldModelInfo, FoldSettings, recorded_class
from ._folds import CONFIG_FILE, FOLD_FILE
from .fold_result import FoldResult

__all__ = [
    "CheckpointKind",
    "ConfigurableFoldModel",
    "FoldModel",
    "FoldModelInfo",
    "FoldModelSpec",
    "FoldSettings",
    "LightningFoldModel",
    "SklearnFoldModel",
    "as_fold_model",
    "describe_recorded",
    "load_fold_model",
]


@runtime_checkable
class FoldModel(Protocol):
    """What a cross-validation fold trains (see the module docstring)."""

    @property
    def info(self) -> FoldModelInfo:
        """How the model describes itself (name, config, gradients, file kind, shortcut)."""
        ...

    @property
    def model(self) -> Any:
        """The wrapped model: the task or estimator (the trained one, once loaded)."""
        ...

    def check(
        self, datamodule: WBCDataModule, *, where: str = "model", attributions: str | None = None
    ) -> None:
        """Check the model against the data before any fold trains.

        Args:
            datamodule: The data of the cross-validation.
            where: How the model's arguments are named in messages (``"model.init_args"`` on
                the command line).
            attributions: The attribution method the folds will write, if any.

        Raises:
            ValueError: The model does not fit the data (classes, nucleus masks, segmenter) or
                cannot be explained with ``attributions``.
        """
        ...

    def with_pretrained(self, weights: str | None, backbone: str) -> FoldModel:
        """The same model starting from pretrained backbone weights (``pretrain`` of the CV).

        Args:
            weights: The weights file; ``None`` only checks that the model has a part of that
                architecture (nothing is built, so the file need not exist yet).
            backbone: The timm architecture of the weights.

        Returns:
            A fold model whose fresh copies start from ``weights`` (``self`` when only checking).

        Raises:
            ValueError: The model has no backbone of that architecture (or none at all).
        """
        ...

    def show_progress(self, enabled: bool) -> None:
        """Show or hide the model's own progress bars (a Trainer's bar is the Trainer's).

        Args:
            enabled: Whether to show them.
        """
        ...

    def fit_fold(
        self,
        datamodule: WBCDataModule,
        split: Split,
        fold: int,
        folder: Path,
        settings: FoldSettings,
    ) -> FoldResult | None:
        """Fit a fresh copy on the fold's split, predict its held-out part, write the fold.

        The model itself stays the template of the next fold. The fold's folder gets the saved
        model, ``predictions.csv`` and, last, ``fold.json`` (which marks the fold finished).

        Args:
            datamodule: The data of the whole cross-validation.
            split: The fold's training, validation and held-out dataset positions.
            fold: The fold index.
            folder: The fold's folder.
            settings: Seeds, Trainer arguments, callbacks and early stopping.

        Returns:
            The fold's result; ``None`` on the non-zero ranks of a distributed run.
        """
        ...

    def trained_model(self) -> TrainedModel:
        """The trained network with its pipeline and segmenter, as evaluations apply it.

        Returns:
            The :class:`~leukemia_wbc.inference.TrainedModel` of a loaded fold.

        Raises:
            ValueError: The model has no network (a feature baseline).
            RuntimeError: A template, not a loaded fold.
        """
        ...

    def predict_proba(self, batch: Mapping[str, Any]) -> np.ndarray:
        """Class probabilities of one untransformed batch (uint8 ``image``, optional masks).

        Args:
            batch: A collated batch as the dataset yields it.

        Returns:
            ``(B, C)`` probabilities, one column per class of the run; rows sum to 1.

        Raises:
            RuntimeError: The model is not fitted (a template).
        """
        ...

    def predict_loader(self, loader: Iterable[Mapping[str, Any]]) -> np.ndarray:
        """Class probabilities of every batch of a loader (e.g. the held-out one), in order.

        Args:
            loader: A ``DataLoader`` or any iterable of batches as :meth:`predict_proba` takes.

        Returns:
            ``(N, C)`` probabilities.

        Raises:
            ValueError: The loader yields no batch.
            RuntimeError: The model is not fitted.
        """
        ...

    def save(self, folder: Path) -> Path:
        """Write the fitted model into a fold's folder.

        Args:
            folder: The fold's folder (created if needed).

        Returns:
            The file written (what ``fold.json`` records as ``checkpoint``).

        Raises:
            RuntimeError: Nothing fitted to save.
        """
        ...

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        config: Mapping[str, Any] | None = None,
        device: str | torch.device = "cpu",
        segmenter: SegmenterSpec = None,
    ) -> FoldModel:
        """Read a model :meth:`save` (or a fold's training) wrote.

        Args:
            path: The file.
            config: The run's configuration (its recorded class and classes).
            device: Where a network runs.
            segmenter: Replace the saved nucleus segmenter (a method name, a checkpoint or a
                module).

        Returns:
            The fitted fold model.

        Raises:
            FileNotFoundError: No such file.
            ValueError: A file of another model, or a class this program does not define.
        """
        ...


#: What the :class:`~leukemia_wbc.experiments.CrossValidator` takes: a LightningModule
#: template (rebuilt for each fold from its hyperparameters), a factory returning a fresh one,
#: a :class:`~leukemia_wbc.models.HandcraftedSVM`, or a :class:`FoldModel`.
FoldModelSpec: TypeAlias = (
    pl.LightningModule | Callable[[], pl.LightningModule] | HandcraftedSVM | FoldModel
)

#: The classes a configuration file may name as a fold's model (``--model`` of
#: ``leukemia-wbc cv``): the library's tasks and feature baselines, and their subclasses.
ConfigurableFoldModel: TypeAlias = BaseTask | HandcraftedSVM

_ADAPTERS = (SklearnFoldModel, LightningFoldModel)


def as_fold_model(spec: FoldModelSpec) -> FoldModel:
    """The fold model of what a user passes to the cross-validator.

    Args:
        spec: A LightningModule template, a factory returning one, a
            :class:`~leukemia_wbc.models.HandcraftedSVM` (or subclass), or a fold model
            (returned as it is).

    Returns:
        The fold model (a baseline is wrapped, not copied).

    Raises:
        ValueError: Anything else, or a factory that returns something other than a
            LightningModule.
    """
    if isinstance(spec, _ADAPTERS):
        return spec
    if isinstance(spec, HandcraftedSVM):
        return SklearnFoldModel(spec)
    if isinstance(spec, pl.LightningModule):
        return LightningFoldModel(spec)
    if isinstance(spec, FoldModel):
        return spec
    if callable(spec):
        return LightningFoldModel(spec)
    raise ValueError(
        "task must be a LightningModule, a factory returning one, a HandcraftedSVM or a "
        f"FoldModel, got {type(spec).__name__}"
    )


def _adapter(
    config: Mapping[str, Any], checkpoint: str | None, *, strict: bool, where: str
) -> type[SklearnFoldModel] | type[LightningFoldModel]:
    """The adapter of a run's recorded class; the recorded file decides when none is named."""
    recorded = recorded_class(config)
    if recorded is not None:
        short = recorded.rpartition(".")[2]
        for adapter in _ADAPTERS:
            if short in adapter.registered():
                return adapter
        if strict:
            known = sorted({n for a in _ADAPTERS for n in a.registered()})
            raise ValueError(
                f"{where}: the recorded model {recorded!r} is not a fold model of this program "
                f"(known: {', '.join(known)}); nothing was imported: import the module that "
                "defines it first"
            )
    return SklearnFoldModel if SklearnFoldModel.claims(checkpoint) else LightningFoldModel


def describe_recorded(
    config: Mapping[str, Any], checkpoint: str | os.PathLike[str] | None = None
) -> FoldModelInfo:
    """The description of a finished run's model, from its recorded configuration alone.

    A class this program does not define is described from the fold's file instead (a
    description reads nothing; :func:`load_fold_model` refuses such a class).

    Args:
        config: The run's ``config.json`` content (or a :class:`CVResult`'s ``config``).
        checkpoint: A file one of its folds recorded, for runs that record no class.

    Returns:
        The description.
    """
    found = None if checkpoint is None else os.fspath(checkpoint)
    return _adapter(config, found, strict=False, where="").recorded_info(config)


def load_fold_model(
    folder: str | os.PathLike[str],
    *,
    config: Mapping[str, Any] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    segmenter: SegmenterSpec = None,
) -> FoldModel:
    """A finished fold's fitted model, in the adapter its run's recorded class calls for.

    Args:
        folder: The fold's folder (``<output_dir>/fold_<k>``).
        config: The run's configuration (default: the output folder's ``config.json``).
        checkpoint: The saved model, relative to the output folder (default: what the fold's
            ``fold.json`` records).
        device: Where a network runs.
        segmenter: Replace the saved nucleus segmenter.

    Returns:
        The fitted fold model.

    Raises:
        FileNotFoundError: No ``config.json`` or ``fold.json`` where needed, or no saved model.
        ValueError: The fold records no saved model, or the recorded class is not one this
            program defines (nothing is imported).
    """
    fold = Path(folder)
    out = fold.parent
    if config is None:
        path = out / CONFIG_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: {fold} is not a fold of a CrossValidator")
        config = json.loads(path.read_text(encoding="utf-8"))
    if checkpoint is None:
        record = fold / FOLD_FILE
        if not record.is_file():
            raise FileNotFoundError(f"{record} not found: {fold} is not a finished fold")
        checkpoint = json.loads(record.read_text(encoding="utf-8")).get("checkpoint")
        if not checkpoint:
            raise ValueError(f"{record} records no saved model to load")
    adapter = _adapter(config, os.fspath(checkpoint), strict=True, where=str(fold))
    return adapter.load(out / checkpoint, config=config, device=device, segmenter=segmenter)
