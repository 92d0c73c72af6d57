"""FoldModel: both adapters fit a fold, predict, save and load; the lookup refuses strangers."""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

from leukemia_wbc.data import Split, SyntheticWBC, WBCDataModule, collate_samples
from leukemia_wbc.experiments import (
    CrossValidator,
    FoldModel,
    LightningFoldModel,
    SklearnFoldModel,
    as_fold_model,
    load_fold_model,
)
from leukemia_wbc.experiments.fold_model import FoldSettings, describe_recorded
from leukemia_wbc.models import ColourShortcutBaseline, HandcraftedSVM
from leukemia_wbc.tasks import CellClassifier

QUIET: dict[str, Any] = {
    "accelerator": "cpu",
    "devices": 1,
    "max_epochs": 2,
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "deterministic": True,
    "log_every_n_steps": 1,
}


@pytest.fixture(scope="module")
def data() -> SyntheticWBC:
    return SyntheticWBC(48, size=32, seed=5, n_patients=6, difficulty=0.1)


@pytest.fixture(scope="module")
def split(data: SyntheticWBC) -> Split:
    idx = np.arange(len(data))
    return Split(train=idx[idx % 4 >= 2], val=idx[idx % 4 == 1], test=idx[idx % 4 == 0])


def _datamodule(data: SyntheticWBC) -> WBCDataModule:
    return WBCDataModule(data, size=32, batch_size=16, augment=False)


def _fit(model: FoldModel, data: SyntheticWBC, split: Split, out: Path) -> dict[str, Any]:
    """Fit fold 0 into ``out/fold_0`` with ``out/config.json`` written as a run writes it."""
    dm = _datamodule(data)
    model.check(dm)
    config = {"name": model.info.name, "model": model.info.config,
              "data": {"classes": list(data.classes)}}  # fmt: skip
    out.mkdir(parents=True)
    (out / "config.json").write_text(json.dumps(config))
    result = model.fit_fold(dm, split, 0, out / "fold_0", FoldSettings(seed=0, trainer_args=QUIET))
    assert result is not None and result.n_test == len(split.test)
    assert (out / "fold_0" / "fold.json").is_file()
    assert result.checkpoint is not None and (out / result.checkpoint).is_file()
    return config


def _held_out(data: SyntheticWBC, split: Split) -> list[dict[str, Any]]:
    test = split.test.tolist()
    return [
        collate_samples([data[i] for i in test[:6]]),
        collate_samples([data[i] for i in test[6:]]),
    ]


def test_sklearn_adapter_fits_predicts_and_round_trips(
    data: SyntheticWBC, split: Split, tmp_path: Path
) -> None:
    svm = HandcraftedSVM(progress=False)
    model = as_fold_model(svm)
    assert isinstance(model, SklearnFoldModel) and model.model is svm  # wrapped, not copied
    info = model.info
    assert (info.name, info.explainable, info.checkpoint, info.shortcut) == (
        "HandcraftedSVM", False, "sklearn", None,
    )  # fmt: skip
    assert info.config["class"] == "leukemia_wbc.models.handcrafted.HandcraftedSVM"
    assert info.config["hparams"]["C"] == 1.0
    _fit(model, data, split, tmp_path / "run")
    assert svm.pipeline_ is None  # the template stays unfitted: each fold fits a copy

    loaded = load_fold_model(tmp_path / "run" / "fold_0")
    assert isinstance(loaded, SklearnFoldModel)
    batches = _held_out(data, split)
    probs = loaded.predict_loader(batches)
    labels = data.labels[split.test]
    assert probs.shape == (len(split.test), 4)
    assert np.allclose(probs.sum(axis=1), 1.0)
    assert (probs.argmax(axis=1) == labels).mean() > 0.5  # chance is 0.25
    saved = np.loadtxt(tmp_path / "run" / "fold_0" / "predictions.csv", delimiter=",",
                       skiprows=1, usecols=(5, 6, 7, 8))  # fmt: skip
    assert np.allclose(probs, saved, atol=1e-6)  # the batch path scores as the fold did

    copy = loaded.save(tmp_path / "copy" / "fold_0")
    assert copy.name == "model.svm.pt" and zipfile.is_zipfile(copy)  # no pickle
    config = {"model": info.config, "data": {"classes": list(data.classes)}}
    again = SklearnFoldModel.load(copy, config=config)
    assert np.array_equal(again.predict_loader(batches), probs)
    with pytest.raises(ValueError, match="a feature baseline has no trained network"):
        again.trained_model()


def test_colour_baseline_describes_itself_as_a_shortcut() -> None:
    info = as_fold_model(ColourShortcutBaseline(progress=False)).info
    assert info.shortcut == "colour" and not info.explainable
    recorded = describe_recorded({"name": "colour", "model": info.config})
    assert recorded.shortcut == "colour" and recorded.name == "colour"


def test_lightning_adapter_fits_predicts_and_round_trips(
    data: SyntheticWBC, split: Split, tmp_path: Path
) -> None:
    task = CellClassifier("resnet10t", head_hidden=(8,), dropout=0.0)
    model = as_fold_model(task)
    assert isinstance(model, LightningFoldModel)
    _fit(model, data, split, tmp_path / "run")
    info = model.info
    assert (info.name, info.explainable, info.checkpoint) == (
        "CellClassifier(resnet10t)", True, "lightning",
    )  # fmt: skip
    assert info.config["hparams"]["classes"] == list(data.classes)  # bound to the data
    with pytest.raises(RuntimeError, match="is a template"):
        model.predict_proba(_held_out(data, split)[0])

    loaded = load_fold_model(tmp_path / "run" / "fold_0")
    assert isinstance(loaded, LightningFoldModel)
    batches = _held_out(data, split)
    probs = loaded.predict_loader(batches)
    assert probs.shape == (len(split.test), 4)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    saved = np.loadtxt(tmp_path / "run" / "fold_0" / "predictions.csv", delimiter=",",
                       skiprows=1, usecols=(5, 6, 7, 8))  # fmt: skip
    assert np.allclose(probs, saved, atol=1e-5)  # the trained model scores as the fold did
    assert loaded.trained_model().classes == data.classes

    copy = loaded.save(tmp_path / "copy" / "fold_0")
    assert copy == tmp_path / "copy" / "fold_0" / "checkpoints" / "best.ckpt"
    again = LightningFoldModel.load(copy)
    assert np.array_equal(again.predict_loader(batches), probs)


def test_an_unknown_recorded_class_is_refused_and_nothing_is_imported(tmp_path: Path) -> None:
    fold = tmp_path / "fold_0"
    fold.mkdir()
    (tmp_path / "config.json").write_text(
        json.dumps({"model": {"class": "evil_payload_mod.Payload", "hparams": {}}})
    )
    (fold / "fold.json").write_text(json.dumps({"checkpoint": "fold_0/model.joblib"}))
    (fold / "model.joblib").write_bytes(b"not read")
    with pytest.raises(ValueError, match=r"'evil_payload_mod\.Payload' is not a fold model of"):
        load_fold_model(fold)
    assert "evil_payload_mod" not in sys.modules
    # a description reads nothing: it falls back on the fold's file kind
    assert not describe_recorded({"model": {"class": "evil_payload_mod.Payload"}},
                                 "fold_0/model.joblib").explainable  # fmt: skip


def test_runs_that_record_no_class_are_told_apart_by_their_files() -> None:
    assert not describe_recorded({}, "fold_0/model.joblib").explainable
    assert describe_recorded({}, "fold_0/model.svm.pt").checkpoint == "sklearn"
    assert describe_recorded({}, "fold_0/checkpoints/best.ckpt").explainable
    recorded = {"model": {"class": "leukemia_wbc.tasks.classification.CellClassifier"}}
    assert describe_recorded(recorded).checkpoint == "lightning"


class _Payload:
    """Unpickling this runs ``Path(marker).touch()``: what a crafted pickle can do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def test_a_fold_saved_as_a_pickle_by_an_older_version_is_kept_but_never_unpickled(
    data: SyntheticWBC, split: Split, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    cv: dict[str, Any] = {"n_splits": 3, "group": False, "accelerator": "cpu"}
    first = CrossValidator(HandcraftedSVM(progress=False), _datamodule(data), out, **cv)
    before = first.run(folds=[0])
    # fold 0 as an older version left it: a joblib pickle (here a crafted one) as its model
    fold = out / "fold_0"
    (fold / "model.svm.pt").unlink()
    marker = tmp_path / "pwned"
    joblib.dump(_Payload(marker), fold / "model.joblib")
    record = json.loads((fold / "fold.json").read_text())
    record["checkpoint"] = "fold_0/model.joblib"
    (fold / "fold.json").write_text(json.dumps(record))

    # resuming keeps the finished fold's results (nothing read from its model), runs the others
    again = CrossValidator(HandcraftedSVM(progress=False), _datamodule(data), out, **cv).run()
    assert [f.fold for f in again.folds] == [0, 1, 2]
    assert json.dumps(again.folds[0].metrics) == json.dumps(before.folds[0].metrics)
    assert (fold / "model.joblib").is_file() and not marker.exists()
    assert again.folds[1].checkpoint == "fold_1/model.svm.pt"
    assert again.fold_model(1).predict_loader(_held_out(data, split)).shape == (12, 4)

    # loading the old fold's model is refused with what to do, and runs nothing
    for load in (lambda: again.fold_model(0), lambda: load_fold_model(fold)):
        with pytest.raises(ValueError) as err:
            load()
        message = str(err.value)
        assert "\n" not in message and str(fold / "model.joblib") in message
        for part in ("is a pickle", "older version", "can run any code", "delete the folder",
                     "--restart_fold 0"):  # fmt: skip
            assert part in message, part
    assert not marker.exists()
    (fold / "model.joblib").rename(fold / "model.svm.pt")
    with pytest.raises(ValueError, match="is a pickle"):  # a renamed pickle too
        SklearnFoldModel.load(fold / "model.svm.pt", config=again.config)
    assert not marker.exists()


def test_as_fold_model_refuses_other_objects_in_one_line() -> None:
    with pytest.raises(ValueError, match="got int") as err:
        as_fold_model(42)  # type: ignore[arg-type]
    assert "\n" not in str(err.value) and "LightningModule" in str(err.value)
    with pytest.raises(ValueError, match="returned a str, expected a LightningModule"):
        as_fold_model(lambda: "not a model")  # type: ignore[arg-type,return-value]
    model = as_fold_model(HandcraftedSVM(progress=False))
    assert as_fold_model(model) is model


def test_a_folder_written_before_optim_config_resumes(tmp_path: Path) -> None:
    """Run folders record flat optimiser settings before OptimConfig: the same run resumes."""
    from leukemia_wbc.experiments._output import prepare_output
    from leukemia_wbc.tasks import OptimConfig

    optim = OptimConfig(lr=5e-3, optimizer="adamw", scheduler="onecycle").to_dict()
    now = {"model": {"class": "leukemia_wbc.tasks.classification.CellClassifier",
                     "hparams": {"dropout": 0.2, "optim": optim}}, "n_splits": 3}  # fmt: skip
    before = json.loads(json.dumps(now))
    del before["model"]["hparams"]["optim"]
    before["model"]["hparams"].update(optim)  # the flat keys of the old records
    (tmp_path / "config.json").write_text(json.dumps(before))
    prepare_output(tmp_path, now, None, None)  # type: ignore[arg-type]  # resumes: no error
    other = json.loads(json.dumps(now))
    other["model"]["hparams"]["optim"]["lr"] = 1e-3
    with pytest.raises(ValueError, match=r"another configuration \(model\.hparams\.optim\.lr"):
        prepare_output(tmp_path, other, None, None)  # type: ignore[arg-type]


def test_a_folder_written_before_later_arguments_resumes(tmp_path: Path) -> None:
    """A run recorded before ``consistency`` and ``features`` existed ran with their defaults."""
    from leukemia_wbc.experiments._output import prepare_output

    now = {"model": {"class": "leukemia_wbc.tasks.classification.DualBranchClassifier",
                     "hparams": {"dropout": 0.2, "consistency": 0.0, "features": None,
                                 "feature_width": 32}}}  # fmt: skip
    before = {"model": {"class": now["model"]["class"], "hparams": {"dropout": 0.2}}}
    (tmp_path / "config.json").write_text(json.dumps(before))
    prepare_output(tmp_path, now, None, None)  # type: ignore[arg-type]  # resumes: no error
    changed = json.loads(json.dumps(now))
    changed["model"]["hparams"]["consistency"] = 1.0  # not the default: another run
    with pytest.raises(ValueError, match=r"model\.hparams\.consistency: None -> 1\.0"):
        prepare_output(tmp_path, changed, None, None)  # type: ignore[arg-type]


def test_an_svm_scores_a_cell_without_a_nucleus_instead_of_stopping() -> None:
    """A perturbed cell whose nucleus the segmenter misses still gets a prediction (logged)."""
    from leukemia_wbc.data import SyntheticWBC
    from leukemia_wbc.data.datamodule import collate_samples
    from leukemia_wbc.experiments._fold_sklearn import SklearnFoldModel

    cells = SyntheticWBC(24, size=32, seed=3, n_patients=4)
    svm = HandcraftedSVM(progress=False, calibration_folds=2)
    svm.fit_dataset(cells)
    model = SklearnFoldModel(svm, num_classes=cells.num_classes)
    batch = collate_samples([cells[i] for i in range(4)])
    batch["mask"][1] = 0  # the segmenter found nothing in this cell
    proba = model.predict_proba(batch)
    assert proba.shape == (4, cells.num_classes)
    assert np.allclose(proba.sum(1), 1.0)
    assert svm.on_empty == "raise" and svm.fallbacks_ == ["image 1"]
