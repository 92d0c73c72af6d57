"""Fake dataset trees in the real layouts, and the overrides that make a packaged config quick.

Shared by ``test_packaged_configs.py`` and ``test_documented_commands.py``: every fake tree comes
from the seeded generators under ``tests/data/<name>/data.py``; the overrides shrink a packaged
config (tiny backbones, 32 px, one epoch, 3 folds, no worker processes) without changing what it
is (the same task class, loss, data pipeline and protocol).
"""

from __future__ import annotations

import csv
import html
import json
from collections.abc import Callable
from pathlib import Path

from leukemia_wbc.data.folder import BCCD_GROUP_PATTERN
from tests.conftest import make_fixture

#: Image side of every quick run: the smallest input the tiny backbones accept (stride 32).
SIZE = 32
#: Images of every class in the small trees: with 3 stratified folds (train, validation, test)
#: each class has 2 training images, the least the SVM's calibration accepts.
PER_CLASS = 6


def _all_idb2(root: Path, *, masks: bool) -> list[str]:
    base = make_fixture("allidb", root, masks=masks, min_per_class=PER_CLASS)
    args = ["--config", "all_idb2", "--data.dataset.init_args.root", str(base)]
    if masks:
        args += ["--data.dataset.init_args.mask_root", str(base / "ALL_IDB2_masks")]
    return args


def _cnmc(root: Path, *, layout: str) -> list[str]:
    base = make_fixture("cnmc", root, layout=layout)
    return ["--config", "cnmc2019", "--data.dataset.init_args.root", str(base)]


def _dataset(class_path: str, root: Path, *extra: str) -> list[str]:
    """A dataset without a packaged data config, named by overrides (as a user does)."""
    return ["--data.dataset", class_path, "--data.dataset.init_args.root", str(root), *extra]


#: layout name -> writes the fake tree under a folder and returns the ``cv`` data arguments;
#: ``synthetic`` keeps the model config's own ``SyntheticWBC`` (made small). The small trees
#: get ``PER_CLASS`` images of every class (C-NMC's fake tree has 16 images of 8 subjects).
LAYOUTS: dict[str, Callable[[Path], list[str]]] = {
    "synthetic": lambda root: ["--data.dataset.init_args.n", "24"],
    "all_idb2": lambda root: _all_idb2(root, masks=False),
    "all_idb2_masks": lambda root: _all_idb2(root, masks=True),
    "cnmc2019_kaggle": lambda root: _cnmc(root, layout="kaggle"),
    "cnmc2019_tcia": lambda root: _cnmc(root, layout="tcia"),
    "raabin": lambda root: _dataset(
        "leukemia_wbc.data.RaabinWBC", make_fixture("raabin", root, min_per_class=PER_CLASS)
    ),
    "pbc": lambda root: _dataset(
        "leukemia_wbc.data.PBC", make_fixture("pbc", root, min_per_class=PER_CLASS)
    ),
    "folder": lambda root: _dataset(
        "leukemia_wbc.data.ImageFolderWBC",
        make_fixture("folder", root, min_per_class=PER_CLASS) / "classes",
        "--data.dataset.init_args.group_pattern",
        BCCD_GROUP_PATTERN,
    ),
    "segmentation_wbc": lambda root: [
        "--config",
        "segmentation_wbc",
        "--data.dataset.init_args.root",
        str(make_fixture("segmentation_wbc", root, min_per_class=PER_CLASS)),
    ],
}

#: Layouts whose images come with nucleus masks (the only data a model without a segmenter,
#: such as the demo's, can train on).
WITH_MASKS = ("synthetic", "all_idb2_masks", "segmentation_wbc")

#: Class names of each layout, in the dataset's label order.
CLASSES: dict[str, tuple[str, ...]] = {
    "synthetic": ("ALL", "AML", "CLL", "normal"),
    "all_idb2": ("normal", "blast"),
    "all_idb2_masks": ("normal", "blast"),
    "cnmc2019_kaggle": ("hem", "all"),
    "cnmc2019_tcia": ("hem", "all"),
    "raabin": ("Basophil", "Eosinophil", "Lymphocyte", "Monocyte", "Neutrophil"),
    "pbc": ("basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte",
            "neutrophil", "platelet"),
    "folder": ("Eosinophil", "Lymphocyte", "Neutrophil"),
    "segmentation_wbc": ("neutrophil", "lymphocyte", "monocyte", "eosinophil", "basophil"),
}  # fmt: skip

_DUAL = [
    "--model.init_args.cell_backbone", "resnet10t",
    "--model.init_args.nucleus_backbone", "mobilenetv3_small_050",
    "--model.init_args.nucleus_size", str(SIZE),
    "--model.init_args.fusion_features", "16",
    "--model.init_args.head_hidden", "[8]",
]  # fmt: skip

#: packaged model config -> overrides to tiny networks (same task class, loss and optimiser).
MODEL_OVERRIDES: dict[str, list[str]] = {
    "paper_dual_branch": _DUAL,
    "recommended_dual_branch": _DUAL,
    "recommended_cpu": _DUAL,
    "recommended_gpu": _DUAL,
    "demo": _DUAL,
    "resnet50_baseline": ["--model.init_args.backbone", "resnet10t",
                          "--model.init_args.head_hidden", "[8]"],
    "vgg16_baseline": ["--model.init_args.backbone", "vgg11_bn_quarter",
                       "--model.init_args.head_hidden", "[8]"],
    "recipe_nucleus_only": ["--model.init_args.backbone", "resnet10t",
                            "--model.init_args.nucleus_size", str(SIZE),
                            "--model.init_args.head_hidden", "[8]"],
    "svm_baseline": ["--model.init_args.progress", "false"],
}  # fmt: skip

_RECOMMENDED = (
    "DualBranchClassifier(resnet10t+mobilenetv3_small_050+all features), stain consistency 1"
)
#: What a packaged model config names in its report: the class and (tiny) backbones.
MODEL_NAMES: dict[str, str] = {
    "paper_dual_branch": "DualBranchClassifier(resnet10t+mobilenetv3_small_050)",
    "recommended_dual_branch": "DualBranchClassifier(resnet10t+mobilenetv3_small_050)",
    "recommended_cpu": _RECOMMENDED,
    "recommended_gpu": _RECOMMENDED,
    "demo": "DualBranchClassifier(resnet10t+mobilenetv3_small_050)",
    "resnet50_baseline": "CellClassifier(resnet10t)",
    "vgg16_baseline": "CellClassifier(vgg11_bn_quarter)",
    "recipe_nucleus_only": "NucleusClassifier(resnet10t)",
    "svm_baseline": "HandcraftedSVM",
}

#: Data-only recipes (combined with a model config, as the docs show).
RECIPES = (
    "recipe_grayscale",
    "recipe_hematoxylin",
    "recipe_stain_augmentation",
    "recipe_stain_normalization",
)


def quick_data(*, batch_size: int = 4) -> list[str]:
    """Data overrides of a quick run: 32 px, small batches, no worker processes."""
    return ["--data.size", str(SIZE), "--data.batch_size", str(batch_size),
            "--data.num_workers", "0"]  # fmt: skip


def quick_cv(output_dir: Path, *, n_splits: int = 3) -> list[str]:
    """``cv`` section overrides of a quick run: one epoch per fold, quiet trainer, float32.

    float32 also for configs with ``precision: auto``: a fold scored under bfloat16 autocast
    records probabilities that ``classify`` (float32) repeats to about 1e-3 only.
    """
    return [
        "--cv.output_dir", str(output_dir),
        "--cv.n_splits", str(n_splits),
        "--cv.max_epochs", "1",
        "--cv.precision", "32-true",
        "--cv.trainer_kwargs", "{enable_progress_bar: false, enable_model_summary: false}",
    ]  # fmt: skip


def check_fold(fold_dir: Path, classes: tuple[str, ...]) -> dict[str, object]:
    """Assert a finished fold's files (``fold.json`` metrics, ``predictions.csv``); return them."""
    record = json.loads((fold_dir / "fold.json").read_text())
    metrics = record["metrics"]
    assert isinstance(metrics, dict)
    for name in ("accuracy", "f1"):
        assert 0.0 <= metrics[name] <= 1.0, (fold_dir, name, metrics[name])
    with (fold_dir / "predictions.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows, f"{fold_dir}/predictions.csv has no row"
    assert [c for c in rows[0] if c.startswith("prob_")] == [f"prob_{c}" for c in classes]
    assert len(rows) == record["n_test"]
    for row in rows:
        assert abs(sum(float(row[f"prob_{c}"]) for c in classes) - 1.0) < 1e-4, row
    return dict(record)


def check_cv_output(output_dir: Path, model: str, classes: tuple[str, ...], n_splits: int) -> str:
    """Assert a finished cross-validation: every fold's files and a report naming ``model``.

    Returns:
        The report's HTML.
    """
    for k in range(n_splits):
        check_fold(output_dir / f"fold_{k}", classes)
    page = (output_dir / "report" / "report.html").read_text(encoding="utf-8")
    assert html.escape(model) in page, f"the report does not name {model}"
    for name in classes:
        assert html.escape(name) in page, f"the report does not name the class {name}"
    return page


def check_predictions_csv(path: Path, classes: tuple[str, ...], n_images: int) -> None:
    """Assert a ``classify`` table: one row per image, probabilities summing to one."""
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    header = ["path", "predicted", *(f"prob_{c}" for c in classes)]
    # a model that normalises stains adds whether each image was normalised
    assert rows[0] in (header, [*header, "stain_normalised"]), rows[0]
    assert len(rows) == 1 + n_images
    for row in rows[1:]:
        probs = [float(v) for v in row[2 : 2 + len(classes)]]
        assert row[2 + len(classes) :] in ([], ["true"], ["false"]), row
        assert abs(sum(probs) - 1.0) < 1e-4, row
        assert row[1] == classes[probs.index(max(probs))], row
