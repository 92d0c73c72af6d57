"""Bad input stops ``leukemia-wbc fit`` and ``leukemia-wbc cv`` with one line, before training.

Each case runs through :func:`leukemia_wbc.cli.main` twice: as ``fit`` (LightningCLI, a tiny
``DualBranchClassifier`` on 32 px ``SyntheticWBC``) and as ``cv`` (the packaged ``demo``
config, shrunk by the overrides of ``_layouts.py``). Both must exit with status 1 and print
exactly one line on stderr, ``leukemia-wbc: error: ...``, that names the argument (or the
file) and what was expected; no Trainer may be built (its constructor is replaced by one that
fails), Lightning may log nothing (not even the seed), and the run's folder must stay empty:
no logger folder, saved config, checkpoint, ``fold_<k>/`` or ``fold.json``.

The inputs: a class count, order or names other than the data's; a segmenter file that is a
classifier's checkpoint, a text file named ``.ckpt`` or missing; a U-Net trained at 32 px
used on 64 px data, and one that takes 1 channel; data without nucleus masks and no
segmenter; ``mask_source: segmenter`` without a segmenter; values of the wrong type.
"""

from __future__ import annotations

import functools
import logging
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from leukemia_wbc.cli import main
from leukemia_wbc.data import SyntheticWBC, WBCDataModule
from leukemia_wbc.tasks import CellClassifier, SegmentationModule
from tests.cli._layouts import LAYOUTS, MODEL_OVERRIDES, SIZE, quick_cv, quick_data

#: The data's classes, in SyntheticWBC's label order.
CLASSES = r"\['ALL', 'AML', 'CLL', 'normal'\]"
#: What every bad segmenter file is expected to be instead.
UNET = (
    r"a checkpoint written while training SegmentationModule "
    r"\(leukemia-wbc fit --config segmentation_unet\)"
)


@dataclass(frozen=True)
class Case:
    """One bad input: its arguments (``{files}`` is the inputs' folder) and the message."""

    args: tuple[str, ...]
    message: str
    #: Data arguments in place of the small SyntheticWBC (``"folder"``: a tree without masks).
    data: str = "synthetic"


CASES: dict[str, Case] = {
    "num_classes": Case(
        ("--model.init_args.num_classes", "3"),
        rf"model\.init_args\.num_classes=3 but SyntheticWBC has 4 classes {CLASSES}; "
        r"expected 4, or leave num_classes and classes out",
    ),
    "classes_count": Case(
        ("--model.init_args.classes", "[ALL, AML, CLL]"),
        r"model\.init_args\.classes: \['ALL', 'AML', 'CLL'\] has 3 names but SyntheticWBC has "
        rf"4 classes {CLASSES}; expected the data's names in its order",
    ),
    "classes_order": Case(
        ("--model.init_args.classes", "[normal, CLL, AML, ALL]"),
        r"model\.init_args\.classes: \['normal', 'CLL', 'AML', 'ALL'\] are the same classes in "
        rf"another order than SyntheticWBC's {CLASSES}; every prediction would be named "
        r"wrongly: expected the data's names in its order",
    ),
    "classes_names": Case(
        ("--model.init_args.classes", "[blast, myeloblast, lymphocyte, normal]"),
        r"model\.init_args\.classes: \['blast', 'myeloblast', 'lymphocyte', 'normal'\] are "
        rf"other classes than SyntheticWBC's {CLASSES}; .*expected the data's names",
    ),
    "segmenter_classifier": Case(
        ("--model.init_args.segmenter", "{files}/clf.ckpt"),
        r"segmenter: \S+/clf\.ckpt is not a nucleus segmentation checkpoint \(it holds a "
        rf"CellClassifier\); expected {UNET}",
    ),
    # fit once read a text file given as a segmenter as a config: this one would have trained
    "segmenter_text": Case(
        ("--model.init_args.segmenter", "{files}/notes.ckpt"),
        r"segmenter: \S+/notes\.ckpt cannot be loaded \(not the zip archive torch\.save "
        r"writes: truncated, damaged or another kind of file\); "
        rf"expected {UNET}",
    ),
    "segmenter_missing": Case(
        ("--model.init_args.segmenter", "{files}/missing.ckpt"),
        r"segmenter: \S+/missing\.ckpt not found; expected a classical method "
        rf"\(multiotsu_blue_green, kmeans, watershed, .*\) or {UNET}",
    ),
    "unet_size": Case(
        ("--model.init_args.segmenter", "{files}/unet32.ckpt", "--data.size", "64"),
        r"model\.init_args\.segmenter: the segmentation network unet32\.ckpt was trained on "
        r"32x32 images, the classifier's data is 64x64; train the U-Net at the same size",
    ),
    "unet_channels": Case(
        ("--model.init_args.segmenter", "{files}/unet_gray.ckpt"),
        r"model\.init_args\.segmenter: the segmentation network unet_gray\.ckpt takes 1-channel "
        r"images, the data's have 3; expected a U-Net trained with in_chans=3",
    ),
    "no_masks_no_segmenter": Case(
        ("--model.init_args.segmenter", "null"),
        r"model\.init_args\.segmenter: ImageFolderWBC has no nucleus masks and "
        r"DualBranchClassifier has no segmenter; set segmenter to a classical method",
        data="folder",
    ),
    "mask_source_without_segmenter": Case(
        ("--model.init_args.segmenter", "null", "--model.init_args.mask_source", "segmenter"),
        r"model\.init_args\.mask_source: 'segmenter' needs a segmenter and DualBranchClassifier "
        r"has none; set model\.init_args\.segmenter to a classical method",
    ),
    "mask_source_typo": Case(
        ("--model.init_args.mask_source", "segmentr"),
        r"model\.init_args\.mask_source: expected one of 'batch', 'segmenter'; got 'segmentr'",
    ),
    "num_classes_not_a_number": Case(
        ("--model.init_args.num_classes", "three"),
        r"model\.init_args\.num_classes: expected int or null; got 'three'",
    ),
}

#: ``fit``: the documented ``fit --model DualBranchClassifier`` line, tiny and quiet.
FIT = [
    "fit", "--model", "DualBranchClassifier", "--data", "WBCDataModule",
    "--model.init_args.cell_backbone", "resnet10t",
    "--model.init_args.nucleus_backbone", "mobilenetv3_small_050",
    "--model.init_args.nucleus_size", str(SIZE), "--model.init_args.fusion_features", "16",
    "--model.init_args.head_hidden", "[8]",
    *quick_data(),
    "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false",
]  # fmt: skip
SYNTHETIC = ["--data.dataset", "SyntheticWBC", "--data.dataset.init_args.n", "24"]


def _build_fixtures(folder: Path) -> None:
    """The inputs: a 32 px U-Net, a 1-channel U-Net, a classifier's checkpoint, a text file."""
    folder.mkdir()
    cells = SyntheticWBC(24, size=SIZE, seed=3, n_patients=8)

    def trained(task: pl.LightningModule, name: str) -> None:
        pl.seed_everything(0, verbose=False)
        trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False,
                             max_epochs=1, limit_train_batches=1, limit_val_batches=1)  # fmt: skip
        dm = WBCDataModule(cells, size=SIZE, batch_size=8, split="holdout", augment=False)
        trainer.fit(task, datamodule=dm)
        trainer.save_checkpoint(folder / name)

    trained(SegmentationModule("unet", "tu-resnet10t"), "unet32.ckpt")
    trained(CellClassifier("resnet10t", head_hidden=(8,)), "clf.ckpt")
    # a U-Net for 1-channel images: written as Lightning writes one (it cannot train on RGB)
    gray = SegmentationModule("unet", "tu-resnet10t", in_chans=1)
    torch.save(
        {
            "hyper_parameters": dict(gray.hparams),
            "state_dict": gray.state_dict(),
            "leukemia_wbc_pipeline": {"config": {"mean": [0.5], "std": [0.25]},
                                      "size": [SIZE, SIZE]},
        },
        folder / "unet_gray.ckpt",
    )  # fmt: skip
    # text that names a classical method: read as the segmenter's value, it would train
    (folder / "notes.ckpt").write_text("kmeans\n", encoding="utf-8")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of the inputs (built once for the module)."""
    folder = tmp_path_factory.mktemp("bad_input") / "files"
    _build_fixtures(folder)
    return folder


@pytest.fixture
def no_trainer(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[logging.LogRecord]]:
    """Building a Trainer fails the run; Lightning's log records are collected."""
    original = pl.Trainer.__init__

    @functools.wraps(original)  # the parsers still read the Trainer's signature
    def refuse(self: pl.Trainer, *args: object, **kwargs: object) -> None:
        raise AssertionError("a Trainer was built")

    monkeypatch.setattr(pl.Trainer, "__init__", refuse)
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect(logging.INFO)
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    yield records
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)


def _args(command: str, case: Case, files: Path, work: Path) -> list[str]:
    data = SYNTHETIC if case.data == "synthetic" else LAYOUTS[case.data](work.parent / "tree")
    own = [a.format(files=files) for a in case.args]
    if command == "fit":
        return [*FIT, *data, "--trainer.default_root_dir", str(work), *own]
    return ["cv", "--config", "demo", *MODEL_OVERRIDES["demo"], *quick_data(),
            *quick_cv(work / "cv"), *data, *own]  # fmt: skip


@pytest.mark.parametrize("command", ["fit", "cv"])
@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_before_training(
    name: str,
    command: str,
    files: Path,
    no_trainer: list[logging.LogRecord],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    case = CASES[name]
    work = tmp_path / "run"
    work.mkdir()
    monkeypatch.chdir(work)  # anything written relative to the working directory lands here
    with warnings.catch_warnings(record=True) as warned:  # a terminal would show them
        warnings.simplefilter("always")
        code = main(_args(command, case, files, work))
    captured = capsys.readouterr()
    assert code == 1, captured.err
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert re.fullmatch(rf"leukemia-wbc: error: {case.message}.*", lines[0]), lines[0]
    assert captured.out == ""
    assert [r.getMessage() for r in no_trainer] == []  # not even "Seed set to 0"
    shown = [w for w in warned if not issubclass(w.category, DeprecationWarning)]  # by default
    assert [str(w.message) for w in shown] == []
    assert sorted(p.relative_to(work).as_posix() for p in work.rglob("*")) == []
