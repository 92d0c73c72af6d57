"""Every packaged config runs through ``leukemia-wbc`` on fake trees in the real dataset layouts.

Each model config (``paper_dual_branch``, the baselines, ``recipe_nucleus_only``, ``demo``) is
cross-validated with ``leukemia-wbc cv`` on every layout it is meant for (the ``all_idb2``,
``cnmc2019`` and ``segmentation_wbc`` data configs, and class-folder datasets named by
overrides), shrunk by overrides only (tiny backbones, 32 px, one epoch, 3 folds): the report
must name the model and its classes, every fold must have written its metrics and held-out
predictions, and ``leukemia-wbc classify`` on the fold's checkpoint must give the probabilities
the fold recorded. The data-only recipes run on top of a model config; ``segmentation_unet``
runs through ``leukemia-wbc fit``. One combination per config is in the fast suite, the rest of
the matrix is ``slow``.
"""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from leukemia_wbc.cli import config_names, main
from leukemia_wbc.configs import resolve_config
from tests.cli._layouts import (
    CLASSES,
    LAYOUTS,
    MODEL_NAMES,
    MODEL_OVERRIDES,
    RECIPES,
    WITH_MASKS,
    check_cv_output,
    check_predictions_csv,
    quick_cv,
    quick_data,
)

#: Model configs and the layouts each is meant for: the demo's model has no segmenter, so it
#: needs data with nucleus masks; the others set ``segmenter: kmeans`` (or use no masks).
MEANT_FOR: dict[str, tuple[str, ...]] = {
    **{name: tuple(LAYOUTS) for name in MODEL_OVERRIDES if name != "demo"},
    "demo": WITH_MASKS,
}
#: What each recipe changes in the data pipeline, as recorded in the run's ``config.json``.
RECIPE_SETTINGS: dict[str, dict[str, object]] = {
    "recipe_grayscale": {"colour": "grayscale"},
    "recipe_hematoxylin": {"colour": "hematoxylin"},
    "recipe_stain_augmentation": {"stain_augmentation": 0.2},
    "recipe_stain_normalization": {"stain_normalization": True},
}
#: The fast suite: every model config, every layout and every recipe at least once.
FAST: list[tuple[str, str, tuple[str, ...]]] = [
    ("paper_dual_branch", "cnmc2019_kaggle", ()),
    ("recommended_dual_branch", "all_idb2", ()),
    ("recommended_cpu", "segmentation_wbc", ()),
    ("resnet50_baseline", "all_idb2", ()),
    ("vgg16_baseline", "raabin", ()),
    ("svm_baseline", "all_idb2_masks", ()),
    ("recipe_nucleus_only", "pbc", ()),
    ("paper_dual_branch", "cnmc2019_tcia", ("recipe_grayscale",)),
    ("paper_dual_branch", "folder", ("recipe_hematoxylin",)),
    ("paper_dual_branch", "segmentation_wbc", ("recipe_stain_augmentation",)),
    ("demo", "synthetic", ("recipe_stain_normalization",)),
]
#: Model configs without a fast case of their own: the same arguments as another's (checked).
SAME_AS_FAST = {"recommended_gpu"}
SAME_AS_FAST_OF = ("recommended_cpu", "recommended_gpu")
#: The rest of the matrix: every model config on every layout it is meant for, and every
#: recipe with the paper's model on C-NMC and on ALL-IDB2.
SLOW = [
    (model, layout, ())
    for model, layouts in MEANT_FOR.items()
    for layout in layouts
    if (model, layout, ()) not in FAST
] + [
    (model, layout, (recipe,))
    for recipe, (model, layout) in itertools.product(
        RECIPES, [("paper_dual_branch", "cnmc2019_kaggle"), ("paper_dual_branch", "all_idb2")]
    )
    if (model, layout, (recipe,)) not in FAST
]


#: Cases that fail for a known library bug (reported; remove the entry with the fix).
KNOWN_BUGS: dict[tuple[str, str, tuple[str, ...]], str] = {}


def _case(model: str, layout: str, recipes: tuple[str, ...], *, slow: bool) -> object:
    marks = [pytest.mark.slow] if slow else []
    if (model, layout, recipes) in KNOWN_BUGS:
        bug = KNOWN_BUGS[model, layout, recipes]
        marks.append(pytest.mark.xfail(reason=bug, strict=True, raises=AssertionError))
    return pytest.param(model, layout, recipes, id="-".join([model, layout, *recipes]),
                        marks=marks)  # fmt: skip


def _fold_probabilities(fold_dir: Path, classes: tuple[str, ...]) -> dict[str, list[float]]:
    with (fold_dir / "predictions.csv").open(newline="") as fh:
        return {r["path"]: [float(r[f"prob_{c}"]) for c in classes] for r in csv.DictReader(fh)}


def _classify_like_the_fold(
    fold_dir: Path,
    classes: tuple[str, ...],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    *,
    same_masks: bool,
) -> None:
    """``classify`` with the fold's checkpoint on two of its held-out images.

    With ``same_masks`` (data without nucleus masks: the fold took them from the model's
    segmenter, as ``classify`` does) the probabilities must be the ones the fold recorded: the
    checkpoint carries the whole pipeline. SyntheticWBC's images are not files: two are
    rendered into PNG files instead.
    """
    recorded = _fold_probabilities(fold_dir, classes)
    images = sorted(recorded)[:2]
    if not all(Path(p).is_file() for p in images):
        from leukemia_wbc.data import SyntheticWBC

        SyntheticWBC(2, size=32, seed=1).to_folder(tmp_path / "cells")
        images = sorted(str(p) for p in (tmp_path / "cells").glob("*/*.png") if "masks" not in
                        p.parts)  # fmt: skip
        same_masks = False
    out = tmp_path / "classified.csv"
    checkpoint = fold_dir / "checkpoints" / "best.ckpt"
    code = main(["classify", str(checkpoint), *images, "--out", str(out), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    check_predictions_csv(out, classes, len(images))
    if same_masks:
        with out.open(newline="") as fh:
            for row in csv.DictReader(fh):
                got = [float(row[f"prob_{c}"]) for c in classes]
                assert got == pytest.approx(recorded[row["path"]], abs=1e-4), row["path"]


@pytest.mark.parametrize(
    ("model", "layout", "recipes"),
    [_case(*c, slow=False) for c in FAST] + [_case(*c, slow=True) for c in SLOW],
)
def test_model_config_cross_validates_on_layout(
    model: str,
    layout: str,
    recipes: tuple[str, ...],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "cv"
    args = [
        "cv",
        "--config",
        model,
        *LAYOUTS[layout](tmp_path / "data"),
        *(arg for recipe in recipes for arg in ("--config", recipe)),
        *MODEL_OVERRIDES[model],
        *quick_data(),
        *quick_cv(out),
    ]
    assert main(args) == 0, capsys.readouterr().err[-3000:]
    stdout = capsys.readouterr().out
    assert f"report: {out / 'report' / 'report.html'}" in stdout
    classes = CLASSES[layout]
    check_cv_output(out, MODEL_NAMES[model], classes, n_splits=3)
    config = json.loads((out / "config.json").read_text())
    assert config["name"] == MODEL_NAMES[model]
    assert tuple(config["data"]["classes"]) == classes
    for recipe in recipes:
        for key, value in RECIPE_SETTINGS[recipe].items():
            assert config["data"]["datamodule"][key] == value, (recipe, key)
    if model != "svm_baseline":
        same_masks = layout not in WITH_MASKS
        _classify_like_the_fold(out / "fold_0", classes, tmp_path, capsys, same_masks=same_masks)


def test_every_packaged_config_is_run() -> None:
    """A packaged config added later must be added to the matrix above (or to the U-Net test)."""
    from leukemia_wbc.demo import DEMO_CONFIGS

    data_configs = {a for args in _layout_args() for a in args if a in config_names()}
    overlays = {name for names in DEMO_CONFIGS.values() for name in names[1:]}  # test below
    run = set(MODEL_OVERRIDES) | set(RECIPES) | {"segmentation_unet"} | data_configs | overlays
    missing = sorted(set(config_names()) - run)
    assert not missing, f"packaged configs that no test runs: {missing}"
    for model in set(MODEL_OVERRIDES) - SAME_AS_FAST:
        assert any(c[0] == model for c in FAST), f"{model} has no fast case"
    # recommended_gpu is recommended_cpu at other sizes (which the tests shrink anyway): the same
    # arguments, checked here; its runs are in the slow matrix
    cpu, gpu = (yaml.safe_load(Path(resolve_config(n)).read_text()) for n in SAME_AS_FAST_OF)
    assert set(cpu["model"]["init_args"]) == set(gpu["model"]["init_args"])
    assert set(cpu["data"]) == set(gpu["data"]) - {"num_workers"}
    for layout in LAYOUTS:
        assert any(c[1] == layout for c in FAST), f"{layout} has no fast case"
    for recipe in RECIPES:
        assert any(recipe in c[2] for c in FAST), f"{recipe} has no fast case"


def _layout_args() -> list[list[str]]:
    """The arguments of every layout (written into a throw-away folder)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return [make(Path(tmp) / name) for name, make in LAYOUTS.items()]


@pytest.fixture(scope="module")
def unet_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``leukemia-wbc fit --config segmentation_unet`` on the fake segmentation_WBC tree."""
    import os

    from tests.conftest import make_fixture

    tmp = tmp_path_factory.mktemp("unet")
    root = make_fixture("segmentation_wbc", tmp / "data")
    args = [
        "fit",
        "--config", "segmentation_unet",
        "--data.init_args.dataset.init_args.root", str(root),
        "--model.init_args.encoder", "tu-mobilenetv2_050",
        "--data.init_args.size", "32",
        "--data.init_args.batch_size", "4",
        "--trainer.max_epochs", "1",
        "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(tmp),
    ]  # fmt: skip
    here = Path.cwd()
    os.chdir(tmp)  # the config's ModelCheckpoint writes runs/segmentation_unet/ under the cwd
    try:
        assert main(args) == 0
    finally:
        os.chdir(here)
    return tmp / "runs" / "segmentation_unet" / "unet.ckpt"


def test_segmentation_unet_config_fits(unet_checkpoint: Path) -> None:
    import torch

    folder = unet_checkpoint.parent
    assert sorted(p.name for p in folder.rglob("*.ckpt")) == ["last.ckpt", "unet.ckpt"]
    saved = torch.load(unet_checkpoint, map_location="cpu", weights_only=True)
    assert saved["hyper_parameters"]["arch"] == "unet"
    assert saved["hyper_parameters"]["encoder"] == "tu-mobilenetv2_050"
    assert saved["epoch"] == 0 and any("decoder" in k for k in saved["state_dict"])


def test_unet_checkpoint_is_the_segmenter_of_the_paper_config(
    unet_checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """As ``segmentation_unet.yaml`` says: ``cv ... --model.init_args.segmenter unet.ckpt``."""
    import shutil

    monkeypatch.chdir(tmp_path)
    unet = Path(shutil.copy(unet_checkpoint, tmp_path / "unet.ckpt"))
    out = tmp_path / "cv"
    args = [
        "cv",
        "--config", "paper_dual_branch",
        *LAYOUTS["all_idb2"](tmp_path / "data"),
        *MODEL_OVERRIDES["paper_dual_branch"],
        "--model.init_args.segmenter", str(unet),
        *quick_data(),
        *quick_cv(out),
    ]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err[-3000:]
    check_cv_output(out, MODEL_NAMES["paper_dual_branch"], CLASSES["all_idb2"], n_splits=3)
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["hparams"]["segmenter"] == str(unet)
    unet.unlink()  # the U-Net's weights travel in the classifier's checkpoint
    _classify_like_the_fold(out / "fold_0", CLASSES["all_idb2"], tmp_path, capsys, same_masks=True)


#: Optimiser settings a task took as flat arguments before ``optim`` (no config may use them).
_FLAT_OPTIM = {"lr", "weight_decay", "lr_patience", "lr_factor", "optimizer", "scheduler",
               "warmup_fraction"}  # fmt: skip


@pytest.mark.parametrize("name", config_names())
def test_optimiser_settings_are_one_optim_mapping(name: str) -> None:
    """Each config's optimiser settings sit under ``optim`` and make a valid ``OptimConfig``."""
    import yaml

    from leukemia_wbc.configs import resolve_config
    from leukemia_wbc.tasks import OptimConfig

    config = yaml.safe_load(Path(resolve_config(name)).read_text(encoding="utf-8"))
    init = (config.get("model") or {}).get("init_args") or {}
    assert not _FLAT_OPTIM & set(init), f"{name}: flat optimiser keys {_FLAT_OPTIM & set(init)}"
    if "optim" in init:
        assert set(init["optim"]) <= _FLAT_OPTIM
        OptimConfig(**init["optim"])  # raises for a value out of range


def test_config_optim_reaches_the_task(tmp_path: Path) -> None:
    """``cv --config demo`` builds the dual branch with the config's AdamW one-cycle settings."""
    import yaml

    from leukemia_wbc._commands.cv import load_cv_config
    from leukemia_wbc.configs import resolve_config
    from leukemia_wbc.tasks import OptimConfig

    demo = yaml.safe_load(Path(resolve_config("demo")).read_text(encoding="utf-8"))
    setup = load_cv_config(["--config", "demo", "--data.dataset.init_args.n", "24",
                            "--model.init_args.optim.lr", "0.01",
                            "--cv.output_dir", str(tmp_path)])  # fmt: skip
    expected = OptimConfig(**{**demo["model"]["init_args"]["optim"], "lr": 0.01})
    assert setup.model.optim == expected and expected.scheduler == "onecycle"
    assert setup.model.hparams["optim"] == expected.to_dict()


def test_the_demo_reads_its_settings_and_models_from_the_packaged_configs(tmp_path: Path) -> None:
    """``leukemia-wbc demo`` (CPU) runs ``demo`` and the three model overlays laid over it."""
    import dataclasses

    import yaml

    from leukemia_wbc.configs import resolve_config
    from leukemia_wbc.demo import DEMO_CONFIGS, DemoSettings, demo_configs
    from leukemia_wbc.models import ColourShortcutBaseline, HandcraftedSVM
    from leukemia_wbc.tasks import CellClassifier, DualBranchClassifier

    def read(name: str) -> dict[str, Any]:
        loaded: dict[str, Any] = yaml.safe_load(Path(resolve_config(name)).read_text())
        return loaded

    demo = read("demo")
    cells = demo["data"]["dataset"]["init_args"]
    settings = DemoSettings.cpu()
    assert (settings.n, settings.patients, settings.size, settings.batch_size) == (
        cells["n"],
        cells["n_patients"],
        demo["data"]["size"],
        demo["data"]["batch_size"],
    )
    assert (settings.folds, settings.epochs) == (demo["cv"]["n_splits"], demo["cv"]["max_epochs"])
    setups = demo_configs(dataclasses.replace(settings, n=40), tmp_path, segmenter="kmeans")
    assert list(setups) == list(DEMO_CONFIGS)
    kinds = {"dual_branch": DualBranchClassifier, "resnet": CellClassifier, "vgg": CellClassifier,
             "svm": HandcraftedSVM, "colour": ColourShortcutBaseline}  # fmt: skip
    for key, setup in setups.items():
        assert isinstance(setup.model, kinds[key]), key
        assert setup.options["output_dir"] == str(tmp_path / key)
        assert (setup.options["n_splits"], setup.options["max_epochs"]) == (
            settings.folds,
            settings.epochs,
        )
        assert len(setup.data.dataset) == 40 and setup.data.batch_size == settings.batch_size
        overlay = read(DEMO_CONFIGS[key][-1])["model"].get("init_args", {})
        if key in ("resnet", "vgg"):
            assert setup.model.hparams["backbone"] == overlay["backbone"]
            assert setup.model.optim.lr == overlay["optim"]["lr"]
    assert setups["vgg"].model.optim.lr < setups["resnet"].model.optim.lr  # the VGG's own rate
    assert setups["svm"].model.mask_source == "segmenter"
    assert setups["dual_branch"].model.mask_source == "segmenter"
    assert setups["resnet"].model.segmenter is None
