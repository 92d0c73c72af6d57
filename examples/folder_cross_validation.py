"""Cross-validation on your own folder of cell images (one sub-folder per class).

Point ``--root`` at a folder laid out as torchvision's ImageFolder::

    root/<class name>/<image>.{png,jpg,bmp,tif,...}

It is read by :class:`~leukemia_wbc.data.ImageFolderWBC`. If the file names carry the patient
(or smear) they come from, give a regular expression with one capture group in
``--group-pattern`` (e.g. ``'^(P\\d+)_'`` for ``P07_0012.png``): the folds then keep each
patient on one side, so that no patient is both trained on and tested on. Without it every
image is its own group.

The script cross-validates two models on identical, stratified (and grouped) folds with
:class:`~leukemia_wbc.experiments.CrossValidator`: a small CNN
(``CellClassifier(--backbone)``, random initialisation) and the paper's SVM on handcrafted
nucleus features (:class:`~leukemia_wbc.models.HandcraftedSVM`; a folder has no nucleus
masks, so :class:`~leukemia_wbc.models.ClassicalNucleusSegmenter` segments them). It prints the
comparison table and writes, into ``--out``, one folder per model (re-running resumes), the
table (``comparison.md``) and the report (``report/report.html``, ``.md``, ``.json``).

No folder at hand? ``--make-demo-folder DIR`` first writes a demo folder of
:class:`~leukemia_wbc.data.SyntheticWBC` cells in that layout (``DIR/<class>/patientNNN_i.png``)
and runs on it with the matching group pattern; ``--fast`` alone does so in ``--out``.

    python examples/folder_cross_validation.py --root /data/my_cells --group-pattern '^(P\\d+)_' \\
        --out runs/my_cells
    python examples/folder_cross_validation.py --make-demo-folder /tmp/demo_cells --out runs/demo
    python examples/folder_cross_validation.py --fast --out /tmp/folder_cv_fast

The demo run (600 cells, 5 folds) takes several minutes on one CPU thread; ``--fast`` (120
cells at 32 px, 3 folds, 2 epochs) about half a minute.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from leukemia_wbc.data import ImageFolderWBC, SyntheticWBC, WBCDataModule
from leukemia_wbc.evaluation import compare
from leukemia_wbc.experiments import CrossValidator, CVResult
from leukemia_wbc.models import ClassicalNucleusSegmenter, HandcraftedSVM
from leukemia_wbc.report import write_report
from leukemia_wbc.tasks import CellClassifier, OptimConfig

#: Group pattern of the demo folder's file names (``patient003_0042.png``).
DEMO_GROUP_PATTERN = r"^(patient\d+)_"
_DEMO_MARKER = "demo_folder.json"


def write_demo_folder(root: Path, *, n: int, size: int, patients: int, seed: int) -> Path:
    """Write SyntheticWBC cells as ``root/<class>/<patient>_<index>.png`` (images only).

    A folder this function wrote before with the same settings is reused as it is.

    Args:
        root: Folder to write (created).
        n: Number of cells.
        size: Image side in pixels.
        patients: Number of synthetic patients (the groups).
        seed: Seed of the cells.

    Returns:
        ``root``.

    Raises:
        FileExistsError: ``root`` holds other files (never overwritten).
    """
    settings = {"n": n, "size": size, "patients": patients, "seed": seed}
    marker = root / _DEMO_MARKER
    if marker.is_file() and json.loads(marker.read_text()) == settings:
        return root
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(
            f"--make-demo-folder {root}: the folder is not empty; expected a new folder "
            f"(or one this script wrote with the same settings {settings})"
        )
    cells = SyntheticWBC(n, size=size, seed=seed, n_patients=patients, difficulty=0.2)
    for i, (label, group) in enumerate(zip(cells.labels.tolist(), cells.groups, strict=True)):
        folder = root / cells.classes[label]
        folder.mkdir(parents=True, exist_ok=True)
        image, _, _ = cells.render(i)
        Image.fromarray(image).save(folder / f"{group}_{i:05d}.png")
    marker.write_text(json.dumps(settings))
    return root


def models(args: argparse.Namespace, classes: tuple[str, ...]) -> dict[str, Any]:
    """The two models of the comparison, keyed by their output sub-folder."""
    cnn = CellClassifier(
        args.backbone,
        num_classes=len(classes),
        classes=classes,
        head_hidden=(64,),
        dropout=0.2,
        loss="ce",
        optim=OptimConfig(lr=3e-3, weight_decay=1e-4, optimizer="adamw", scheduler="onecycle"),
    )
    svm = HandcraftedSVM(segmenter=ClassicalNucleusSegmenter(), on_empty="image", progress=False)
    return {"cnn": cnn, "svm": svm}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments; ``--fast`` without a folder makes a demo folder in ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--root", type=Path, help="your folder: root/<class>/<images>")
    source.add_argument(
        "--make-demo-folder",
        type=Path,
        metavar="DIR",
        help="write a SyntheticWBC demo folder here first, then use it",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--group-pattern",
        default=None,
        help="regex with one capture group: the patient in each file stem",
    )
    parser.add_argument("--fast", action="store_true", help="a smoke run (tiny data, 2 epochs)")
    parser.add_argument("--size", type=int, default=64, help="image side the models see")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=15, help="epochs per fold (CNN)")
    parser.add_argument("--backbone", default="resnet10t", help="timm name of the small CNN")
    parser.add_argument("--demo-cells", type=int, default=600, help="cells in the demo folder")
    parser.add_argument("--demo-patients", type=int, default=12)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.fast:
        args.size, args.folds, args.epochs = 32, 3, 2
        args.demo_cells, args.demo_patients = 120, 6
        if args.root is None and args.make_demo_folder is None:
            args.make_demo_folder = args.out / "demo_folder"
    if args.root is None and args.make_demo_folder is None:
        parser.error("give your folder with --root DIR, or --make-demo-folder DIR (or --fast)")
    if args.root is not None and not args.root.is_dir():
        parser.error(f"--root {args.root} is not a folder; expected root/<class>/<images>")
    return args


def main(argv: list[str] | None = None) -> dict[str, CVResult]:
    """Run the comparison, print the table and write the report."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    root, pattern = args.root, args.group_pattern
    if args.make_demo_folder is not None:
        root = write_demo_folder(
            args.make_demo_folder,
            n=args.demo_cells,
            size=args.size,
            patients=args.demo_patients,
            seed=args.seed,
        )
        pattern = pattern or DEMO_GROUP_PATTERN
        print(f"demo folder: {root} (groups from {pattern!r})")
    dataset = ImageFolderWBC(root, group_pattern=pattern, size=args.size)
    counts = np.bincount(dataset.labels, minlength=dataset.num_classes)
    n_groups = len(set(dataset.groups))
    print(
        f"{root}: {len(dataset)} images, classes "
        + ", ".join(f"{c} {k}" for c, k in zip(dataset.classes, counts, strict=True))
        + f"; {n_groups} groups"
    )
    if n_groups == len(dataset):
        print(
            "every image is its own group: cells of one patient may fall on both sides of a "
            "fold; give --group-pattern if the file names carry the patient"
        )

    dm = WBCDataModule(dataset, size=args.size, batch_size=32)
    trainer: dict[str, Any] = {
        "enable_model_summary": False,
        "log_every_n_steps": 1,
        "enable_progress_bar": not args.fast,
    }
    results: dict[str, CVResult] = {}
    for key, task in models(args, dataset.classes).items():
        start = time.perf_counter()
        cv = CrossValidator(
            task,
            dm,
            args.out / key,
            n_splits=args.folds,
            seed=args.seed,
            max_epochs=args.epochs,
            early_stopping_patience=5,
            accelerator="cpu",
            trainer_kwargs=trainer,
        )
        results[key] = cv.run()
        print(f"{cv.name}: {args.folds} folds in {time.perf_counter() - start:.0f} s", flush=True)

    ordered = list(results.values())
    print("\n" + compare(ordered, args.out / "comparison.md"))
    notes = (
        f"Folder `{root}`: {len(dataset)} images of {dataset.num_classes} classes, "
        f"{n_groups} groups (pattern `{pattern}`), at {args.size} px; {args.folds} folds; up to "
        f"{args.epochs} epochs per fold for the CNN (`{args.backbone}`, random initialisation)."
    )
    files = write_report(ordered, args.out / "report", notes=notes)
    print(f"report: {files.html}")
    return results


if __name__ == "__main__":
    main()
