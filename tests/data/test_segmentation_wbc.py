"""SegmentationWBC2018 on a tiny fixture in the real layout, and on the real data."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from leukemia_wbc.data import base
from leukemia_wbc.data.base import decode_mask
from leukemia_wbc.data.segmentation_wbc import SEGMENTATION_WBC_CLASSES, SegmentationWBC2018
from tests.conftest import fixture_module, make_fixture

DATASETS = fixture_module("segmentation_wbc").DATASETS
CODES_1 = DATASETS["Dataset 1"][1]
CODES_2 = DATASETS["Dataset 2"][1]


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    return make_fixture("segmentation_wbc", tmp_path)


def test_both_subsets(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "read_rgb", lambda *a, **k: pytest.fail("decoded an image"))
    monkeypatch.setattr(base, "decode_mask", lambda *a, **k: pytest.fail("decoded a mask"))
    ds = SegmentationWBC2018(root)
    assert ds.classes == SEGMENTATION_WBC_CLASSES
    assert ds.labels.tolist() == [c - 1 for c in CODES_1 + CODES_2]
    assert ds.groups[0] == "Dataset 1/001" and ds.groups[-1] == "Dataset 2/004"
    assert len(set(ds.groups)) == len(ds) == 10
    assert ds.sources == ["Dataset 1"] * 6 + ["Dataset 2"] * 4
    assert ds.has_masks
    assert all(r.mask_path == str(Path(r.path).with_suffix(".png")) for r in ds.records)
    assert ds.class_counts() == {
        "neutrophil": 3,
        "lymphocyte": 3,
        "monocyte": 2,
        "eosinophil": 1,
        "basophil": 1,
    }


@pytest.mark.parametrize(
    ("subset", "n", "source"), [("Dataset 1", 6, "Dataset 1"), (["Dataset 2"], 4, "Dataset 2")]
)
def test_one_subset(root: Path, subset: str | list[str], n: int, source: str) -> None:
    ds = SegmentationWBC2018(root, subset=subset)  # type: ignore[arg-type]
    assert len(ds) == n and set(ds.sources) == {source}
    assert ds.subset([0]).sources == [source]  # type: ignore[attr-defined]


def test_sample_has_masks(root: Path) -> None:
    ds = SegmentationWBC2018(root)
    for i in (0, 9):
        sample = ds[i]
        assert sample is not None
        assert sample["image"].dtype == torch.uint8 and sample["image"].shape == (3, 224, 224)
        for key in ("mask", "cell_mask"):
            m = sample[key]
            assert m.dtype == torch.uint8 and m.shape == (1, 224, 224)
            assert set(np.unique(m.numpy()).tolist()) == {0, 1}
        assert bool((sample["mask"] <= sample["cell_mask"]).all())  # nucleus inside the cell
        assert float(sample["mask"].float().mean()) < float(sample["cell_mask"].float().mean())
    assert int(ds[9]["label"]) == CODES_2[-1] - 1


def test_csv_in_dataset_folder(root: Path) -> None:
    name = "Class Labels of Dataset 2.csv"
    (root / name).rename(root / "Dataset 2" / name)
    assert len(SegmentationWBC2018(root, subset="Dataset 2")) == 4


def test_csv_names_missing_image(root: Path) -> None:
    (root / "Dataset 1" / "003.bmp").unlink()
    with pytest.raises(FileNotFoundError, match=r"Class Labels of Dataset 1\.csv: image id 3"):
        SegmentationWBC2018(root)


def test_image_missing_from_csv(root: Path) -> None:
    csv_path = root / "Class Labels of Dataset 2.csv"
    lines = csv_path.read_text().splitlines()
    csv_path.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ValueError, match=r"004\.bmp: image not listed in .*Dataset 2\.csv"):
        SegmentationWBC2018(root)


def test_missing_mask(root: Path) -> None:
    (root / "Dataset 2" / "002.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"002\.bmp: mask .*002\.png not found"):
        SegmentationWBC2018(root)


def test_bad_csv(root: Path) -> None:
    csv_path = root / "Class Labels of Dataset 1.csv"
    csv_path.write_text(csv_path.read_text().replace("4,3", "4,7"))
    with pytest.raises(ValueError, match=r"Dataset 1\.csv: line 5: class 7"):
        SegmentationWBC2018(root)
    csv_path.write_text("id,label\n1,1\n")
    with pytest.raises(ValueError, match="expected 'image ID,class label'"):
        SegmentationWBC2018(root)


def test_bad_subset(root: Path) -> None:
    with pytest.raises(ValueError, match="Dataset 3"):
        SegmentationWBC2018(root, subset="Dataset 3")  # type: ignore[arg-type]


# -- real data --------------------------------------------------------------------------------
def _csv_counts(path: Path) -> Counter[int]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.reader(fh))[1:]
    return Counter(int(code) for _, code in rows)


@pytest.mark.realdata
def test_real_segmentation_wbc(shared_data: Path) -> None:
    root = shared_data / "segmentation_WBC"
    ds = SegmentationWBC2018(root)
    assert len(ds) == 400
    assert Counter(ds.sources) == {"Dataset 1": 300, "Dataset 2": 100}
    for subset, n in (("Dataset 1", 300), ("Dataset 2", 100)):
        part = SegmentationWBC2018(root, subset=subset)  # type: ignore[arg-type]
        assert len(part) == n
        codes = _csv_counts(root / f"Class Labels of {subset}.csv")
        assert sum(codes.values()) == n
        assert part.class_counts() == {
            name: codes[i + 1] for i, name in enumerate(SEGMENTATION_WBC_CLASSES)
        }
    # Every mask decodes into nucleus and cell; the nucleus covers a plausible share.
    fractions = []
    for record in ds.records:
        assert record.mask_path is not None
        nucleus, cell = decode_mask(record.mask_path)
        assert cell is not None
        assert nucleus.sum() <= cell.sum()
        fractions.append(float(nucleus.mean()))
    fractions_arr = np.asarray(fractions)
    # Dataset 2's 300x300 frames hold small cells among red cells: its smallest nuclei cover
    # about 3 % of the frame (files 032, 033), so the per-file floor is 2 %; the median is
    # held to the 5-90 % range.
    assert fractions_arr.min() > 0.02 and fractions_arr.max() < 0.9
    assert 0.05 < float(np.median(fractions_arr)) < 0.9
    for i in (0, 150, 299, 300, 399):
        sample = ds[i]
        assert sample is not None
        assert sample["image"].shape == (3, 224, 224) and sample["mask"].shape == (1, 224, 224)
        assert set(np.unique(sample["cell_mask"].numpy()).tolist()) == {0, 1}
        assert 0.02 < float(sample["mask"].float().mean()) < 0.9
