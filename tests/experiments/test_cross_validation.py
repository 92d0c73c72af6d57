"""CrossValidator: folds, outputs, baselines on identical splits, resume, collect, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest
from lightning.pytorch.callbacks import Callback

from leukemia_wbc.data import SyntheticWBC, WBCDataModule
from leukemia_wbc.evaluation import compare
from leukemia_wbc.experiments import CrossValidator, CVResult
from leukemia_wbc.models.handcrafted import HandcraftedSVM
from leukemia_wbc.tasks import CellClassifier, OptimConfig

QUIET: dict[str, Any] = {
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "deterministic": True,
    "log_every_n_steps": 1,
}


@pytest.fixture(scope="module")
def synthetic() -> SyntheticWBC:
    return SyntheticWBC(72, size=32, seed=5, n_patients=6, difficulty=0.1)


def datamodule(ds: SyntheticWBC) -> WBCDataModule:
    return WBCDataModule(ds, size=32, batch_size=16, augment=False)


def tiny_cell() -> CellClassifier:
    return CellClassifier(
        "resnet18", num_classes=4, head_hidden=(16,), dropout=0.0, optim=OptimConfig(lr=3e-3)
    )


def validator(ds: SyntheticWBC, out: Path, task: Any = None, **kwargs: Any) -> CrossValidator:
    args: dict[str, Any] = {
        "n_splits": 3,
        "max_epochs": 3,
        "accelerator": "cpu",
        "devices": 1,
        "trainer_kwargs": QUIET,
        **kwargs,
    }
    return CrossValidator(task if task is not None else tiny_cell(), datamodule(ds), out, **args)


class Interrupt(Callback):
    """Raise in the middle of one fold, as a killed job would stop."""

    def __init__(self, fold: int, epoch: int) -> None:
        self.fold, self.epoch = fold, epoch

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if (
            trainer.default_root_dir.endswith(f"fold_{self.fold}")
            and trainer.current_epoch == self.epoch
        ):
            raise KeyboardInterrupt  # Lightning stops gracefully; we re-raise below


@pytest.fixture(scope="module")
def full_run(synthetic: SyntheticWBC, tmp_path_factory: pytest.TempPathFactory) -> CVResult:
    return validator(synthetic, tmp_path_factory.mktemp("cv") / "cell").run()


def test_every_sample_is_held_out_once_with_grouped_folds(
    full_run: CVResult, synthetic: SyntheticWBC
) -> None:
    preds = full_run.predictions
    assert sorted(preds.index.tolist()) == list(range(len(synthetic)))
    assert [f.fold for f in full_run.folds] == [0, 1, 2]
    for group in set(preds.group):  # a patient's cells all sit in one fold
        assert len(set(preds.fold[np.array(preds.group) == group].tolist())) == 1
    assert np.allclose(preds.probs.sum(axis=1), 1.0, atol=1e-5)
    assert (preds.label == synthetic.labels[preds.index]).all()


def test_outputs_on_disk_and_summary(full_run: CVResult) -> None:
    out = full_run.output_dir
    assert out is not None
    for name in ("config.json", "folds.csv", "result.json", "predictions.csv"):
        assert (out / name).is_file(), name
    for k in range(3):
        fold = out / f"fold_{k}"
        assert (fold / "checkpoints" / "best.ckpt").is_file()
        assert not (fold / "checkpoints" / "last.ckpt").exists()  # finished: nothing to resume
        header = (fold / "predictions.csv").read_text().splitlines()[0]
        assert header == "index,path,group,label,fold,prob_ALL,prob_AML,prob_CLL,prob_normal"
    fold0 = full_run.folds[0]
    assert [h["epoch"] for h in fold0.history] == [0.0, 1.0, 2.0]
    assert {"train_loss", "val_loss", "val_accuracy", "lr-Adam"} <= set(fold0.history[0])
    assert fold0.train_seconds > 0 and fold0.predict_ms_per_image > 0
    s = full_run.summary()["accuracy"]
    values = full_run.fold_metric("accuracy")
    assert s.mean == pytest.approx(values.mean()) and s.std == pytest.approx(values.std(ddof=1))
    assert s.ci_low <= s.mean <= s.ci_high
    assert full_run.confusion().sum() == len(full_run.predictions)
    assert np.allclose(full_run.confusion(normalize=True).sum(axis=1), 1.0)
    assert set(full_run.roc()) == {"ALL", "AML", "CLL", "normal"}
    table = full_run.to_markdown()
    assert table.count("\n") == 2 + 3 + 2 and "95 % CI" in table
    again = CVResult.load(out)
    assert again.to_markdown() == table
    assert np.array_equal(again.predictions.probs, full_run.predictions.probs)


def test_metrics_match_the_saved_predictions(full_run: CVResult) -> None:
    """Each fold's accuracy is recomputed from its own predictions.csv rows."""
    preds = full_run.predictions
    for f in full_run.folds:
        rows = preds.fold == f.fold
        assert rows.sum() == f.n_test
        acc = (preds.probs[rows].argmax(axis=1) == preds.label[rows]).mean()
        assert f.metrics["accuracy"] == pytest.approx(acc)


@pytest.mark.slow  # 30 s; resuming inside a fold is checked fast by the test below
def test_resume_after_a_fold_gives_the_same_table(
    full_run: CVResult, synthetic: SyntheticWBC, tmp_path: Path
) -> None:
    """Interrupted after fold 0 (a job running folds=[0]), then run again: same table."""
    out = tmp_path / "cell"
    first = validator(synthetic, out).run(folds=[0])
    assert [f.fold for f in first.folds] == [0]
    before = (out / "fold_0" / "fold.json").read_text()
    result = validator(synthetic, out).run()
    assert (out / "fold_0" / "fold.json").read_text() == before  # finished fold untouched
    assert result.to_markdown() == full_run.to_markdown()


def test_interrupted_fold_continues_from_its_last_checkpoint(
    full_run: CVResult, synthetic: SyntheticWBC, tmp_path: Path
) -> None:
    """A fold killed mid-training restarts from last.ckpt, not from scratch.

    The resumed epochs are not bit-identical to an uninterrupted run: Lightning restores the
    weights, optimiser, scheduler and loop counters, but not the data loader's shuffling stream.
    """
    out = tmp_path / "cell"
    with pytest.raises((KeyboardInterrupt, SystemExit, RuntimeError)):
        validator(synthetic, out, callbacks=[Interrupt(fold=1, epoch=1)]).run()
    assert (out / "fold_0" / "fold.json").is_file()
    assert not (out / "fold_1" / "fold.json").is_file()
    assert (out / "fold_1" / "checkpoints" / "last.ckpt").is_file()
    result = validator(synthetic, out).run()
    fold1 = result.folds[1]
    assert fold1.resumed and not result.folds[0].resumed
    # Epoch 0 comes from the interrupted run's log, later epochs from the resumed one.
    assert [h["epoch"] for h in fold1.history] == [0.0, 1.0, 2.0]
    first = full_run.folds[1].history[0]["val_loss"]
    assert fold1.history[0]["val_loss"] == pytest.approx(first, rel=1e-5)
    # finished before the stop (NaN where a value is undefined: compared as equal)
    assert json.dumps(result.folds[0].metrics) == json.dumps(full_run.folds[0].metrics)


def test_collect_merges_separate_fold_jobs(synthetic: SyntheticWBC, tmp_path: Path) -> None:
    out = tmp_path / "svm"
    svm = HandcraftedSVM(progress=False)
    for k in (2, 0):
        validator(synthetic, out, task=svm).run(folds=[k])
    with pytest.raises(ValueError, match=r"folds \[1\] of 3 are not finished"):
        CrossValidator.collect(out)
    partial = CrossValidator.collect(out, allow_partial=True)
    assert [f.fold for f in partial.folds] == [0, 2]
    validator(synthetic, out, task=svm).run(folds=[1])
    merged = CrossValidator.collect(out)
    assert sorted(merged.predictions.index.tolist()) == list(range(len(synthetic)))
    assert merged.summary()["accuracy"].mean > 0.4  # chance is 0.25


def test_compare_baselines_on_identical_splits(
    full_run: CVResult, synthetic: SyntheticWBC, tmp_path: Path
) -> None:
    svm = validator(synthetic, tmp_path / "svm", task=HandcraftedSVM(progress=False)).run()
    assert np.array_equal(svm.predictions.fold, full_run.predictions.fold)
    table = compare([full_run, svm], tmp_path / "table.md")
    assert (tmp_path / "table.md").read_text() == table
    lines = table.splitlines()
    assert lines[0] == "| Model | Accuracy | Balanced accuracy | Precision | Recall | F1 | AUC |"
    assert lines[2].startswith("| CellClassifier(resnet18) | ")
    assert lines[3].startswith("| HandcraftedSVM | ")
    assert sum("| HandcraftedSVM | " in line for line in lines) == 1 + 4  # overall + 4 classes
    other = validator(
        synthetic, tmp_path / "svm6", task=HandcraftedSVM(progress=False), n_splits=6
    ).run()
    with pytest.raises(ValueError, match="not run on identical folds"):
        compare([full_run, other])


def test_folder_of_another_configuration_is_refused(
    full_run: CVResult, synthetic: SyntheticWBC
) -> None:
    assert full_run.output_dir is not None
    config = (full_run.output_dir / "config.json").read_text()
    with pytest.raises(ValueError, match=r"another configuration \(.*max_epochs: 3 -> 5"):
        validator(synthetic, full_run.output_dir, max_epochs=5).run()
    assert (full_run.output_dir / "config.json").read_text() == config
    assert json.loads(config)["training"]["max_epochs"] == 3


def test_bad_inputs(synthetic: SyntheticWBC, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exceeds the 6 groups"):
        validator(synthetic, tmp_path, n_splits=7)
    ungrouped = SyntheticWBC(60, size=32, seed=0, n_patients=60, class_weights=[4, 4, 4, 1])
    small = int(min(ungrouped.class_counts().values()))
    assert 3 <= small < 10
    with pytest.raises(ValueError, match=f"exceeds the {small} samples of class 'normal'"):
        validator(ungrouped, tmp_path, n_splits=small + 1)
    with pytest.raises(ValueError, match="at least 3"):
        validator(synthetic, tmp_path, n_splits=2)
    with pytest.raises(ValueError, match="out of range"):
        validator(synthetic, tmp_path).run(folds=[3])
    with pytest.raises(ValueError, match=r"must not set \['logger'\]"):
        validator(synthetic, tmp_path, trainer_kwargs={"logger": False})
    with pytest.raises(ValueError, match="expected a LightningModule"):
        validator(synthetic, tmp_path, task=lambda: "not a model")


def test_dataset_without_labels_is_refused(tmp_path: Path) -> None:
    from leukemia_wbc.data import UNLABELLED, Record, WBCDataset

    unlabelled = WBCDataset(
        [Record(f"cell{i}.png", UNLABELLED, f"p{i}") for i in range(9)], ("ALL", "normal")
    )
    with pytest.raises(ValueError, match="WBCDataset has no labelled samples"):
        CrossValidator(
            CellClassifier("resnet10t", head_hidden=(8,)),  # classes taken from the data
            WBCDataModule(unlabelled, size=32), tmp_path, n_splits=3,
        )  # fmt: skip
    with pytest.raises(ValueError, match="the dataset is empty"):
        WBCDataset([], ("ALL", "normal"))


def test_fold_without_a_class_warns_and_leaves_metrics_undefined(tmp_path: Path) -> None:
    full = SyntheticWBC(90, size=32, seed=2, n_patients=6)
    normal = [i for i in range(90) if full.labels[i] == 3 and full.groups[i] == "patient000"]
    assert len(normal) >= 2
    ds = full.subset([i for i in range(90) if full.labels[i] != 3] + normal)
    with pytest.warns(UserWarning, match="holds no sample of"):
        cv = validator(ds, tmp_path, task=HandcraftedSVM(progress=False))
    with pytest.warns(UserWarning, match="undefined"):
        result = cv.run()
    recall = result.fold_metric("recall_normal")
    assert np.isnan(recall).any() and not np.isnan(result.fold_metric("accuracy")).any()


def test_relative_output_folder(
    synthetic: SyntheticWBC, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative output folder (the demo's default ``runs/demo``) records and reloads a fold."""
    monkeypatch.chdir(tmp_path)
    result = validator(synthetic, Path("runs") / "cell", max_epochs=1).run(folds=[0])
    assert result.folds[0].checkpoint == "fold_0/checkpoints/best.ckpt"
    assert isinstance(result.load_model(0), CellClassifier)
