"""Cross-dataset testing of a cross-validation's models, through the API and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from leukemia_wbc.data import SyntheticWBC, WBCDataModule
from leukemia_wbc.evaluation.cross_dataset import class_mapping, cross_dataset_test
from leukemia_wbc.evaluation.robustness import cv_robustness
from leukemia_wbc.experiments import CrossValidator
from leukemia_wbc.models import ColourShortcutBaseline
from leukemia_wbc.tasks import CellClassifier, OptimConfig


def test_class_mapping_rules() -> None:
    source = ("ALL", "AML", "CLL", "normal")
    assert class_mapping(source, ("ALL", "normal")) == {"ALL": "ALL", "normal": "normal"}
    mapped = class_mapping(source, ("blast", "hem", "other"),
                           {"blast": "ALL", "hem": "normal", "other": None})  # fmt: skip
    assert mapped == {"blast": "ALL", "hem": "normal", "other": None}
    with pytest.raises(ValueError, match=r"test classes \['blast'\] have no training class"):
        class_mapping(source, ("blast",))
    with pytest.raises(ValueError, match="are not training classes"):
        class_mapping(source, ("blast",), {"blast": "lymphoblast"})
    with pytest.raises(ValueError, match="are not test classes"):
        class_mapping(source, ("ALL",), {"blast": "ALL"})


@pytest.fixture(scope="module")
def cnn_cv(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, SyntheticWBC]:
    """A tiny CNN cross-validated for 2 epochs on 3 folds of SyntheticWBC."""
    data = SyntheticWBC(64, size=32, seed=0)
    dm = WBCDataModule(data, size=32, batch_size=16, augment=False)
    task = CellClassifier(
        "resnet10t", num_classes=4, head_hidden=(16,), dropout=0.0, optim=OptimConfig(lr=3e-3)
    )
    out = tmp_path_factory.mktemp("cnn_cv")
    result = CrossValidator(task, dm, out, n_splits=3, max_epochs=2, accelerator="cpu",
                            early_stopping_patience=None,
                            trainer_kwargs={"enable_progress_bar": False}).run()  # fmt: skip
    return result, data


def test_deep_models_run_through_both_evaluations(cnn_cv: tuple[object, SyntheticWBC]) -> None:
    result, data = cnn_cv
    other = SyntheticWBC(24, size=32, seed=9)
    scores = cross_dataset_test(result, other, progress=False)
    assert len(scores.fold_metrics) == 3 and scores.n_images == 24 and scores.excluded == 0
    assert 0.0 <= scores.summary()["accuracy"].mean <= 1.0
    assert "| CellClassifier(resnet10t) | SyntheticWBC | 24 |" in scores.to_markdown()
    robust = cv_robustness(result, data, perturbations=("blur",), strengths=(1.0,),
                           progress=False)  # fmt: skip
    # the clean accuracy is the cross-validation's own, fold by fold
    assert robust.clean["accuracy"] == pytest.approx(result.summary()["accuracy"].mean, abs=1e-6)


def test_class_map_excludes_and_renames(tmp_path: Path) -> None:
    source = SyntheticWBC(60, size=32, seed=0, classes=("ALL", "normal"))
    result = CrossValidator(ColourShortcutBaseline(progress=False),
                            WBCDataModule(source, size=32), tmp_path, n_splits=3).run()  # fmt: skip
    target = SyntheticWBC(30, size=32, seed=4, classes=("ALL", "CLL", "normal"))
    scores = cross_dataset_test(result, target, class_map={"CLL": None}, progress=False)
    assert scores.excluded == sum(1 for lab in target.labels if lab == 1)
    assert scores.n_images + scores.excluded == 30
    assert scores.mapping == {"ALL": "ALL", "CLL": None, "normal": "normal"}
    with pytest.raises(ValueError, match="no training class"):
        cross_dataset_test(result, target, progress=False)


@pytest.mark.slow  # 19 s; docs/robustness.md's `cv ... --test_data` line runs in the fast suite
def test_cv_command_with_test_data(tmp_path: Path) -> None:
    config = tmp_path / "other.yaml"
    config.write_text(
        "data:\n  dataset:\n    class_path: leukemia_wbc.data.SyntheticWBC\n"
        "    init_args: {n: 24, size: 32, seed: 7}\n  size: 32\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "leukemia_wbc", "cv", "--model",
         "leukemia_wbc.models.ColourShortcutBaseline", "--model.progress", "false",
         "--data.dataset", "SyntheticWBC", "--data.dataset.n", "48", "--data.dataset.size", "32",
         "--data.size", "32", "--cv.output_dir", str(tmp_path / "out"), "--cv.n_splits", "3",
         "--test-data", str(config), "--robustness", "true",
         "--robustness-strengths", "[1.0]"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "cross-dataset test on other (24 images, 0 excluded" in proc.stdout
    saved = json.loads((tmp_path / "out" / "cross_dataset_other.json").read_text())
    assert saved["n_images"] == 24 and len(saved["fold_metrics"]) == 3
    # the perturbation suite ran too, and the report shows it
    rows = json.loads((tmp_path / "out" / "robustness.json").read_text())
    assert rows[0]["perturbation"] == "none" and len(rows) == 1 + 8
    report = (tmp_path / "out" / "report" / "report.md").read_text()
    assert "## Robustness to stain and acquisition shift" in report
    assert "Colour shortcut: a classifier on whole-image colour statistics alone" in report
    cross = report.split("## Cross-dataset test")[1]
    assert "| ColourShortcutBaseline | other | 24 | 0 |" in cross


def test_each_fold_is_evaluated_with_its_own_stain_target(tmp_path: Path) -> None:
    data = SyntheticWBC(48, size=32, seed=1)
    dm = WBCDataModule(data, size=32, batch_size=16, augment=False, stain_normalization=True)
    task = CellClassifier("resnet10t", num_classes=4, head_hidden=(8,), dropout=0.0)
    result = CrossValidator(task, dm, tmp_path, n_splits=3, max_epochs=1, accelerator="cpu",
                            early_stopping_patience=None,
                            trainer_kwargs={"enable_progress_bar": False}).run()  # fmt: skip
    assert not bool(dm.pipeline.stain.fitted)  # the datamodule passed in stays unfitted
    targets = []
    for fold in range(3):
        own = result.trained_model(fold).pipeline
        assert own is not dm.pipeline and bool(own.stain.fitted)
        targets.append(own.stain.stain_matrix.clone())
    # every fold fitted its target on its own training images, and its checkpoint carries it
    assert not torch.equal(targets[0], targets[1])
