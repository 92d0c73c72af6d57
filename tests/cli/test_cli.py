"""The ``leukemia-wbc`` command through its real entry points: configs, commands, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from leukemia_wbc._commands.cv import load_cv_config
from leukemia_wbc.cli import config_names, main, resolve_config

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
CV_CONFIGS = (
    "paper_dual_branch", "resnet50_baseline", "vgg16_baseline", "svm_baseline", "demo",
    "recipe_nucleus_only", "recommended_dual_branch",
)  # fmt: skip


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The installed console script's code path, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "leukemia_wbc", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env=ENV,
    )


def test_packaged_configs_are_all_there() -> None:
    assert set(config_names()) == {
        "paper_dual_branch",
        "recommended_dual_branch",
        "recommended_cpu",
        "recommended_gpu",
        "colour_baseline",
        "resnet50_baseline",
        "vgg16_baseline",
        "svm_baseline",
        "segmentation_unet",
        "cnmc2019",
        "all_idb2",
        "segmentation_wbc",
        "demo",
        "demo_resnet",
        "demo_vgg",
        "demo_svm",
        "recipe_stain_normalization",
        "recipe_stain_augmentation",
        "recipe_grayscale",
        "recipe_hematoxylin",
        "recipe_nucleus_only",
    }
    assert resolve_config("demo").endswith("demo.yaml")
    with pytest.raises(FileNotFoundError, match="packaged: all_idb2, cnmc2019"):
        resolve_config("nope")


@pytest.mark.parametrize("name", CV_CONFIGS)
def test_cv_configs_build_their_model_and_data(name: str) -> None:
    from leukemia_wbc._commands.cv import _parser

    parser = _parser()
    cfg = parser.parse_args(["--config", resolve_config(name), "--data.dataset.init_args.n", "8"])
    init = parser.instantiate_classes(cfg)
    expected = yaml.safe_load(Path(resolve_config(name)).read_text())["model"]["class_path"]
    assert type(init.model).__name__ == expected.rpartition(".")[2]
    assert len(init.data.dataset) == 8 and cfg.cv.n_splits in (3, 10)


def test_data_configs_combine_with_a_model_config(tmp_path: Path) -> None:
    from leukemia_wbc._commands.cv import _parser
    from tests.conftest import make_fixture

    root = make_fixture("cnmc", tmp_path)
    parser = _parser()
    cfg = parser.parse_args(
        [
            "--config",
            resolve_config("svm_baseline"),
            "--config",
            resolve_config("cnmc2019"),
            "--data.dataset.init_args.root",
            str(root),
        ]
    )
    init = parser.instantiate_classes(cfg)
    assert type(init.data.dataset).__name__ == "CNMC2019" and len(init.data.dataset) > 0
    root = make_fixture("segmentation_wbc", tmp_path)
    setup = load_cv_config(["--config", "paper_dual_branch", "--config", "segmentation_wbc",
                            "--data.dataset.init_args.root", str(root),
                            "--data.dataset.init_args.subset", "Dataset 2"])  # fmt: skip
    assert type(setup.data.dataset).__name__ == "SegmentationWBC2018"
    assert set(setup.data.dataset.sources) == {"Dataset 2"}


@pytest.mark.parametrize(
    ("recipe", "check"),
    [
        ("recipe_stain_normalization", lambda dm: dm.pipeline.stain is not None),
        ("recipe_stain_augmentation", lambda dm: "StainAugment" in repr(dm.pipeline.augment)),
        ("recipe_grayscale", lambda dm: dm.pipeline.colour == "grayscale"),
        ("recipe_hematoxylin", lambda dm: dm.pipeline.colour == "hematoxylin"),
    ],
)
def test_recipe_configs_change_the_data_pipeline(recipe: str, check: Any) -> None:
    from leukemia_wbc._commands.cv import _parser

    parser = _parser()
    cfg = parser.parse_args(["--config", resolve_config("demo"), "--config", resolve_config(recipe),
                             "--data.dataset.init_args.n", "8"])  # fmt: skip
    init = parser.instantiate_classes(cfg)
    assert check(init.data)
    plain = parser.instantiate_classes(
        parser.parse_args(["--config", resolve_config("demo"), "--data.dataset.init_args.n", "8"])
    )
    assert not check(plain.data)


def test_segmentation_config_parses_for_fit(tmp_path: Path) -> None:
    from lightning.pytorch.cli import LightningCLI

    from leukemia_wbc.data import WBCDataModule
    from leukemia_wbc.tasks.base import BaseTask
    from tests.conftest import make_fixture

    root = make_fixture("segmentation_wbc", tmp_path)
    cli = LightningCLI(
        BaseTask,
        WBCDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        run=False,
        args=[
            "--config",
            resolve_config("segmentation_unet"),
            "--data.init_args.dataset.init_args.root",
            str(root),
            "--trainer.logger",
            "false",
        ],
    )
    assert type(cli.model).__name__ == "SegmentationModule"
    assert cli.trainer.max_epochs == 100


@pytest.fixture(scope="module")
def dual_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dual-branch classifier trained for one epoch through ``leukemia-wbc fit``."""
    root = tmp_path_factory.mktemp("fit")
    fit = run(
        "fit",
        "--model",
        "DualBranchClassifier",
        "--model.cell_backbone",
        "resnet18",
        "--model.nucleus_backbone",
        "mobilenetv2_050",
        "--model.nucleus_size",
        "32",
        "--model.fusion_features",
        "32",
        "--model.head_hidden",
        "[16]",
        "--model.classes",
        "[ALL, AML, CLL, normal]",
        "--data",
        "WBCDataModule",
        "--data.dataset",
        "SyntheticWBC",
        "--data.dataset.n",
        "60",
        "--data.size",
        "32",
        "--data.split",
        "holdout",
        "--data.stain_normalization",
        "true",
        "--trainer.max_epochs",
        "1",
        "--trainer.default_root_dir",
        str(root),
        "--trainer.enable_progress_bar",
        "false",
        cwd=root,
    )
    assert fit.returncode == 0, fit.stderr[-2000:]
    (ckpt,) = root.rglob("*.ckpt")
    return ckpt


def test_classify_and_explain_images(
    dual_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from leukemia_wbc.data import SyntheticWBC

    SyntheticWBC(5, size=48, seed=9).to_folder(tmp_path / "cells")
    folders = [str(p) for p in sorted((tmp_path / "cells").iterdir()) if p.name != "masks"]
    folders = [f for f in folders if Path(f).is_dir()]
    out = tmp_path / "pred.csv"
    status = main(["classify", str(dual_checkpoint), *folders, "--out", str(out),
                   "--overlays", str(tmp_path / "ov"), "--batch-size", "2"])  # fmt: skip
    assert status == 0, capsys.readouterr().err[-2000:]
    rows = out.read_text().splitlines()
    # the model normalises stains: a last column says whether each image was normalised
    assert rows[0] == "path,predicted,prob_ALL,prob_AML,prob_CLL,prob_normal,stain_normalised"
    assert len(rows) == 1 + 5
    for row in rows[1:]:
        values = row.split(",")
        probs = [float(v) for v in values[2:6]]
        assert values[6] in ("true", "false")
        assert (
            abs(sum(probs) - 1) < 1e-4
            and values[1] == ["ALL", "AML", "CLL", "normal"][probs.index(max(probs))]
        )
    assert len(list((tmp_path / "ov").glob("*_nucleus.png"))) == 5
    status = main(["explain", str(dual_checkpoint), folders[0], "--out", str(tmp_path / "ex"),
                   "--method", "integrated_gradients"])  # fmt: skip
    assert status == 0, capsys.readouterr().err[-2000:]
    assert {p.name.rpartition("_")[2] for p in (tmp_path / "ex").glob("*.png")} == {
        "cell.png",
        "nucleus.png",
    }


def test_classify_refuses_what_is_not_ours(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    bogus = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}}, bogus)
    image = tmp_path / "a.png"
    image.write_bytes(b"")
    assert main(["classify", str(bogus), str(image)]) == 1
    err = capsys.readouterr().err
    assert "is not a leukemia_wbc classifier checkpoint" in err and "Traceback" not in err
    assert main(["classify", str(tmp_path / "none.ckpt"), str(image)]) == 1
    assert "not found" in capsys.readouterr().err


def test_cv_through_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    status = main(["cv", "--config", "svm_baseline", "--data.dataset.init_args.n", "36",
                   "--data.size", "32", "--cv.n_splits", "3", "--cv.output_dir",
                   str(tmp_path / "cv"), "--model.init_args.progress", "false"])  # fmt: skip
    printed = capsys.readouterr()
    assert status == 0, printed.err[-2000:]
    assert "| mean ± std |" in printed.out
    assert (tmp_path / "cv" / "report" / "report.html").is_file()
    assert main(["cv", "--collect", str(tmp_path / "cv")]) == 0
    assert "| 95 % CI (3 folds: rough) |" in capsys.readouterr().out


def test_datasets_list_and_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.conftest import make_fixture

    assert main(["datasets"]) == 0
    listing = capsys.readouterr().out
    assert "cnmc2019 (CNMC2019)" in listing and "source:" in listing
    root = make_fixture("cnmc", tmp_path)
    assert main(["datasets", "verify", "cnmc2019", str(root)]) == 0
    out = capsys.readouterr().out
    assert "CNMC2019 at" in out and "all" in out and "hem" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bogus"], "unknown command 'bogus'"),
        (["cv", "--config", "nope"], "config 'nope' is neither a file nor a packaged config"),
        (["datasets", "verify", "nope", "."], "unknown dataset 'nope'"),
        (["datasets", "verify", "pbc", "/does/not/exist"], "/does/not/exist not found"),
    ],
)
def test_errors_are_one_line(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("leukemia-wbc: error: ") and message in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_unknown_backbone_and_wrong_layout_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["cv", "--config", "demo", "--model.init_args.cell_backbone", "nosuchnet"]
    assert main([*args, "--cv.output_dir", str(tmp_path / "cv")]) == 1
    err = capsys.readouterr().err
    assert err == (
        "leukemia-wbc: error: argument 'name': 'nosuchnet' is not a timm model name "
        "(see timm.list_models())\n"
    )
    assert main(["datasets", "verify", "pbc", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"PBC: no class folder under {tmp_path}" in err


def test_debug_shows_the_traceback() -> None:
    with pytest.raises(ValueError, match="unknown command"):
        main(["bogus", "--debug"])


def test_unknown_model_name_fails_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cv", "--model", "NoSuchModel", "--cv.output_dir", str(tmp_path / "cv")]) != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "NoSuchModel" in err and err.count("\n") == 1
    assert not (tmp_path / "cv").exists()


def test_demo_smoke_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo's whole path at toy size (the default run is measured, not tested)."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "demo"
    status = main(["demo", "--out", str(out), "--n", "48", "--size", "32", "--epochs", "1",
                   "--unet-epochs", "1", "--no-progress"])  # fmt: skip
    printed = capsys.readouterr()
    assert status == 0, printed.err[-3000:]
    assert "nucleus U-Net: held-out Dice" in printed.out
    assert (out / "unet.ckpt").is_file() and (out / "comparison.md").is_file()
    page = (out / "report" / "report.html").read_text()
    assert "Attribution gallery" in page and "Nucleus U-Net" in page
    assert page.count("<td>HandcraftedSVM</td>") == 1 + 4 + 1  # overall, per class, timings
    # every accuracy beside colour alone and under the stain shift
    assert page.count("<td>ColourShortcutBaseline</td>") == 1 + 4 + 1
    assert "Robustness to stain and acquisition shift" in page
    assert "Stain-shift accuracy" in (out / "comparison.md").read_text()
    # the paper's chain: the dual branch and the SVM take their masks from the demo's U-Net
    for key in ("dual_branch", "svm"):
        hparams = json.loads((out / key / "config.json").read_text())["model"]["hparams"]
        assert hparams["segmenter"] == str(out / "unet.ckpt")
        assert hparams["mask_source"] == "segmenter"
    assert "take every nucleus mask from this U-Net" in page


def test_demo_paper_settings_are_the_packaged_configs(tmp_path: Path) -> None:
    """``demo --full`` runs the packaged paper configs: one source for the paper's settings."""
    from leukemia_wbc.cli import resolve_config
    from leukemia_wbc.demo import PAPER_CONFIGS, DemoSettings, paper_configs
    from leukemia_wbc.tasks import DualBranchClassifier

    paper = yaml.safe_load(Path(resolve_config("paper_dual_branch")).read_text())
    settings = DemoSettings.paper()
    assert (settings.size, settings.folds, settings.epochs, settings.batch_size) == (
        paper["data"]["size"], paper["cv"]["n_splits"], paper["cv"]["max_epochs"],
        paper["data"]["batch_size"],
    )  # fmt: skip
    settings.n, settings.size = 40, 32
    setups = paper_configs(settings, tmp_path, segmenter="kmeans")
    assert set(setups) == {*PAPER_CONFIGS, "colour"}  # the paper's models and colour alone
    assert type(setups["colour"].model).__name__ == "ColourShortcutBaseline"
    dual = setups["dual_branch"]
    assert isinstance(dual.model, DualBranchClassifier)
    init = paper["model"]["init_args"]
    for key in ("dropout", "cell_backbone", "nucleus_backbone", "loss"):
        assert dual.model.hparams[key] == init[key], key
    assert dual.model.optim.lr == init["optim"]["lr"]
    assert dual.model.optim.lr_patience == init["optim"]["lr_patience"]
    assert dual.model.mask_source == "segmenter"
    steps = dual.data.pipeline.config()
    assert paper["data"]["equalize"] == "clahe" and paper["data"]["background_removal"] is True
    assert "CLAHE" in json.dumps(steps) and "BackgroundRemoval" in json.dumps(steps)
    assert dual.options["early_stopping_patience"] == paper["cv"]["early_stopping_patience"]
    assert dual.options["output_dir"] == str(tmp_path / "dual_branch")
    assert len(dual.data.dataset) == 40
    assert setups["svm"].model.mask_source == "segmenter"
    assert setups["resnet"].model.hparams["backbone"] == "resnet50"


# The documented-command tests run the same commands in-process (docs/smears.md:
# analyze-smear); these run them in a fresh process, as a user's shell does.
@pytest.mark.slow
def test_analyze_smear_counts_blasts_and_writes_overlays(
    dual_checkpoint: Path, tmp_path: Path
) -> None:
    import csv

    import torch
    from PIL import Image

    from leukemia_wbc.smear import SyntheticSmear, create_mask_rcnn

    smears = SyntheticSmear(2, size=(256, 320), seed=3, cells_per_field=(3, 4))
    images = []
    for i in range(2):
        images.append(tmp_path / f"field{i}.png")
        Image.fromarray(smears.render(i).image).save(images[-1])
    out = tmp_path / "analysis"
    proc = run("analyze-smear", str(dual_checkpoint), *map(str, images), "--out", str(out),
               cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "against the 20 % acute-leukemia threshold" in proc.stdout
    summary = list(csv.DictReader((out / "summary.csv").open()))
    assert [Path(r["path"]).name for r in summary] == ["field0.png", "field1.png"]
    for i, row in enumerate(summary):
        cells = int(row["cells"])
        assert abs(cells - len(smears.render(i).labels)) <= 1  # the classical detector
        assert sum(int(row[c]) for c in ("ALL", "AML", "CLL", "normal")) == cells
        assert int(row["blasts"]) == int(row["ALL"]) + int(row["AML"])
        assert float(row["ci_low"]) <= float(row["blast_share"]) <= float(row["ci_high"])
        per_cell = list(csv.DictReader((out / f"field{i}_cells.csv").open()))
        assert len(per_cell) == cells
        overlay = Image.open(out / f"field{i}_overlay.png")
        assert overlay.size == (320, 256 + 48)
    # finished results are not overwritten
    again = run("analyze-smear", str(dual_checkpoint), str(images[0]), "--out", str(out),
                cwd=tmp_path)  # fmt: skip
    assert again.returncode == 1 and "field0_overlay.png exists" in again.stderr
    assert "pass --overwrite" in again.stderr
    # with a detector file: the network (here untrained) runs through the same command
    detector = tmp_path / "det.pt"
    torch.save(create_mask_rcnn().state_dict(), detector)
    net = run("analyze-smear", str(dual_checkpoint), str(detector), str(images[0]),
              "--method", "mask_rcnn", "--score-threshold", "0.9", "--out", str(tmp_path / "n"),
              cwd=tmp_path)  # fmt: skip
    assert net.returncode == 0, net.stderr[-2000:]
    assert (tmp_path / "n" / "field0_overlay.png").is_file()


@pytest.mark.slow
def test_analyze_smear_scores_allidb1_and_rejects_bad_input(
    dual_checkpoint: Path, tmp_path: Path
) -> None:
    import csv

    from tests.conftest import make_fixture

    root = make_fixture("allidb", tmp_path / "idb")
    proc = run("analyze-smear", str(dual_checkpoint), "--allidb1", str(root), "--out",
               str(tmp_path / "a"), cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ALL-IDB1 (4 smears, radius 40 px)" in proc.stdout
    rows = list(csv.DictReader((tmp_path / "a" / "allidb1.csv").open()))
    assert [r["stem"] for r in rows] == ["Im001_1", "Im002_1", "Im003_0", "Im004_0"]
    assert [int(r["n_true"]) for r in rows] == [3, 2, 0, 0]
    no_ckpt = run("analyze-smear", str(root / "ALL_IDB1" / "im" / "Im001_1.jpg"), cwd=tmp_path)
    assert no_ckpt.returncode == 1
    assert "expected one classifier checkpoint" in no_ckpt.stderr
    assert len(no_ckpt.stderr.strip().splitlines()) == 1
    nothing = run("analyze-smear", str(dual_checkpoint), cwd=tmp_path)
    assert nothing.returncode == 1 and "nothing to analyse" in nothing.stderr
    # the ALL-IDB1 table is a finished result too
    again = run("analyze-smear", str(dual_checkpoint), "--allidb1", str(root), "--out",
                str(tmp_path / "a"), "--blast-classes", "ALL,AML", cwd=tmp_path)  # fmt: skip
    assert again.returncode == 1 and "allidb1.csv exists" in again.stderr
    # two images of the same name would write the same outputs: refused before any work
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    for folder in ("x", "y"):
        (tmp_path / folder / "s.png").write_bytes(
            (root / "ALL_IDB1" / "im" / "Im001_1.jpg").read_bytes()
        )
    clash = run("analyze-smear", str(dual_checkpoint), str(tmp_path / "x"), str(tmp_path / "y"),
                "--out", str(tmp_path / "c"), cwd=tmp_path)  # fmt: skip
    assert clash.returncode == 1 and "would write the same s_overlay.png" in clash.stderr
