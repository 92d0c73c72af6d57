"""Tests of the C-NMC 2019 loader on the tiny fixture and on a tree mirroring the real list."""

from __future__ import annotations

import csv
import re
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

import leukemia_wbc.data.base as base
from leukemia_wbc.data.base import UNLABELLED
from leukemia_wbc.data.cnmc import CNMC2019, subject_is_healthy
from tests.conftest import fixture_module, make_fixture

CSV_NAME = "C-NMC_test_prelim_phase_data_labels.csv"


@pytest.fixture(scope="module", params=["kaggle", "tcia"])
def tree(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp(f"cnmc_{request.param}")
    return Path(fixture_module("cnmc").make(root, layout=request.param))


@pytest.fixture
def fresh(tmp_path: Path) -> Path:
    """A private Kaggle-layout copy that a test may damage."""
    return make_fixture("cnmc", tmp_path)


def per_fold_class(ds: CNMC2019) -> dict[tuple[int, str], int]:
    return dict(
        Counter((int(f), ds.classes[int(y)]) for f, y in zip(ds.fold_ids, ds.labels, strict=True))
    )


def test_training_counts_per_fold_and_class(tree: Path) -> None:
    ds = CNMC2019(tree)
    assert ds.classes == ("hem", "all")
    assert len(ds) == 16
    assert per_fold_class(ds) == {
        (0, "all"): 5,
        (0, "hem"): 2,
        (1, "all"): 2,
        (1, "hem"): 3,
        (2, "all"): 3,
        (2, "hem"): 1,
    }
    # Every label agrees with the file name's suffix: 1 = all.
    for path, label in zip(ds.paths, ds.labels, strict=True):
        assert Path(path).stem.endswith("_all" if label == 1 else "_hem")


def test_prelim_and_final_counts(tree: Path) -> None:
    prelim = CNMC2019(tree, split="prelim_test")
    assert prelim.class_counts() == {"hem": 2, "all": 4}
    assert [Path(p).name for p in prelim.paths] == [f"{k}.bmp" for k in range(1, 7)]
    assert prelim.labels.tolist() == [1, 0, 1, 1, 0, 1]
    assert prelim.groups == ["57", "H49", "57", "58", "H50", "58"]
    assert (prelim.fold_ids == -1).all()
    final = CNMC2019(tree, split="final_test")
    assert len(final) == 3
    assert (final.labels == UNLABELLED).all()
    assert final.groups == ["final:1", "final:2", "final:3"]
    assert final.class_counts() == {"hem": 0, "all": 0}


def test_root_may_be_any_parent_or_the_training_folder(tree: Path) -> None:
    assert len(CNMC2019(tree.parent)) == 16
    train_dir = next(p for p in tree.iterdir() if "training" in p.name)
    assert len(CNMC2019(train_dir)) == 16
    assert len(CNMC2019(train_dir / "fold_1")) == 5


def test_fold_filter_and_fold_ids(tree: Path) -> None:
    ds = CNMC2019(tree, folds=[1])
    assert len(ds) == 5 and set(ds.fold_ids.tolist()) == {1}
    ds02 = CNMC2019(tree, folds=(2, 0))
    assert len(ds02) == 11 and set(ds02.fold_ids.tolist()) == {0, 2}
    # fold_ids follow the records through subset().
    full = CNMC2019(tree)
    sub = full.subset([15, 0])
    assert sub.fold_ids.tolist() == [full.fold_ids[15], full.fold_ids[0]]


def test_groups_are_subjects_and_lower_case_h_is_normalised(tree: Path) -> None:
    ds = CNMC2019(tree)
    assert sorted(set(ds.groups)) == ["1", "2", "3", "4", "H1", "H2", "H3", "H4"]
    folds_of = defaultdict(set)
    for group, fold in zip(ds.groups, ds.fold_ids, strict=True):
        folds_of[group].add(int(fold))
    assert all(len(f) == 1 for f in folds_of.values())
    for group, label in zip(ds.groups, ds.labels, strict=True):
        assert subject_is_healthy(group) == (label == 0)


def test_subject_is_healthy() -> None:
    assert subject_is_healthy("H10") is True
    assert subject_is_healthy("11") is False
    with pytest.raises(ValueError, match="final:3"):
        subject_is_healthy("final:3")


def test_metadata_without_decoding(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("an image was decoded")

    monkeypatch.setattr(base, "read_rgb", boom)
    monkeypatch.setattr("PIL.Image.open", boom)
    for split in ("train", "prelim_test", "final_test"):
        ds = CNMC2019(tree, split=split)  # type: ignore[arg-type]
        assert len(ds.labels) == len(ds.groups) == len(ds.fold_ids) == len(ds)
    assert CNMC2019(tree).class_counts() == {"hem": 6, "all": 10}
    with pytest.raises(AssertionError, match="decoded"):
        CNMC2019(tree)[0]


def test_sample_loads_as_uint8_224(tree: Path) -> None:
    ds = CNMC2019(tree)
    for i in (0, len(ds) - 1):
        sample = ds[i]
        assert sample is not None
        assert sample["image"].dtype == torch.uint8
        assert sample["image"].shape == (3, 224, 224)
        assert int(sample["label"]) == int(ds.labels[i])
        assert sample["group"] == ds.groups[i]
    prelim = CNMC2019(tree, split="prelim_test", size=32)[1]
    assert prelim is not None and prelim["image"].shape == (3, 32, 32)
    assert int(prelim["label"]) == 0 and prelim["group"] == "H49"
    native = CNMC2019(tree, split="final_test", size=None)[0]
    assert native is not None and native["image"].shape == (3, 16, 16)
    assert int(native["label"]) == UNLABELLED


# -- bad input --------------------------------------------------------------------------------
def test_unknown_fold_names_valid_folds(fresh: Path) -> None:
    with pytest.raises(ValueError, match=re.escape("[0, 1, 2]")):
        CNMC2019(fresh, folds=[3])
    with pytest.raises(ValueError, match="non-empty"):
        CNMC2019(fresh, folds=[])
    with pytest.raises(ValueError, match="split='train' only"):
        CNMC2019(fresh, split="prelim_test", folds=[0])
    with pytest.raises(ValueError, match="split"):
        CNMC2019(fresh, split="test")  # type: ignore[arg-type]


def test_folder_and_suffix_disagree(fresh: Path) -> None:
    src = next((fresh / "training_data" / "fold_0" / "all").iterdir())
    shutil.copy(src, fresh / "training_data" / "fold_0" / "hem" / src.name)
    with pytest.raises(ValueError, match=re.escape(src.name)) as err:
        CNMC2019(fresh)
    assert "'hem' folder" in str(err.value)
    # The other folds still load.
    assert len(CNMC2019(fresh, folds=[1, 2])) == 9


def test_unparseable_training_name(fresh: Path) -> None:
    bad = fresh / "training_data" / "fold_2" / "all" / "cell_7.bmp"
    shutil.copy(next(bad.parent.iterdir()), bad)
    with pytest.raises(ValueError, match=r"cell_7\.bmp"):
        CNMC2019(fresh)


def test_csv_names_a_missing_file(fresh: Path) -> None:
    (fresh / "validation_data" / "C-NMC_test_prelim_phase_data" / "3.bmp").unlink()
    with pytest.raises(FileNotFoundError, match=CSV_NAME) as err:
        CNMC2019(fresh, split="prelim_test")
    assert "'3.bmp'" in str(err.value) and "line 4" in str(err.value)


def test_image_missing_from_csv(fresh: Path) -> None:
    folder = fresh / "validation_data" / "C-NMC_test_prelim_phase_data"
    shutil.copy(folder / "1.bmp", folder / "7.bmp")
    with pytest.raises(ValueError, match=r"7\.bmp: the image has no row in .*" + CSV_NAME):
        CNMC2019(fresh, split="prelim_test")


def _rewrite_csv(fresh: Path, row: int, values: list[str]) -> None:
    path = fresh / "validation_data" / CSV_NAME
    rows = list(csv.reader(path.open()))
    rows[row] = values
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["UID_57_29_1_all.bmp", "1.bmp", "2"], "label '2'"),
        (["UID_57_29_1_all.bmp", "1.bmp", "0"], "says 'all' but the label is 0"),
        (["patient57.bmp", "1.bmp", "1"], "does not follow the C-NMC naming"),
        (["UID_57_29_1_all.bmp", "2.bmp", "1"], "listed twice"),
    ],
)
def test_malformed_csv_rows(fresh: Path, values: list[str], message: str) -> None:
    _rewrite_csv(fresh, 1, values)
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        CNMC2019(fresh, split="prelim_test")
    assert CSV_NAME in str(err.value)


def test_bad_csv_header_and_missing_csv(fresh: Path) -> None:
    _rewrite_csv(fresh, 0, ["id", "file", "label"])
    with pytest.raises(ValueError, match="Patient_ID,new_names,labels"):
        CNMC2019(fresh, split="prelim_test")
    (fresh / "validation_data" / CSV_NAME).unlink()
    with pytest.raises(FileNotFoundError, match=CSV_NAME):
        CNMC2019(fresh, split="prelim_test")


def test_two_copies_are_ambiguous_and_macosx_is_ignored(tmp_path: Path) -> None:
    first = make_fixture("cnmc", tmp_path / "a")
    shutil.copytree(first, tmp_path / "__MACOSX" / "C-NMC_Leukemia")
    assert len(CNMC2019(tmp_path)) == 16
    make_fixture("cnmc", tmp_path / "b")
    with pytest.raises(ValueError, match="several"):
        CNMC2019(tmp_path)
    assert len(CNMC2019(first)) == 16


def test_missing_split_folder(fresh: Path) -> None:
    shutil.rmtree(fresh / "testing_data")
    with pytest.raises(FileNotFoundError, match="C-NMC_test_final_phase_data"):
        CNMC2019(fresh, split="final_test")


# -- the real file list -------------------------------------------------------------------------
@pytest.mark.realdata
def test_real_file_list_layout(shared_data: Path, tmp_path: Path) -> None:
    listing = shared_data / "cnmc_filelist.txt"
    root = fixture_module("cnmc").make(tmp_path, listing)

    train = CNMC2019(root)
    assert len(train) == 10_661
    assert per_fold_class(train) == {
        (0, "all"): 2397,
        (0, "hem"): 1130,
        (1, "all"): 2418,
        (1, "hem"): 1163,
        (2, "all"): 2457,
        (2, "hem"): 1096,
    }
    # No subject of the real release appears in two of the organisers' folds.
    folds_of: dict[str, set[int]] = defaultdict(set)
    for group, fold in zip(train.groups, train.fold_ids, strict=True):
        folds_of[group].add(int(fold))
    crossing = {g: sorted(f) for g, f in folds_of.items() if len(f) > 1}
    assert crossing == {}
    # 73 subjects: 47 ALL patients and 26 healthy donors ('h3' read as 'H3'); H <=> hem.
    healthy = {g for g in folds_of if subject_is_healthy(g)}
    assert (len(folds_of), len(healthy)) == (73, 26)
    assert "H3" in healthy and "h3" not in folds_of
    assert np.array_equal(
        np.array([subject_is_healthy(g) for g in train.groups]), train.labels == 0
    )

    prelim = CNMC2019(root, split="prelim_test")
    assert len(prelim) == 1867 and prelim.class_counts() == {"hem": 648, "all": 1219}
    final = CNMC2019(root, split="final_test")
    assert len(final) == 2586 and (final.labels == UNLABELLED).all()

    # The loader saw exactly the listed images.
    listed = {line for line in listing.read_text().splitlines() if line.endswith(".bmp")}
    seen = {
        Path(p).relative_to(tmp_path).as_posix() for ds in (train, prelim, final) for p in ds.paths
    }
    assert seen == listed
    sample = train[0]
    assert sample is not None and sample["image"].shape == (3, 224, 224)
