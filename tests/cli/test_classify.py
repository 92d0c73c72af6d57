"""``leukemia-wbc classify`` / ``explain`` never lose outputs and survive bad files (issue 17).

Every case runs through :func:`leukemia_wbc.cli.main` with one tiny ``CellClassifier``
checkpoint (32 px, Macenko stain normalisation fitted) shared by the module: existing results
and inputs are never overwritten, per-image outputs mirror the inputs' paths, mask files beside
the cells are left out, unreadable files stop the run or are listed, list entries are relative
to the list, stain pass-through is reported, and ``--segmenter`` errors name the file.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
from PIL import Image

from leukemia_wbc.cli import main
from leukemia_wbc.data import SyntheticWBC, WBCDataModule
from leukemia_wbc.tasks import CellClassifier

SIZE = 32
CLASSES = ("ALL", "AML", "CLL", "normal")
HEADER = ["path", "predicted", *(f"prob_{c}" for c in CLASSES), "stain_normalised"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CellClassifier trained for one batch, with a fitted Macenko target."""
    pl.seed_everything(0)
    dm = WBCDataModule(SyntheticWBC(24, size=SIZE, seed=3, n_patients=8), size=SIZE,
                       batch_size=8, split="holdout", stain_normalization=True)  # fmt: skip
    task = CellClassifier("resnet10t", head_hidden=(8,))
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, max_epochs=1,
                         limit_train_batches=1, limit_val_batches=1)  # fmt: skip
    trainer.fit(task, datamodule=dm)
    path = tmp_path_factory.mktemp("model") / "clf.ckpt"
    trainer.save_checkpoint(path)
    return path


_CELLS = SyntheticWBC(8, size=SIZE, seed=5)


def _cell(path: Path, i: int = 0, *, mask: Path | None = None) -> Path:
    """SyntheticWBC cell ``i`` as an image file (and its 0/128/255 mask file)."""
    image, nucleus, cell = _CELLS.render(i % len(_CELLS))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    if mask is not None:
        levels = cell.astype(np.uint8) * 128 + nucleus.astype(np.uint8) * 127
        Image.fromarray(levels).save(mask)
    return path


def _run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _error(code: int, err: str) -> str:
    """The one error line of a failed run (progress bars aside)."""
    assert code == 1 and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("leukemia-wbc")]
    assert len(lines) == 1 and lines[0].startswith("leukemia-wbc: error: "), err
    return lines[0]


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


# -- 1. existing results and inputs are never overwritten -------------------------------------
def test_an_existing_table_needs_overwrite(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = _cell(tmp_path / "a.png")
    out = tmp_path / "predictions.csv"
    out.write_text("earlier results\n")
    line = _error(*_run(capsys, "classify", checkpoint, image, "--out", out)[::2])
    assert f"{out} exists" in line and "pass --overwrite" in line
    assert out.read_text() == "earlier results\n"
    assert _run(capsys, "classify", checkpoint, image, "--out", out, "--overwrite")[0] == 0
    assert [r["path"] for r in _rows(out)] == [str(image)]


def test_an_input_is_never_an_output(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = _cell(tmp_path / "a.png")
    listing = tmp_path / "images.txt"
    listing.write_text("a.png\n")
    for out in (listing, image):
        before = out.read_bytes()
        code, _, err = _run(capsys, "classify", checkpoint, listing, "--out", out, "--overwrite")
        assert f"{out} is one of the inputs" in _error(code, err)
        assert out.read_bytes() == before


def test_explain_refuses_to_replace_overlays(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = _cell(tmp_path / "cells" / "a.png")
    out = tmp_path / "overlays"
    code, _, err = _run(capsys, "explain", checkpoint, image, "--out", out)
    assert code == 0 and "explain: 100%" in err and "classify:" not in err  # its own bar
    first = (out / "a_cell.png").read_bytes()
    line = _error(*_run(capsys, "explain", checkpoint, image, "--out", out, "--method",
                        "integrated_gradients")[::2])  # fmt: skip
    assert f"{out / 'a_cell.png'} exists" in line
    assert (out / "a_cell.png").read_bytes() == first
    code = _run(capsys, "explain", checkpoint, image, "--out", out, "--method",
                "integrated_gradients", "--overwrite")[0]  # fmt: skip
    assert code == 0 and (out / "a_cell.png").read_bytes() != first


# -- 2. per-image outputs mirror the inputs' paths; collisions stop before any write ----------
def test_overlays_mirror_the_input_paths(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "segmentation_WBC"
    images = [_cell(root / d / "001.bmp", i) for i, d in enumerate(("Dataset 1", "Dataset 2"))]
    table, overlays = tmp_path / "pred.csv", tmp_path / "ov"
    assert (
        _run(capsys, "classify", checkpoint, root, "--out", table, "--overlays", overlays)[0] == 0
    )
    assert sorted(p.relative_to(overlays).as_posix() for p in overlays.rglob("*.png")) == [
        "Dataset 1/001_cell.png",
        "Dataset 2/001_cell.png",
    ]
    assert [r["path"] for r in _rows(table)] == [str(p) for p in images]
    # single files from two folders: their paths under the common folder
    single = tmp_path / "single"
    assert _run(capsys, "explain", checkpoint, *images, "--out", single)[0] == 0
    assert sorted(p.relative_to(single).as_posix() for p in single.rglob("*.png")) == [
        "Dataset 1/001_cell.png",
        "Dataset 2/001_cell.png",
    ]
    # two folder arguments holding the same name: refused before anything is written
    clash = tmp_path / "clash"
    line = _error(*_run(capsys, "classify", checkpoint, root / "Dataset 1", root / "Dataset 2",
                        "--out", clash / "p.csv", "--overlays", clash)[::2])  # fmt: skip
    assert str(images[0]) in line and str(images[1]) in line and "001_cell.png" in line
    assert not clash.exists()
    # the same file twice would be two rows of one file
    twice = _error(*_run(capsys, "classify", checkpoint, root, images[0], "--out", clash)[::2])
    assert f"{images[0]} is given twice" in twice


def test_analyze_smear_mirrors_the_input_paths(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from leukemia_wbc.smear import SyntheticSmear

    smears = SyntheticSmear(1, size=(96, 128), seed=3, cells_per_field=(1, 2))
    for folder in ("x", "y"):
        (tmp_path / "in" / folder).mkdir(parents=True)
        Image.fromarray(smears.render(0).image).save(tmp_path / "in" / folder / "s.png")
    out = tmp_path / "analysis"
    assert _run(capsys, "analyze-smear", checkpoint, tmp_path / "in", "--out", out)[0] == 0
    assert {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} == {
        "x/s_overlay.png", "x/s_cells.csv", "y/s_overlay.png", "y/s_cells.csv", "summary.csv"
    }  # fmt: skip


# -- 3. folders: mask files beside the cells are left out -------------------------------------
def test_a_folder_leaves_out_the_masks_beside_the_cells(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "Dataset 2"
    cells = [_cell(folder / f"00{i}.bmp", i, mask=folder / f"00{i}.png") for i in range(1, 4)]
    SyntheticWBC(2, size=SIZE, seed=1).to_folder(tmp_path / "synthetic")  # masks/ sub-folder
    table = tmp_path / "pred.csv"
    code, out, _ = _run(capsys, "classify", checkpoint, folder, tmp_path / "synthetic",
                        "--out", table)  # fmt: skip
    assert code == 0
    paths = [r["path"] for r in _rows(table)]
    assert paths[:3] == [str(p) for p in cells] and len(paths) == 3 + 2
    assert not any("masks" in Path(p).parts for p in paths)
    assert "left out 5 mask file(s) beside the images" in out
    assert str(folder / "001.png") in out
    # a mask named by itself is classified: only what a folder holds is sorted out
    one = tmp_path / "one.csv"
    assert _run(capsys, "classify", checkpoint, folder / "001.png", "--out", one)[0] == 0
    assert len(_rows(one)) == 1


@pytest.mark.realdata
def test_segmentation_wbc_gives_one_row_per_cell(
    checkpoint: Path, shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = shared_data / "segmentation_WBC" / "Dataset 2"
    table = tmp_path / "pred.csv"
    code, out, _ = _run(capsys, "classify", checkpoint, folder, "--out", table)
    assert code == 0 and "left out 100 mask file(s)" in out
    paths = [r["path"] for r in _rows(table)]
    assert len(paths) == 100 and all(p.endswith(".bmp") for p in paths)


# -- 4. unreadable files: a one-line error naming the file, or listed with --on-error skip ----
def test_an_unreadable_file_stops_the_run_or_is_listed(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "cells"
    _cell(folder / "a.png", 0)
    _cell(folder / "c.png", 1)
    (folder / "b.png").write_bytes(b"not an image")
    table = tmp_path / "pred.csv"
    line = _error(*_run(capsys, "classify", checkpoint, folder, "--out", table)[::2])
    assert str(folder / "b.png") in line and not table.exists()
    code, out, _ = _run(capsys, "classify", checkpoint, folder, "--out", table,
                        "--on-error", "skip", "--batch-size", "2")  # fmt: skip
    assert code == 0
    rows = _rows(table)
    assert [Path(r["path"]).name for r in rows] == ["a.png", "b.png", "c.png"]
    assert rows[1]["predicted"] == "" and "b.png" in rows[1]["error"]
    assert rows[0]["error"] == rows[2]["error"] == "" and rows[0]["predicted"] in CLASSES
    assert "2 images classified" in out and "1 unreadable image(s) skipped" in out


# -- 5. relative paths in a list are relative to the list --------------------------------------
def test_list_entries_are_relative_to_the_list(
    checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a = _cell(tmp_path / "lists" / "a.png", 0)
    b = _cell(tmp_path / "other" / "b.png", 1)
    c = _cell(tmp_path / "elsewhere" / "c.png", 2)
    (tmp_path / "lists" / "cells.txt").write_text(
        f"# cells\na.png\n\n../other/b.png\n{c.resolve()}\n"
    )
    (tmp_path / "lists" / "cells.csv").write_text("label,path\nx,a.png\ny,../other/b.png\n")
    (tmp_path / "run").mkdir()
    monkeypatch.chdir(tmp_path / "run")
    expected = {"cells.txt": [a, b, c], "cells.csv": [a, b]}
    for listing, files in expected.items():
        table = tmp_path / f"{listing}.csv"
        assert _run(capsys, "classify", checkpoint, f"../lists/{listing}", "--out", table)[0] == 0
        assert [Path(r["path"]).resolve() for r in _rows(table)] == [f.resolve() for f in files]


# -- 6. images the stain normaliser passed through are marked --------------------------------
def test_stain_pass_through_is_reported(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cell = _cell(tmp_path / "cell.png")
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((SIZE, SIZE, 3), 250, np.uint8)).save(blank)
    table = tmp_path / "pred.csv"
    code, out, _ = _run(capsys, "classify", checkpoint, cell, blank, "--out", table)
    assert code == 0
    with table.open(newline="") as fh:
        assert next(csv.reader(fh)) == HEADER
    assert [(Path(r["path"]).name, r["stain_normalised"]) for r in _rows(table)] == [
        ("cell.png", "true"),
        ("blank.png", "false"),
    ]
    assert "1 image(s) had too little tissue for stain normalisation" in out


# -- 7. --segmenter errors name the argument and the file ------------------------------------
def test_segmenter_errors_name_the_argument_and_the_file(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = _cell(tmp_path / "a.png")
    notes = tmp_path / "notes.txt"
    notes.write_text("not a checkpoint\n")
    classifier = tmp_path / "clf.ckpt"
    shutil.copy(checkpoint, classifier)
    expected = {
        tmp_path / "missing.ckpt": "not found",
        notes: "cannot be loaded (not the zip archive torch.save writes",
        classifier: "is not a nucleus segmentation checkpoint (it holds a CellClassifier)",
    }
    for segmenter, message in expected.items():
        code, _, err = _run(capsys, "classify", checkpoint, image, "--segmenter", segmenter,
                            "--out", tmp_path / "p.csv")  # fmt: skip
        line = _error(code, err)
        assert f"--segmenter: {segmenter}" in line and message in line, line
    assert not (tmp_path / "p.csv").exists()
