#!/usr/bin/env python3
"""Write a tiny fake C-NMC 2019 tree in the dataset's exact on-disk layout (seeded).

Without a file list: a small hand-made tree (3 folds x 2 classes x a few subjects, 6
preliminary-test images with their labels CSV, 3 final-test images), in the Kaggle layout or,
with ``layout="tcia"``, in the TCIA layout (nested test folders, CSV beside the prelim folder).

With ``filelist`` (the real ``../shared/data/cnmc_filelist.txt``, 15,114 paths): every listed
path is written with a 4x4 BMP, and the labels CSV named in the list is generated.

Usage: ``python data.py OUT_DIR [--filelist PATH] [--layout kaggle|tcia]``.
"""

from __future__ import annotations

import argparse
import csv
import io
import re
from pathlib import Path

import numpy as np
from PIL import Image

SEED = 0
SIZE = 16
CSV_NAME = "C-NMC_test_prelim_phase_data_labels.csv"

#: fold -> class folder -> subject -> number of cells; ``h3`` mirrors the real release's one
#: lower-case subject id. Counts: fold 0 5 all / 2 hem, fold 1 2 / 3, fold 2 3 / 1.
TRAIN = {
    0: {"all": {"1": 3, "3": 2}, "hem": {"H1": 2}},
    1: {"all": {"2": 2}, "hem": {"H2": 2, "h3": 1}},
    2: {"all": {"4": 3}, "hem": {"H4": 1}},
}
#: Preliminary-test rows: (Patient_ID, label), written as 1.bmp ... 6.bmp (4 all, 2 hem).
PRELIM = [
    ("UID_57_29_1_all.bmp", 1),
    ("UID_H49_35_1_hem.bmp", 0),
    ("UID_57_22_2_all.bmp", 1),
    ("UID_58_3_1_all.bmp", 1),
    ("UID_H50_7_2_hem.bmp", 0),
    ("UID_58_4_1_all.bmp", 1),
]
N_FINAL = 3


def _bmp(rng: np.random.Generator, size: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "BMP")
    return buf.getvalue()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _write_csv(path: Path, rows: list[tuple[str, str, int]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["Patient_ID", "new_names", "labels"])
        writer.writerows(rows)


def _make_small(root: Path, layout: str) -> Path:
    rng = np.random.default_rng(SEED)
    base = root / "C-NMC_Leukemia"
    if layout == "kaggle":
        train = base / "training_data"
        prelim_parent = base / "validation_data"
        prelim = prelim_parent / "C-NMC_test_prelim_phase_data"
        final = base / "testing_data" / "C-NMC_test_final_phase_data"
    elif layout == "tcia":
        train = base / "C-NMC_training_data"
        prelim_parent = base / "C-NMC_test_prelim_phase_data"
        prelim = prelim_parent / "C-NMC_test_prelim_phase_data"
        final = base / "C-NMC_test_final_phase_data" / "C-NMC_test_final_phase_data"
    else:
        raise ValueError(f"layout {layout!r}; expected 'kaggle' or 'tcia'")
    for fold, classes in TRAIN.items():
        for cls, subjects in classes.items():
            for subject, n in subjects.items():
                for i in range(n):
                    name = f"UID_{subject}_{i + 1}_{1 + i % 2}_{cls}.bmp"
                    _write(train / f"fold_{fold}" / cls / name, _bmp(rng, SIZE))
    rows = []
    for k, (patient_id, label) in enumerate(PRELIM, start=1):
        _write(prelim / f"{k}.bmp", _bmp(rng, SIZE))
        rows.append((patient_id, f"{k}.bmp", label))
    _write_csv(prelim_parent / CSV_NAME, rows)
    for k in range(1, N_FINAL + 1):
        _write(final / f"{k}.bmp", _bmp(rng, SIZE))
    return base


def _fake_labels(names: list[str], rng: np.random.Generator) -> list[tuple[str, str, int]]:
    """Plausible CSV rows for the preliminary-test images ``N.bmp``.

    The real CSV's content is not available (the file list names it only), so the labels and
    ``Patient_ID`` values are generated: a seeded shuffle with the published class counts
    (1,219 all and 648 hem of 1,867; the same proportion for another count), and subjects that
    do not occur in the training folds (ALL 53..66, healthy H49..H60).
    """
    n = len(names)
    n_all = round(n * 1219 / 1867)
    labels = rng.permutation(np.r_[np.ones(n_all, int), np.zeros(n - n_all, int)])
    counter: dict[str, int] = {}
    rows = []
    for name, label in zip(names, labels.tolist(), strict=True):
        subject = f"{rng.integers(53, 67)}" if label == 1 else f"H{rng.integers(49, 61)}"
        counter[subject] = counter.get(subject, 0) + 1
        image, cell = divmod(counter[subject] - 1, 3)
        cls = "all" if label == 1 else "hem"
        rows.append((f"UID_{subject}_{image + 1}_{cell + 1}_{cls}.bmp", name, label))
    return rows


def _make_from_list(root: Path, filelist: Path) -> Path:
    rng = np.random.default_rng(SEED)
    paths = [p.strip() for p in filelist.read_text().splitlines() if p.strip()]
    pool = [_bmp(rng, 4) for _ in range(16)]
    made: set[Path] = set()
    csv_paths = []
    prelim: list[str] = []
    for k, rel in enumerate(paths):
        path = root / rel
        if path.name == CSV_NAME:
            csv_paths.append(path)
            continue
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        path.write_bytes(pool[k % len(pool)])
        if path.parent.name == "C-NMC_test_prelim_phase_data":
            prelim.append(path.name)
    if len(csv_paths) != 1:
        raise ValueError(f"{filelist}: expected one {CSV_NAME}, found {len(csv_paths)}")
    prelim.sort(key=lambda n: int(re.sub(r"\D", "", n) or 0))
    _write_csv(csv_paths[0], _fake_labels(prelim, rng))
    return root / Path(paths[0]).parts[0]


def make(root: Path, filelist: Path | None = None, *, layout: str = "kaggle") -> Path:
    """Write the fake tree under ``root`` and return the dataset folder (``C-NMC_Leukemia``).

    Args:
        root: Output folder (created if needed).
        filelist: The real file list to mirror; ``None`` for the small hand-made tree.
        layout: ``"kaggle"`` or ``"tcia"`` (small tree only; the list fixes its own layout).

    Returns:
        The dataset folder.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if filelist is not None:
        return _make_from_list(root, Path(filelist))
    return _make_small(root, layout)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--filelist", type=Path, default=None)
    parser.add_argument("--layout", choices=["kaggle", "tcia"], default="kaggle")
    args = parser.parse_args()
    print(make(args.out, args.filelist, layout=args.layout))
