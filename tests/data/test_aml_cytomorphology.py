"""AMLCytomorphology on a tiny fixture in the real layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from leukemia_wbc.data import base
from leukemia_wbc.data.aml_cytomorphology import (
    AML_CLASS_COUNTS,
    AML_CLASS_NAMES,
    AML_CLASSES,
    AMLCytomorphology,
)
from tests.conftest import fixture_module, make_fixture

EXPECTED = fixture_module("aml_cytomorphology").COUNTS


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    return make_fixture("aml_cytomorphology", tmp_path)


def test_classes_documented() -> None:
    assert len(AML_CLASSES) == 15 and tuple(sorted(AML_CLASS_NAMES)) == AML_CLASSES
    assert AML_CLASS_NAMES["MYO"] == "myeloblast" and AML_CLASS_NAMES["KSC"] == "smudge cell"
    assert tuple(AML_CLASS_COUNTS) == AML_CLASSES
    assert sum(AML_CLASS_COUNTS.values()) == 18_365


def test_counts_labels_groups(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "read_rgb", lambda *a, **k: pytest.fail("decoded an image"))
    ds = AMLCytomorphology(root)
    assert ds.classes == AML_CLASSES
    assert ds.class_counts() == EXPECTED
    for path, label, group in zip(ds.paths, ds.labels.tolist(), ds.groups, strict=True):
        assert Path(path).parent.name == AML_CLASSES[label]
        assert group == Path(path).stem and group.startswith(AML_CLASSES[label] + "_")
    assert ds.groups[:2] == ["BAS_0001", "EBO_0001"]


def test_root_can_be_the_class_level(root: Path) -> None:
    assert len(AMLCytomorphology(root / "AML-Cytomorphology")) == sum(EXPECTED.values())


def test_rgba_tiff_sample(root: Path) -> None:
    ds = AMLCytomorphology(root)
    index = ds.labels.tolist().index(AML_CLASSES.index("MYO"))
    sample = ds[index]
    assert sample is not None
    assert sample["image"].dtype == torch.uint8 and sample["image"].shape == (3, 224, 224)
    assert int(sample["label"]) == AML_CLASSES.index("MYO")
    assert sample["group"] == "MYO_0001"


def test_lower_case_folders(root: Path) -> None:
    level = root / "AML-Cytomorphology"
    (level / "NGS").rename(level / "ngs")
    assert AMLCytomorphology(root).class_counts()["NGS"] == EXPECTED["NGS"]


def test_unknown_folder(root: Path) -> None:
    (root / "AML-Cytomorphology" / "XYZ").mkdir()
    with pytest.raises(ValueError, match=r"XYZ.*not one of the expected classes"):
        AMLCytomorphology(root)


def test_missing_class(root: Path) -> None:
    folder = root / "AML-Cytomorphology" / "LYA"
    for f in folder.iterdir():
        f.unlink()
    folder.rmdir()
    with pytest.raises(FileNotFoundError, match=r"\['LYA'\]"):
        AMLCytomorphology(root)
