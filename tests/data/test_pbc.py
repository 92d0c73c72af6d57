"""PBC on a tiny fixture in the real, doubly nested layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from leukemia_wbc.data import base
from leukemia_wbc.data.pbc import PBC, PBC_CLASS_COUNTS, PBC_CLASSES
from tests.conftest import fixture_module, make_fixture

FIXTURE = fixture_module("pbc")
EXPECTED = {name: n for name, (_, n) in FIXTURE.CLASSES.items()}
INNER = Path("PBC_dataset_normal_DIB", "PBC_dataset_normal_DIB")


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    return make_fixture("pbc", tmp_path)


def test_counts_without_duplicates(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "read_rgb", lambda *a, **k: pytest.fail("decoded an image"))
    ds = PBC(root)
    assert ds.classes == PBC_CLASSES
    assert ds.class_counts() == EXPECTED  # the outer copy's files are not counted twice
    assert len(set(Path(p).name for p in ds.paths)) == len(ds)
    # The copy with more files (the inner one) supplies every image.
    assert all(Path(p).parent.parent == root / INNER for p in ds.paths)
    assert ds.groups == [Path(p).stem for p in ds.paths]
    for path, label in zip(ds.paths, ds.labels.tolist(), strict=True):
        assert Path(path).parent.name == PBC_CLASSES[label]


def test_file_only_in_outer_copy_is_kept(root: Path) -> None:
    outer = root / "PBC_dataset_normal_DIB"
    (outer / "platelet" / "PLATELET_100.jpg").rename(outer / "platelet" / "PLATELET_999.jpg")
    ds = PBC(root)
    assert ds.class_counts()["platelet"] == EXPECTED["platelet"] + 1
    assert str(outer / "platelet" / "PLATELET_999.jpg") in ds.paths


def test_single_copy(tmp_path: Path, root: Path) -> None:
    flat = tmp_path / "flat"
    (root / INNER).rename(flat)
    assert PBC(flat).class_counts() == EXPECTED


def test_sample(root: Path) -> None:
    sample = PBC(root, size=64)[0]
    assert sample is not None
    assert sample["image"].dtype == torch.uint8 and sample["image"].shape == (3, 64, 64)
    assert int(sample["label"]) == 0 and sample["group"] == "BA_100"
    assert PBC(root)[0]["image"].shape == (3, 224, 224)


def test_unknown_folder_at_class_level(root: Path) -> None:
    (root / INNER / "blast").mkdir()
    with pytest.raises(ValueError, match=r"blast.*not one of the expected classes"):
        PBC(root)


def test_missing_class(root: Path) -> None:
    for copy in (root / INNER.parent, root / INNER):
        for f in (copy / "ig").iterdir():
            f.unlink()
        (copy / "ig").rmdir()
    with pytest.raises(FileNotFoundError, match=r"\['ig'\]"):
        PBC(root)


def test_no_class_folders(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no class folder"):
        PBC(tmp_path)


def test_published_counts_sum() -> None:
    assert tuple(PBC_CLASS_COUNTS) == PBC_CLASSES
    assert sum(PBC_CLASS_COUNTS.values()) == 17_092
