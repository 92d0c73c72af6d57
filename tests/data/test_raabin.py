"""RaabinWBC on a tiny fixture in the real layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from leukemia_wbc.data import base
from leukemia_wbc.data.raabin import RAABIN_CLASSES, RaabinWBC
from tests.conftest import fixture_module, make_fixture

COUNTS = fixture_module("raabin").COUNTS


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    return make_fixture("raabin", tmp_path)


def expected(split: str) -> dict[str, int]:
    return dict(zip(RAABIN_CLASSES, COUNTS[split], strict=True))


@pytest.mark.parametrize("split", ["Train", "TestA", "TestB"])
def test_counts_per_split(root: Path, split: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "read_rgb", lambda *a, **k: pytest.fail("decoded an image"))
    ds = RaabinWBC(root, split=split)  # type: ignore[arg-type]
    assert ds.classes == RAABIN_CLASSES
    assert ds.class_counts() == expected(split)
    assert ds.groups == [Path(p).stem for p in ds.paths]
    assert ds.sources == [split] * len(ds)
    for path, label in zip(ds.paths, ds.labels.tolist(), strict=True):
        assert Path(path).parent.name == RAABIN_CLASSES[label]


def test_default_split_is_train(root: Path) -> None:
    assert len(RaabinWBC(root)) == sum(COUNTS["Train"])


def test_several_splits(root: Path) -> None:
    ds = RaabinWBC(root, split=["TestA", "TestB"])
    assert len(ds) == sum(COUNTS["TestA"]) + sum(COUNTS["TestB"])
    assert ds.sources == ["TestA"] * sum(COUNTS["TestA"]) + ["TestB"] * sum(COUNTS["TestB"])
    assert ds.subset([0, len(ds) - 1]).sources == ["TestA", "TestB"]  # type: ignore[attr-defined]


def test_sample(root: Path) -> None:
    ds = RaabinWBC(root, split="TestA")
    sample = ds[len(ds) - 1]
    assert sample is not None
    assert sample["image"].dtype == torch.uint8 and sample["image"].shape == (3, 224, 224)
    assert int(sample["label"]) == RAABIN_CLASSES.index("Neutrophil")
    assert sample["group"] == Path(sample["path"]).stem


def test_case_insensitive_folders(root: Path) -> None:
    (root / "Train").rename(root / "train")
    (root / "train" / "Basophil").rename(root / "train" / "BASOPHIL")
    ds = RaabinWBC(root, split="Train")
    assert ds.class_counts() == expected("Train")
    assert ds.sources[0] == "Train"


def test_missing_class_folder_keeps_label_indices(root: Path) -> None:
    for f in (root / "TestB" / "Basophil").iterdir():
        f.unlink()
    (root / "TestB" / "Basophil").rmdir()
    ds = RaabinWBC(root, split="TestB")
    assert ds.classes == RAABIN_CLASSES
    assert ds.class_counts() == expected("TestB") | {"Basophil": 0}
    assert 0 not in ds.labels.tolist()


def test_unknown_class_folder(root: Path) -> None:
    (root / "Train" / "Blast").mkdir()
    with pytest.raises(ValueError, match=r"Blast.*not one of the expected classes"):
        RaabinWBC(root, split="Train")


def test_bad_split(root: Path) -> None:
    with pytest.raises(ValueError, match="split 'Test'"):
        RaabinWBC(root, split="Test")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="distinct"):
        RaabinWBC(root, split=["Train", "Train"])
    (root / "TestB").rename(root / "elsewhere")
    with pytest.raises(FileNotFoundError, match="TestB"):
        RaabinWBC(root, split="TestB")
