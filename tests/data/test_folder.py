"""ImageFolderWBC, ManifestWBC, write_manifest and the shared class-folder scanner."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from leukemia_wbc.data import SYNTHETIC_CLASSES, SyntheticWBC, base
from leukemia_wbc.data.base import UNLABELLED
from leukemia_wbc.data.folder import (
    BCCD_GROUP_PATTERN,
    ImageFolderWBC,
    ManifestWBC,
    find_class_levels,
    scan_class_folders,
    write_manifest,
)
from tests.conftest import make_fixture


@pytest.fixture()
def folder_root(tmp_path: Path) -> Path:
    return make_fixture("folder", tmp_path)


@pytest.fixture()
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("metadata must not decode images")

    monkeypatch.setattr(base, "read_rgb", boom)
    monkeypatch.setattr(base, "decode_mask", boom)


def check_sample(sample: dict[str, object], size: int = 224) -> None:
    image = sample["image"]
    assert isinstance(image, torch.Tensor)
    assert image.dtype == torch.uint8 and image.shape == (3, size, size)


# -- ImageFolderWBC ----------------------------------------------------------------------------
def test_image_folder_counts_labels_groups(folder_root: Path, no_decoding: None) -> None:
    ds = ImageFolderWBC(folder_root / "classes")
    assert ds.classes == ("Eosinophil", "Lymphocyte", "Neutrophil")
    assert ds.class_counts() == {"Eosinophil": 2, "Lymphocyte": 3, "Neutrophil": 3}
    assert ds.labels.tolist() == [0, 0, 1, 1, 1, 2, 2, 2]
    # Default group: the file stem, one group per image.
    assert ds.groups == [Path(p).stem for p in ds.paths]
    assert len(set(ds.groups)) == len(ds)
    assert all(Path(p).suffix == ".jpg" for p in ds.paths)  # README.txt ignored


def test_image_folder_group_pattern(folder_root: Path, no_decoding: None) -> None:
    ds = ImageFolderWBC(folder_root / "classes", group_pattern=BCCD_GROUP_PATTERN)
    assert ds.groups == ["00001", "00003", "00001", "00004", "00005", "00002", "00002", "00006"]
    assert Counter(ds.groups)["00001"] == 2  # one smear, two classes


def test_image_folder_sample(folder_root: Path) -> None:
    ds = ImageFolderWBC(folder_root / "classes", group_pattern=BCCD_GROUP_PATTERN)
    sample = ds[3]
    assert sample is not None
    check_sample(sample)
    assert int(sample["label"]) == 1 and sample["group"] == "00004"
    assert "mask" not in sample
    assert ImageFolderWBC(folder_root / "classes", size=32)[0]["image"].shape == (3, 32, 32)


def test_image_folder_explicit_classes_order(folder_root: Path) -> None:
    ds = ImageFolderWBC(folder_root / "classes", classes=["Neutrophil", "Lymphocyte", "Eosinophil"])
    assert ds.class_counts() == {"Neutrophil": 3, "Lymphocyte": 3, "Eosinophil": 2}
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2]


def test_image_folder_unknown_folder(folder_root: Path) -> None:
    with pytest.raises(ValueError, match=r"Neutrophil.*not one of the expected classes"):
        ImageFolderWBC(folder_root / "classes", classes=["Eosinophil", "Lymphocyte"])


def test_image_folder_missing_class_folder(folder_root: Path) -> None:
    with pytest.raises(FileNotFoundError, match="Basophil"):
        ImageFolderWBC(
            folder_root / "classes",
            classes=["Basophil", "Eosinophil", "Lymphocyte", "Neutrophil"],
        )


def test_image_folder_bad_group_pattern(folder_root: Path) -> None:
    with pytest.raises(ValueError, match=r"BloodImage_00001_1.*does not match"):
        ImageFolderWBC(folder_root / "classes", group_pattern=r"^cell_(\d+)$")
    with pytest.raises(ValueError, match="no capture group"):
        ImageFolderWBC(folder_root / "classes", group_pattern=r"\d+")


def test_image_folder_stray_image_and_hidden_dirs(folder_root: Path) -> None:
    root = folder_root / "classes"
    (root / ".ipynb_checkpoints").mkdir()
    (root / "__MACOSX").mkdir()
    assert len(ImageFolderWBC(root)) == 8
    shutil.copy(root / "Eosinophil" / "BloodImage_00001_1.jpg", root / "loose.jpg")
    with pytest.raises(ValueError, match=r"loose\.jpg.*directly"):
        ImageFolderWBC(root)


def test_image_folder_recursive(folder_root: Path) -> None:
    root = folder_root / "classes"
    sub = root / "Neutrophil" / "more"
    sub.mkdir()
    shutil.copy(root / "Neutrophil" / "BloodImage_00006_1.jpg", sub / "BloodImage_00007_1.jpg")
    assert ImageFolderWBC(root).class_counts()["Neutrophil"] == 3
    assert ImageFolderWBC(root, recursive=True).class_counts()["Neutrophil"] == 4


def test_image_folder_missing_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ImageFolderWBC(tmp_path / "nowhere")


# -- shared scanner ---------------------------------------------------------------------------
def test_scan_merges_nested_copies(tmp_path: Path) -> None:
    outer = tmp_path / "data"
    inner = outer / "data"
    for level, names in ((outer, ["a.png"]), (inner, ["a.png", "b.png"])):
        (level / "x").mkdir(parents=True)
        for n in names:
            (level / "x" / n).write_bytes(b"")
    (inner / "y").mkdir()
    (inner / "y" / "c.png").write_bytes(b"")
    levels = find_class_levels(tmp_path, ["x", "y"])
    assert levels == [outer, inner]
    names, items = scan_class_folders(levels, ["x", "y"], dataset="t")
    assert names == ("x", "y")
    assert items == [
        (inner / "x" / "a.png", 0),
        (inner / "x" / "b.png", 0),
        (inner / "y" / "c.png", 1),
    ]


def test_scan_case_insensitive_and_duplicates(tmp_path: Path) -> None:
    (tmp_path / "BASOPHIL").mkdir()
    (tmp_path / "BASOPHIL" / "1.png").write_bytes(b"")
    names, items = scan_class_folders(tmp_path, ["basophil"], dataset="t", case_insensitive=True)
    assert names == ("basophil",) and items == [(tmp_path / "BASOPHIL" / "1.png", 0)]
    (tmp_path / "Basophil").mkdir()
    with pytest.raises(ValueError, match="both name class 'basophil'"):
        scan_class_folders(tmp_path, ["basophil"], dataset="t", case_insensitive=True)


def test_scan_empty_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no class folder"):
        scan_class_folders(tmp_path, None, dataset="t")


def test_class_folder_without_images_is_an_error(tmp_path: Path) -> None:
    """SyntheticWBC.to_folder writes masks/<class>/: read flat, 'masks' would be a fake class."""
    SyntheticWBC(8, size=32, seed=0).to_folder(tmp_path)
    with pytest.raises(ValueError, match=r"class folder\(s\) \['masks'\] under .* hold no images"):
        ImageFolderWBC(tmp_path)
    shutil.move(tmp_path / "masks", tmp_path.parent / f"{tmp_path.name}_masks")
    ds = ImageFolderWBC(tmp_path)
    assert len(ds) == 8 and set(ds.classes) <= set(SYNTHETIC_CLASSES)


# -- the class-folder base ----------------------------------------------------------------------
def test_class_folder_datasets_share_one_base() -> None:
    from leukemia_wbc.data import PBC, AMLCytomorphology, ClassFolderWBC

    assert all(issubclass(c, ClassFolderWBC) for c in (ImageFolderWBC, PBC, AMLCytomorphology))


def test_class_folder_base_nested_fixed_classes_and_groups(tmp_path: Path) -> None:
    from leukemia_wbc.data import ClassFolderWBC

    class Patients(ClassFolderWBC):
        def group_of(self, path: Path) -> str:
            return path.stem.split("_")[0]

    level = tmp_path / "archive" / "cells"
    for name, files in (("Blast", ["p1_a.png", "p2_b.png"]), ("normal", ["p1_c.png"])):
        (level / name).mkdir(parents=True)
        for f in files:
            (level / name / f).write_bytes(b"")
    ds = Patients(tmp_path, classes=("normal", "blast"), nested=True, case_insensitive=True)
    assert ds.classes == ("normal", "blast") and ds.labels.tolist() == [0, 1, 1]
    assert ds.groups == ["p1", "p1", "p2"] and ds.root == tmp_path
    with pytest.raises(ValueError, match="nested=True needs the class names"):
        ClassFolderWBC(tmp_path, nested=True)
    with pytest.raises(FileNotFoundError, match=r"ClassFolderWBC: no class folder under .*<mine>"):
        ClassFolderWBC(tmp_path, classes=("x",), nested=True, layout="<mine>")
    with pytest.raises(FileNotFoundError, match=r"ClassFolderWBC: folder .*absent not found"):
        ClassFolderWBC(tmp_path / "absent")


# -- ManifestWBC ------------------------------------------------------------------------------
def test_manifest_reads_fixture(folder_root: Path, no_decoding: None) -> None:
    ds = ManifestWBC(folder_root / "manifest.csv")
    assert ds.classes == ("Eosinophil", "Lymphocyte", "Neutrophil")
    assert ds.labels.tolist() == [0, 1, 2, 2]
    assert ds.groups == ["patient_a", "patient_a", "patient_b", "BloodImage_00006_1"]
    assert ds.paths[0] == str(folder_root / "classes" / "Eosinophil" / "BloodImage_00001_1.jpg")
    assert ds.has_masks


def test_manifest_sample_with_mask(folder_root: Path) -> None:
    ds = ManifestWBC(
        folder_root / "manifest.csv", classes=["Neutrophil", "Eosinophil", "Lymphocyte"]
    )
    assert ds.labels.tolist() == [1, 2, 0, 0]
    sample = ds[0]
    assert sample is not None
    check_sample(sample)
    mask = sample["mask"]
    assert mask.dtype == torch.uint8 and mask.shape == (1, 224, 224)
    assert set(np.unique(mask.numpy()).tolist()) == {0, 1}
    assert 0.05 < float(mask.float().mean()) < 0.5  # the 6x6 square of a 14x16 mask


def _rewrite(csv_path: Path, old: str, new: str) -> None:
    csv_path.write_text(csv_path.read_text().replace(old, new))


def test_manifest_missing_file(folder_root: Path) -> None:
    manifest = folder_root / "manifest.csv"
    _rewrite(manifest, "BloodImage_00004_1.jpg", "BloodImage_09999_1.jpg")
    with pytest.raises(FileNotFoundError, match=r"manifest\.csv: line 3: image .*09999"):
        ManifestWBC(manifest)


def test_manifest_missing_mask(folder_root: Path) -> None:
    (folder_root / "masks" / "BloodImage_00002_1.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"manifest\.csv: line 4: mask"):
        ManifestWBC(folder_root / "manifest.csv")


def test_manifest_label_not_in_classes(folder_root: Path) -> None:
    with pytest.raises(ValueError, match=r"manifest\.csv: line 3: label 'Lymphocyte'"):
        ManifestWBC(folder_root / "manifest.csv", classes=["Eosinophil", "Neutrophil"])


def test_manifest_missing_column(tmp_path: Path) -> None:
    bad = tmp_path / "m.csv"
    bad.write_text("file,label\na.png,x\n")
    with pytest.raises(ValueError, match=r"m\.csv: missing column\(s\) \['path'\]"):
        ManifestWBC(bad)


def test_write_manifest_round_trip(folder_root: Path, tmp_path: Path, no_decoding: None) -> None:
    cells = folder_root / "classes"
    out = write_manifest(
        folder_root / "sub" / "again.csv",
        [
            {"path": cells / "Lymphocyte" / "BloodImage_00005_1.jpg", "label": "Lymphocyte"},
            {
                "path": "../classes/Neutrophil/BloodImage_00002_2.jpg",
                "label": "Neutrophil",
                "group": "g",
                "mask": folder_root / "masks" / "BloodImage_00002_1.png",
            },
            {"path": cells / "Eosinophil" / "BloodImage_00003_1.jpg", "label": None},
        ],
    )
    lines = out.read_text().splitlines()
    assert lines[0] == "path,label,group,mask"
    # Outside the CSV's folder: kept absolute; a relative path is written unchanged.
    lymphocyte = (cells / "Lymphocyte" / "BloodImage_00005_1.jpg").as_posix()
    assert lines[1] == f"{lymphocyte},Lymphocyte,,"
    assert lines[2].startswith("../classes/Neutrophil/BloodImage_00002_2.jpg,Neutrophil,g,/")
    assert lines[3].endswith("BloodImage_00003_1.jpg,,,")
    ds = ManifestWBC(out)
    assert ds.classes == ("Lymphocyte", "Neutrophil")
    assert ds.labels.tolist() == [0, 1, UNLABELLED]
    assert ds.groups == ["BloodImage_00005_1", "g", "BloodImage_00003_1"]
    assert (
        Path(ds.paths[1]).resolve() == (cells / "Neutrophil" / "BloodImage_00002_2.jpg").resolve()
    )
    inside = write_manifest(folder_root / "m2.csv", [{"path": cells / "Eosinophil" / "x.jpg"}])
    assert inside.read_text().splitlines() == ["path,label", "classes/Eosinophil/x.jpg,"]
    with pytest.raises(ValueError, match=r"row 0 has keys \[.colour., .path.\]"):
        write_manifest(tmp_path / "bad.csv", [{"path": "a.png", "colour": "red"}])


# -- real data --------------------------------------------------------------------------------
BCCD_COUNTS = {"Basophil": 3, "Eosinophil": 88, "Lymphocyte": 33, "Monocyte": 20, "Neutrophil": 207}


@pytest.mark.realdata
def test_real_bccd_cropped(shared_data: Path) -> None:
    ds = ImageFolderWBC(shared_data / "BCCD_cropped", group_pattern=BCCD_GROUP_PATTERN)
    assert len(ds) == 351
    assert ds.class_counts() == BCCD_COUNTS
    for path, group in zip(ds.paths, ds.groups, strict=True):
        assert Path(path).stem.startswith(f"BloodImage_{group}_")
        assert len(group) == 5 and group.isdigit()
    # In this copy every crop comes from a different smear image (351 distinct smear ids).
    assert len(set(ds.groups)) == 351
    for i in (0, 200, 350):
        sample = ds[i]
        assert sample is not None
        check_sample(sample)
        assert float(sample["image"].float().std()) > 5  # real pixels, not a blank
