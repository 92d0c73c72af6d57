"""Tests of the ALL-IDB1 (smears with blast centroids) and ALL-IDB2 (single cells) loaders."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import leukemia_wbc.data.base as base
from leukemia_wbc.data.allidb import ALLIDB1, ALLIDB2, read_xyc
from tests.conftest import fixture_module, make_fixture

GEN = fixture_module("allidb")


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fixture("allidb", tmp_path_factory.mktemp("allidb"))


@pytest.fixture
def fresh(tmp_path: Path) -> Path:
    """A private copy that a test may damage."""
    return make_fixture("allidb", tmp_path)


def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("an image was decoded")

    monkeypatch.setattr(base, "read_rgb", boom)
    monkeypatch.setattr("PIL.Image.open", boom)


# -- ALL-IDB2 ---------------------------------------------------------------------------------
def test_idb2_records(tree: Path) -> None:
    for root in (tree, tree / "ALL_IDB2", tree / "ALL_IDB2" / "img"):
        ds = ALLIDB2(root)
        assert ds.classes == ("normal", "blast")
        assert ds.labels.tolist() == [1, 1, 1, 0, 0, 0]
        assert ds.groups == GEN.IDB2
        assert ds.class_counts() == {"normal": 3, "blast": 3}
        assert not ds.has_masks


def test_idb2_metadata_without_decoding(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    no_decoding(monkeypatch)
    ds = ALLIDB2(tree, mask_root=tree / "ALL_IDB2_masks")
    assert ds.labels.tolist() == [1, 1, 1, 0, 0, 0] and ds.groups == GEN.IDB2 and ds.has_masks
    with pytest.raises(AssertionError, match="decoded"):
        ds[0]


def test_idb2_sample_without_masks(tree: Path) -> None:
    sample = ALLIDB2(tree)[3]
    assert sample is not None
    assert sample["image"].dtype == torch.uint8 and sample["image"].shape == (3, 224, 224)
    assert int(sample["label"]) == 0 and sample["group"] == "Im004_0"
    assert "mask" not in sample


def test_idb2_colour_and_grey_masks(tree: Path) -> None:
    ds = ALLIDB2(tree, mask_root=tree / "ALL_IDB2_masks", size=32)
    colour = ds[0]  # Im001_1.png, RGB colour code
    assert colour is not None
    assert colour["image"].shape == (3, 32, 32) and int(colour["label"]) == 1
    nucleus, cell = colour["mask"], colour["cell_mask"]
    assert nucleus.shape == cell.shape == (1, 32, 32) and nucleus.dtype == torch.uint8
    assert set(nucleus.unique().tolist()) == {0, 1}
    assert 0 < int(nucleus.sum()) < int(cell.sum()) < 32 * 32
    assert bool((cell >= nucleus).all())
    grey = ds[GEN.IDB2.index(GEN.GREY_MASK)]  # Im002_1.tif, binary 8-bit
    assert grey is not None
    assert set(grey["mask"].unique().tolist()) == {0, 1} and "cell_mask" not in grey


def test_idb2_missing_mask_names_image_and_expected_path(fresh: Path) -> None:
    (fresh / "ALL_IDB2_masks" / "Im005_0.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"Im005_0\.tif") as err:
        ALLIDB2(fresh, mask_root=fresh / "ALL_IDB2_masks")
    assert str(fresh / "ALL_IDB2_masks" / "Im005_0") in str(err.value)


def test_idb2_two_masks_for_one_image(fresh: Path) -> None:
    shutil.copy(fresh / "ALL_IDB2_masks" / "Im001_1.png", fresh / "ALL_IDB2_masks" / "Im001_1.bmp")
    with pytest.raises(ValueError, match="several masks"):
        ALLIDB2(fresh, mask_root=fresh / "ALL_IDB2_masks")


def test_idb2_bad_name_and_missing_folder(fresh: Path) -> None:
    with pytest.raises(FileNotFoundError, match="ALL_IDB2/img"):
        ALLIDB2(fresh / "ALL_IDB1")
    shutil.copy(
        fresh / "ALL_IDB2" / "img" / "Im001_1.tif", fresh / "ALL_IDB2" / "img" / "Im007.tif"
    )
    with pytest.raises(ValueError, match=r"Im007\.tif: .*ImNNN_Y"):
        ALLIDB2(fresh)


# -- ALL-IDB1 ---------------------------------------------------------------------------------
def test_idb1_records_and_centroids_without_decoding(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_decoding(monkeypatch)
    ds = ALLIDB1(tree)
    assert ds.size is None
    assert ds.labels.tolist() == [1, 1, 0, 0] and ds.groups == GEN.IDB1
    for i, stem in enumerate(GEN.IDB1):
        expected = np.array(GEN.CENTROIDS.get(stem, []), dtype=np.float64).reshape(-1, 2)
        got = ds.centroids(i)
        assert got.dtype == np.float64 and np.array_equal(got, expected)
    ds.centroids(0)[0, 0] = -1.0  # a copy: the dataset's own array is unchanged
    assert ds.centroids(0)[0, 0] == GEN.CENTROIDS["Im001_1"][0][0]


def test_idb1_sample_native_size_and_scaled_centroids(tree: Path) -> None:
    native = ALLIDB1(tree)[0]
    assert native is not None
    width, height = GEN.SMEAR
    assert native["image"].dtype == torch.uint8 and native["image"].shape == (3, height, width)
    assert int(native["label"]) == 1
    assert torch.equal(
        native["centroids"], torch.tensor(GEN.CENTROIDS["Im001_1"], dtype=torch.float32)
    )
    small = ALLIDB1(tree, size=(24, 16))[1]
    assert small is not None and small["image"].shape == (3, 24, 16)
    expected = np.array(GEN.CENTROIDS["Im002_1"]) * [16 / width, 24 / height]
    assert np.allclose(small["centroids"].numpy(), expected)
    empty = ALLIDB1(tree, size=32)[2]
    assert empty is not None and empty["centroids"].shape == (0, 2)


def test_idb1_malformed_xyc_names_file_and_line(fresh: Path) -> None:
    path = fresh / "ALL_IDB1" / "xyc" / "Im002_1.xyc"
    path.write_text("20 20\n\n32 forty\n")
    with pytest.raises(ValueError, match=re.escape(f"{path}, line 3: '32 forty'")):
        ALLIDB1(fresh)
    path.write_text("20 20 7\n")
    with pytest.raises(ValueError, match="line 1"):
        read_xyc(path)


def test_read_xyc_formats(tmp_path: Path) -> None:
    path = tmp_path / "a.xyc"
    path.write_text("  12\t34\n\n5.5 6\n")
    assert np.array_equal(read_xyc(path), [[12.0, 34.0], [5.5, 6.0]])
    path.write_text("")
    assert read_xyc(path).shape == (0, 2)


def test_idb1_missing_xyc_for_blast_image(fresh: Path) -> None:
    (fresh / "ALL_IDB1" / "xyc" / "Im001_1.xyc").unlink()
    with pytest.raises(FileNotFoundError, match=r"Im001_1\.jpg: no blast centroid file"):
        ALLIDB1(fresh)


def test_idb1_centroids_on_a_normal_smear(fresh: Path) -> None:
    (fresh / "ALL_IDB1" / "xyc" / "Im004_0.xyc").write_text("1 2\n")
    with pytest.raises(ValueError, match=r"Im004_0\.xyc: lists 1 blast centroids"):
        ALLIDB1(fresh)
