"""The dual branch's third input: handcrafted nucleus features, standardised on training cells."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from leukemia_wbc.data import SYNTHETIC_CLASSES, ImageFolderWBC, SyntheticWBC, WBCDataModule
from leukemia_wbc.data.datamodule import collate_samples
from leukemia_wbc.explain import Explainer
from leukemia_wbc.inference import TrainedModel
from leukemia_wbc.models import FEATURE_NAMES, nucleus_features
from leukemia_wbc.models.dual_branch import DualBranchNet, DualBranchOptions
from leukemia_wbc.models.feature_branch import FeatureBranch, feature_names
from leukemia_wbc.tasks import DualBranchClassifier

SIZE = 32


def _task(**kwargs: Any) -> DualBranchClassifier:
    return DualBranchClassifier("resnet10t", "mobilenetv3_small_050", nucleus_size=32,
                                fusion_features=8, head_hidden=(8,), feature_width=8,
                                **kwargs)  # fmt: skip


def _fit(task: DualBranchClassifier, dm: WBCDataModule, root: Path) -> pl.Trainer:
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=root,
                         limit_train_batches=2, limit_val_batches=1)  # fmt: skip
    trainer.fit(task, datamodule=dm)
    return trainer


@pytest.fixture(scope="module")
def cells() -> SyntheticWBC:
    return SyntheticWBC(48, size=SIZE, seed=5, n_patients=8)


def test_feature_sets() -> None:
    assert feature_names("all") == FEATURE_NAMES and len(FEATURE_NAMES) == 23
    shape = feature_names("shape_texture")
    assert len(shape) == 11 and not any("mean" in n or "std" in n for n in shape)
    with pytest.raises(ValueError, match="features must be one of"):
        DualBranchOptions(features="colour")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="feature_width must be positive"):
        DualBranchOptions(features="all", feature_width=0)


def test_an_unfitted_branch_refuses_and_a_fitted_one_standardises() -> None:
    branch = FeatureBranch(3, 4)
    with pytest.raises(ValueError, match="never fitted"):
        branch(torch.ones(2, 3))
    values = torch.tensor([[100.0, 1.0, 5.0], [300.0, 3.0, 5.0], [200.0, 2.0, 5.0]])
    branch.fit(values)
    assert torch.allclose(branch.mean, torch.tensor([200.0, 2.0, 5.0]))
    assert torch.allclose(branch.std, torch.tensor([100.0, 1.0, 1.0]))  # a constant: 1
    with pytest.raises(ValueError, match=r"expected \(B, 3\) features"):
        branch(torch.ones(2, 4))
    with pytest.raises(ValueError, match="non-finite"):
        FeatureBranch(3).fit(torch.tensor([[1.0, float("nan"), 0.0], [1.0, 2.0, 3.0]]))
    net = DualBranchNet(2, DualBranchOptions("resnet10t", "mobilenetv3_small_050",
                                             features="all", fusion_features=8))  # fmt: skip
    with pytest.raises(ValueError, match="pass them as the third input"):
        net(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))


def test_training_measures_the_training_cells_and_the_checkpoint_keeps_it(
    cells: SyntheticWBC, tmp_path: Path
) -> None:
    pl.seed_everything(0)
    dm = WBCDataModule(cells, size=SIZE, batch_size=8, split="holdout")
    task = _task(features="all")
    trainer = _fit(task, dm, tmp_path)
    branch = task.net.feature_branch
    assert branch is not None and bool(branch.fitted)
    assert dm.split is not None
    train = dm.split.train
    expected = np.stack([nucleus_features(cells[i]["image"], cells[i]["mask"],
                                          cells[i].get("cell_mask")) for i in train])  # fmt: skip
    assert np.allclose(branch.mean.numpy(), expected.mean(0), rtol=1e-4, atol=1e-4)
    assert len(task.cell_features or ()) >= len(train)  # each cell measured once, kept by path
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    loaded = TrainedModel.from_checkpoint(path, device="cpu")
    assert torch.equal(loaded.task.net.feature_branch.mean, branch.mean)  # type: ignore[union-attr]
    batch = collate_samples([cells[i] for i in range(6)])
    batch.pop("skipped")
    here = TrainedModel.from_datamodule(task, dm).predict_batch(batch)
    there = loaded.predict_batch(batch)
    assert torch.allclose(here, there, atol=1e-6)
    # The features are an input: other features give other probabilities.
    moved = loaded.transform(batch)
    with torch.no_grad():
        crops = loaded.task.nucleus_crops(moved).crops
        logits = loaded.task.forward(moved["image"], crops, moved["features"])
        shifted = loaded.task.forward(moved["image"], crops, moved["features"] * 3)
    assert not torch.allclose(logits, shifted)
    maps = Explainer(loaded.task, method="gradcam").explain(moved).maps
    assert set(maps) == {"cell", "nucleus"} and maps["cell"].shape[0] == 6


def test_cells_without_masks_are_measured_with_the_segmenter(tmp_path: Path) -> None:
    root = tmp_path / "cells"
    SyntheticWBC(32, size=SIZE, seed=6, n_patients=8).to_folder(root)
    shutil.rmtree(root / "masks")
    ds = ImageFolderWBC(root, classes=SYNTHETIC_CLASSES, group_pattern=r"^(patient\d+)_",
                        size=SIZE, recursive=False)  # fmt: skip
    task = _task(features="shape_texture", segmenter="kmeans")
    _fit(task, WBCDataModule(ds, size=SIZE, batch_size=8, split="holdout"), tmp_path)
    branch = task.net.feature_branch
    assert branch is not None and branch.in_features == 11 and bool(branch.fitted)
    assert float(branch.mean[0]) > 10  # nucleus area in pixels: the segmenter found nuclei


def test_table_names_tell_the_variants_apart() -> None:
    """Two runs in one comparison must not share a name: features and consistency show."""
    from leukemia_wbc.experiments._spec import model_name
    from leukemia_wbc.tasks import CellClassifier

    plain = model_name(_task(num_classes=3))
    assert plain == "DualBranchClassifier(resnet10t+mobilenetv3_small_050)"
    assert model_name(_task(num_classes=3, features="all")) == plain[:-1] + "+all features)"
    consistent = model_name(CellClassifier("resnet10t", num_classes=3, consistency=0.5))
    assert consistent == "CellClassifier(resnet10t), stain consistency 0.5"
