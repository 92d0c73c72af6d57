"""``LightningFoldModel``: a LightningModule as what a cross-validation fold trains.

Private module behind :mod:`leukemia_wbc.experiments.fold_model` (see the protocol there for the
contract of every method).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from ..checkpoint import registered_tasks
from ..data.datamodule import WBCDataModule
from ..data.splits import Split
from ..explain import Explainer
from ..inference import TrainedModel
from ..models.segmenter import SegmenterSpec
from ..tasks.classifier_base import ClassificationTask
from ._fold_types import FoldModelInfo, FoldSettings, model_record, predict_batches, recorded_class
from ._folds import run_lightning_fold
from ._spec import model_name, rebuild
from .fold_result import FoldResult

__all__ = ["LightningFoldModel"]

#: Where :meth:`LightningFoldModel.save` writes, inside a fold's folder (as training does).
_BEST = Path("checkpoints") / "best.ckpt"


class LightningFoldModel:
    """A LightningModule as a fold model: a fresh task per fold, trained under a ``Trainer``.

    Each fold rebuilds the template from its saved hyperparameters (or calls the factory),
    trains it with a best checkpoint on the task's monitored metric (``val_loss``), early
    stopping, a learning-rate monitor and a CSV log, resumes an interrupted fold from its
    ``last.ckpt``, and predicts the held-out part with the best weights on every rank of a
    distributed run. A finished fold loads back as a
    :class:`~leukemia_wbc.inference.TrainedModel`: the task with the pipeline and segmenter it
    was trained with.

    Args:
        task: A LightningModule template (rebuilt for each fold) or a factory returning a
            fresh one.
        trained: The trained model of a finished fold (see :meth:`load`); ``None`` for a
            template.
        source: The checkpoint ``trained`` was loaded from.

    Raises:
        ValueError: A factory that returns something other than a LightningModule.
    """

    def __init__(
        self,
        task: pl.LightningModule | Callable[[], pl.LightningModule],
        *,
        trained: TrainedModel | None = None,
        source: Path | None = None,
    ) -> None:
        if isinstance(task, pl.LightningModule):
            self._template: pl.LightningModule | None = task
            self._factory: Callable[[], pl.LightningModule] | None = None
            probe: Any = task
        else:
            self._template, self._factory = None, task
            probe = task()
            if not isinstance(probe, pl.LightningModule):
                raise ValueError(
                    f"task: the task factory returned a {type(probe).__name__}, "
                    "expected a LightningModule"
                )
        self._probe: pl.LightningModule = probe
        self._trained = trained
        self._source = source

    # -- describing ----------------------------------------------------------------------------
    @property
    def info(self) -> FoldModelInfo:
        """See :attr:`FoldModel.info`: the class, backbones and hyperparameters of the task."""
        probe = self._probe
        return FoldModelInfo(
            name=model_name(probe),
            config=model_record(type(probe), dict(probe.hparams)),
            explainable=True,
            checkpoint="lightning",
        )

    @property
    def model(self) -> pl.LightningModule:
        """The task: the template (or the factory's first product), or the trained one."""
        return self._trained.task if self._trained is not None else self._probe

    @classmethod
    def registered(cls) -> dict[str, type]:
        """The task classes a run may record: the library's and the user's, by class name.

        Returns:
            Class name to class (a subclass is known once its module is imported).
        """
        return dict(registered_tasks())

    @classmethod
    def recorded_info(cls, config: Mapping[str, Any]) -> FoldModelInfo:
        """The description of a finished run's task, from its recorded configuration.

        Args:
            config: The run's ``config.json`` content.

        Returns:
            The description (no weights are read).
        """
        name = recorded_class(config) or "LightningModule"
        model = config.get("model")
        return FoldModelInfo(
            name=str(config.get("name") or name.rpartition(".")[2]),
            config=dict(model) if isinstance(model, Mapping) else {},
            explainable=True,
            checkpoint="lightning",
        )

    # -- training ------------------------------------------------------------------------------
    def check(
        self, datamodule: WBCDataModule, *, where: str = "model", attributions: str | None = None
    ) -> None:
        """See :meth:`FoldModel.check`: the task's classes and nucleus masks; its explainer."""
        probe: Any = self._probe
        if isinstance(probe, ClassificationTask):
            probe.bind_data(datamodule, where=where)  # classes from the data, or an error now
        if attributions is not None:
            try:  # a network the Explainer does not know fails now, not after a fold
                Explainer(probe, attributions)  # type: ignore[arg-type]
            except ValueError as err:
                raise ValueError(f"attributions: {err}") from None

    def with_pretrained(self, weights: str | None, backbone: str) -> LightningFoldModel:
        """See :meth:`FoldModel.with_pretrained`: the task's :meth:`pretrained_arguments`."""
        probe: Any = self._probe
        arguments = getattr(probe, "pretrained_arguments", None)
        if arguments is None:
            raise ValueError(f"{type(probe).__name__} takes no pretrained backbone weights")
        extra: dict[str, str] = arguments(weights or "<weights>", backbone)
        if weights is None:
            return self
        kwargs = {**dict(probe.hparams), **extra}
        for name in getattr(probe, "hparams_ignore", ()):  # modules kept out of hparams
            kwargs[name] = getattr(probe, name)
        cls = type(probe)
        return LightningFoldModel(lambda: cls(**kwargs))

    def show_progress(self, enabled: bool) -> None:
        """See :meth:`FoldModel.show_progress`: a task's bar is the Trainer's; nothing to set."""

    def fit_fold(
        self,
        datamodule: WBCDataModule,
        split: Split,
        fold: int,
        folder: Path,
        settings: FoldSettings,
    ) -> FoldResult | None:
        """See :meth:`FoldModel.fit_fold`: the Lightning fold runner, resumable, DDP-aware."""
        build = self._factory
        if build is None:
            assert self._template is not None
            build = rebuild(self._template)
        return run_lightning_fold(
            build,
            datamodule,
            split,
            fold,
            folder,
            seed=settings.seed,
            trainer_args=dict(settings.trainer_args),
            callbacks=settings.callbacks,
            patience=settings.patience,
        )

    # -- a finished fold -----------------------------------------------------------------------
    def trained_model(self) -> TrainedModel:
        """See :meth:`FoldModel.trained_model`."""
        if self._trained is None:
            raise RuntimeError(
                f"{self.info.name} is a template, not a trained fold: read a finished fold "
                "with load_fold_model(folder) or CVResult.fold_model(fold)"
            )
        return self._trained

    def predict_proba(self, batch: Mapping[str, Any]) -> np.ndarray:
        """See :meth:`FoldModel.predict_proba`: the trained model with its own pipeline."""
        return np.asarray(self.trained_model().predict_batch(dict(batch)).numpy())

    def predict_loader(self, loader: Iterable[Mapping[str, Any]]) -> np.ndarray:
        """See :meth:`FoldModel.predict_loader`."""
        return predict_batches(self.predict_proba, loader)

    def save(self, folder: Path) -> Path:
        """See :meth:`FoldModel.save`: the checkpoint the trained fold was loaded from."""
        self.trained_model()  # a template has nothing to save
        assert self._source is not None
        path = Path(folder) / _BEST
        if path.resolve() != self._source.resolve():
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self._source, path)
        return path

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        config: Mapping[str, Any] | None = None,
        device: str | torch.device = "cpu",
        segmenter: SegmenterSpec = None,
    ) -> LightningFoldModel:
        """See :meth:`FoldModel.load`: a :class:`~leukemia_wbc.inference.TrainedModel`."""
        trained = TrainedModel.from_checkpoint(path, device=device, segmenter=segmenter)
        return cls(trained.task, trained=trained, source=Path(path))
