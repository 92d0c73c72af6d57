"""``SklearnFoldModel``: a handcrafted-feature baseline as what a cross-validation fold trains.

Private module behind :mod:`leukemia_wbc.experiments.fold_model` (see the protocol there for the
contract of every method). The baseline's file format is known here and nowhere else, so that it
can be replaced in one place.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.datamodule import WBCDataModule
from ..data.splits import Split
from ..inference import TrainedModel
from ..models import HandcraftedSVM  # the package defines every library baseline
from ..models.segmenter import SegmenterSpec, resolve_segmenter
from ._fold_types import FoldModelInfo, FoldSettings, model_record, predict_batches, recorded_class
from ._folds import finish_fold
from ._spec import model_name
from .fold_result import FoldResult

__all__ = ["SklearnFoldModel"]

_log = logging.getLogger(__name__)

#: The suffix of the file a fitted baseline is saved in (``HandcraftedSVM.save``'s format:
#: plain data, tensors and a skops estimator in a ``torch.save`` file; no pickle).
_SUFFIX = ".svm.pt"
#: The file a fold's fitted baseline is saved in, inside the fold's folder.
_FILE = "model" + _SUFFIX
#: The suffix of the joblib pickle older versions saved a fold's baseline in: never unpickled.
_LEGACY_SUFFIX = ".joblib"
#: The settings a baseline's record holds (its other arguments do not change the result).
_PARAMS = ("C", "kernel", "gamma", "calibration_folds", "seed", "on_empty")


class SklearnFoldModel:
    """A :class:`~leukemia_wbc.models.HandcraftedSVM` (or a subclass) as a fold model.

    Each fold fits a copy of the template on the features of the fold's training part (the
    validation part is not used: the SVM selects nothing on it, so it trains on exactly the
    samples the deep models train on), predicts the held-out part and saves the fitted copy
    into the fold's folder (``model.svm.pt``: plain data and a skops estimator, read without
    unpickling; a ``model.joblib`` pickle of an older version is refused).

    Args:
        model: The template of every fold (copied before fitting), or a fitted model.
        num_classes: Columns of :meth:`predict_proba` (classes absent from training get 0);
            default: the largest class seen in training plus one.

    Raises:
        ValueError: ``model`` is not a ``HandcraftedSVM``.
    """

    def __init__(self, model: HandcraftedSVM, *, num_classes: int | None = None) -> None:
        if not isinstance(model, HandcraftedSVM):
            raise ValueError(f"model: expected a HandcraftedSVM, got {type(model).__name__}")
        self._model = model
        self._num_classes = num_classes

    # -- describing ----------------------------------------------------------------------------
    @property
    def info(self) -> FoldModelInfo:
        """See :attr:`FoldModel.info`: the class and the settings that change the result."""
        svm = self._model
        params: dict[str, Any] = {k: getattr(svm, k) for k in _PARAMS}
        params["segmenter"] = svm.segmenter_spec or (
            type(svm.segmenter).__name__ if svm.segmenter else None
        )
        if svm.mask_source != "batch":  # recorded only when set, so older runs still resume
            params["mask_source"] = svm.mask_source
        return FoldModelInfo(
            name=model_name(svm),
            config=model_record(type(svm), params),
            explainable=False,
            checkpoint="sklearn",
            shortcut=svm.shortcut,
        )

    @property
    def model(self) -> HandcraftedSVM:
        """The wrapped baseline (the template, or the fitted model of a loaded fold)."""
        return self._model

    @classmethod
    def registered(cls) -> dict[str, type]:
        """The baseline classes a run may record: ``HandcraftedSVM`` and its subclasses.

        Returns:
            Class name to class (a user's subclass is known once its module is imported).
        """
        return dict(_baselines())

    @classmethod
    def recorded_info(cls, config: Mapping[str, Any]) -> FoldModelInfo:
        """The description of a finished run's baseline, from its recorded configuration.

        Args:
            config: The run's ``config.json`` content.

        Returns:
            The description (the fitted model is not read).
        """
        name = (recorded_class(config) or HandcraftedSVM.__name__).rpartition(".")[2]
        kind = _baselines().get(name)
        model = config.get("model")
        return FoldModelInfo(
            name=str(config.get("name") or name),
            config=dict(model) if isinstance(model, Mapping) else {},
            explainable=False,
            checkpoint="sklearn",
            shortcut=getattr(kind, "shortcut", None),
        )

    @staticmethod
    def claims(checkpoint: str | os.PathLike[str] | None) -> bool:
        """Whether a fold's recorded file is a saved baseline (for runs that record no class).

        Args:
            checkpoint: The file a fold recorded, if any.

        Returns:
            ``True`` for a file :meth:`save` writes, or the pickle an older version wrote
            (described as a baseline; :meth:`load` refuses it).
        """
        name = "" if checkpoint is None else os.fspath(checkpoint)
        return name.endswith((_SUFFIX, _LEGACY_SUFFIX))

    # -- training ------------------------------------------------------------------------------
    def check(
        self, datamodule: WBCDataModule, *, where: str = "model", attributions: str | None = None
    ) -> None:
        """See :meth:`FoldModel.check`: nucleus masks or a segmenter when the features need them.

        ``attributions`` is not checked: a feature baseline has no gradients, and the
        cross-validator skips its attributions with a logged note.
        """
        svm, dataset = self._model, datamodule.dataset
        if svm.needs_nucleus and svm.segmenter is None and not dataset.has_masks:
            raise ValueError(
                f"{where}.segmenter: {type(dataset).__name__} has no nucleus masks and "
                f"{type(svm).__name__} has no segmenter; set segmenter to a classical method "
                "(e.g. kmeans) or a trained SegmentationModule checkpoint"
            )

    def with_pretrained(self, weights: str | None, backbone: str) -> SklearnFoldModel:
        """See :meth:`FoldModel.with_pretrained`: a feature baseline has no backbone."""
        raise ValueError(
            f"{type(self._model).__name__} has no backbone to start from pretrained weights"
        )

    def show_progress(self, enabled: bool) -> None:
        """See :meth:`FoldModel.show_progress`: the bar over images of the feature extraction."""
        self._model.progress = enabled

    def fit_fold(
        self,
        datamodule: WBCDataModule,
        split: Split,
        fold: int,
        folder: Path,
        settings: FoldSettings,
    ) -> FoldResult:
        """See :meth:`FoldModel.fit_fold`: fit a copy on the training part, predict held out."""
        dataset = datamodule.dataset
        model = copy.deepcopy(self._model)
        start = time.perf_counter()
        model.fit_dataset(dataset, split.train)
        train_seconds = time.perf_counter() - start
        start = time.perf_counter()
        probs = model.predict_proba_dataset(dataset, split.test)
        predict_seconds = time.perf_counter() - start
        saved = SklearnFoldModel(model).save(folder)
        return finish_fold(
            folder,
            dataset,
            split,
            fold,
            split.test.tolist(),
            probs,
            (train_seconds, predict_seconds),
            checkpoint=f"{folder.name}/{saved.name}",
        )

    # -- a finished fold -----------------------------------------------------------------------
    def trained_model(self) -> TrainedModel:
        """See :meth:`FoldModel.trained_model`: a feature baseline has none."""
        raise ValueError(f"{self.info.name}: a feature baseline has no trained network")

    def predict_proba(self, batch: Mapping[str, Any]) -> np.ndarray:
        """See :meth:`FoldModel.predict_proba`: features of the batch's images and masks.

        A cell whose nucleus mask is empty (a segmenter that finds nothing, for example on a
        stain-perturbed image of the robustness suite) is measured as a whole image and logged,
        as the deep models fall back to the whole image: a prediction is made for every cell.
        """
        svm = self._model
        masks, cells = batch.get("mask"), batch.get("cell_mask")
        chosen, svm.on_empty = svm.on_empty, "image"
        try:
            features = svm.features(
                batch["image"],
                None if masks is None else list(masks),
                None if cells is None else list(cells),
            )
        finally:
            svm.on_empty = chosen
        if svm.fallbacks_:
            _log.warning(
                "%s: %d of %d cells without nucleus pixels, measured as whole images",
                self.info.name, len(svm.fallbacks_), len(features),
            )  # fmt: skip
        proba = svm.predict_proba_features(features)  # raises when not fitted
        assert svm.classes_ is not None
        width = self._num_classes or int(svm.classes_.max()) + 1
        out = np.zeros((len(proba), width))
        out[:, svm.classes_] = proba
        return out

    def predict_loader(self, loader: Iterable[Mapping[str, Any]]) -> np.ndarray:
        """See :meth:`FoldModel.predict_loader`."""
        return predict_batches(self.predict_proba, loader)

    def save(self, folder: Path) -> Path:
        """See :meth:`FoldModel.save`: the fitted baseline in ``HandcraftedSVM.save``'s format."""
        if self._model.pipeline_ is None:
            raise RuntimeError(f"{self.info.name} is not fitted: nothing to save in {folder}")
        Path(folder).mkdir(parents=True, exist_ok=True)
        path = Path(folder) / _FILE
        self._model.save(path)
        return path

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        config: Mapping[str, Any] | None = None,
        device: str | torch.device = "cpu",
        segmenter: SegmenterSpec = None,
    ) -> SklearnFoldModel:
        """See :meth:`FoldModel.load`: the class the run recorded, looked up by name only.

        ``device`` is not used (the baseline runs on the CPU); a ``segmenter`` replaces the one
        saved with the model. A fold's ``model.joblib`` (the pickle an older version wrote) is
        refused, never unpickled: the fold's results stay, its model must be refitted.
        """
        file = Path(path)
        if file.name.endswith(_LEGACY_SUFFIX):
            fold = file.parent.name
            k = fold.rpartition("_")[2]
            raise ValueError(
                f"{file} is a pickle (joblib) an older version of leukemia_wbc saved this fold's "
                "baseline in; unpickling can run any code the file holds, so it is not read. "
                f"The fold's results stay valid; to get a model to load, refit the fold: delete "
                f"the folder {file.parent} and run the cross-validation again (leukemia-wbc cv "
                f"... --restart_fold {k if k.isdigit() else 'K'})"
            )
        recorded = recorded_class(config or {}) or HandcraftedSVM.__name__
        known = _baselines()
        kind = known.get(recorded.rpartition(".")[2])
        if kind is None:
            raise ValueError(
                f"{path}: the recorded model {recorded!r} is not a feature baseline of this "
                f"program (known: {', '.join(sorted(known))})"
            )
        replacement = resolve_segmenter(segmenter, where="segmenter")
        model = kind.load(file, segmenter=replacement)
        if isinstance(segmenter, str):
            model.segmenter_spec = segmenter
        classes = ((config or {}).get("data") or {}).get("classes")
        return cls(model, num_classes=len(classes) if classes else None)


def _baselines() -> dict[str, type[HandcraftedSVM]]:
    """``HandcraftedSVM`` and every subclass defined in the running program, by class name."""
    known: dict[str, type[HandcraftedSVM]] = {HandcraftedSVM.__name__: HandcraftedSVM}
    todo: list[type[HandcraftedSVM]] = [HandcraftedSVM]
    while todo:
        for sub in todo.pop().__subclasses__():
            known.setdefault(sub.__name__, sub)
            todo.append(sub)
    return known
