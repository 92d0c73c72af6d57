"""Data pipeline speed: the DataModule's loader against torchvision's ImageFolder.

Claim measured: images/s of ``WBCDataModule``'s loader (decode + resize in 2 workers, uint8
batches) on the real BMPs of ``../shared/data/segmentation_WBC``, as a ratio to a torchvision
``ImageFolder`` with per-sample ``Resize`` + ``ToTensor`` (float) over the same files, same batch
size and workers, measured in the same run; plus ``SyntheticWBC`` images/s (in process, and in a
2-worker loader).

Run: ``python benchmarks/data_pipeline.py [--epochs 5] [--size 224]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED_DATA, append_record, table

from leukemia_wbc.data import (
    Record,
    SegmentationWBC2018,
    SyntheticWBC,
    WBCDataModule,
    WBCDataset,
)


def images_per_second(loader: DataLoader, epochs: int) -> tuple[float, int]:
    """Iterate ``epochs`` times after one warm-up epoch; return images/s and images seen."""
    for _ in loader:  # warm-up: worker start, page cache
        pass
    n = 0
    start = time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            images = batch["image"] if isinstance(batch, dict) else batch[0]
            n += images.shape[0]
    return n / (time.perf_counter() - start), n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--synthetic", type=int, default=1000, help="SyntheticWBC images to render")
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = SHARED_DATA / "segmentation_WBC"
    rows: list[tuple[str, ...]] = []
    figures: dict[str, float | int] = {
        "size": args.size,
        "batch_size": args.batch_size,
        "workers": args.workers,
    }
    loader_kw = dict(batch_size=args.batch_size, num_workers=args.workers, persistent_workers=True)

    if root.is_dir():
        bmps = sorted(root.glob("Dataset */*.bmp"))
        # reference: torchvision ImageFolder, per-sample PIL Resize + ToTensor (float32)
        ref_ds = datasets.ImageFolder(
            str(root),
            transform=transforms.Compose(
                [transforms.Resize((args.size, args.size)), transforms.ToTensor()]
            ),
            is_valid_file=lambda p: p.endswith(".bmp"),
        )
        ref, _ = images_per_second(DataLoader(ref_ds, **loader_kw), args.epochs)
        # ours: the DataModule's training loader over the same BMPs (image only)
        plain = WBCDataset(
            [Record(str(p), 0 if "Dataset 1" in str(p) else 1, p.stem) for p in bmps],
            ("d1", "d2"),
            size=args.size,
        )
        dm = WBCDataModule(
            plain,
            size=args.size,
            batch_size=args.batch_size,
            num_workers=args.workers,
            split="holdout",
            val_fraction=0.01,
            test_fraction=0.0,
        )
        dm.setup()
        ours_loader = dm._loader(dm.split.train, train=False)
        ours, _ = images_per_second(ours_loader, args.epochs)
        # ours with nucleus + cell masks decoded too (SegmentationWBC2018)
        seg = SegmentationWBC2018(root, size=args.size)
        seg_dm = WBCDataModule(
            seg, size=args.size, batch_size=args.batch_size, num_workers=args.workers
        )
        masks, _ = images_per_second(seg_dm._loader(np.arange(len(seg)), train=False), args.epochs)
        rows += [
            ("torchvision ImageFolder + Resize + ToTensor (reference)", f"{ref:.0f}", "1.00"),
            ("WBCDataModule loader, image only", f"{ours:.0f}", f"{ours / ref:.2f}"),
            (
                "WBCDataModule loader, image + nucleus/cell masks",
                f"{masks:.0f}",
                f"{masks / ref:.2f}",
            ),
        ]
        figures.update(
            reference_img_s=ref,
            datamodule_img_s=ours,
            datamodule_masks_img_s=masks,
            ratio=ours / ref,
            images=len(bmps),
        )
    else:
        print(f"{root} not found: skipping the real-data comparison", file=sys.stderr)

    syn = SyntheticWBC(args.synthetic, size=args.size, seed=0)
    start = time.perf_counter()
    for i in range(len(syn)):
        syn[i]
    in_process = len(syn) / (time.perf_counter() - start)
    syn_dm = WBCDataModule(
        syn, size=args.size, batch_size=args.batch_size, num_workers=args.workers
    )
    syn_loader = syn_dm._loader(np.arange(len(syn)), train=False)
    in_loader, _ = images_per_second(syn_loader, max(1, args.epochs // 2))
    rows += [
        ("SyntheticWBC, in process (1 thread)", f"{in_process:.0f}", "-"),
        (f"SyntheticWBC, WBCDataModule loader, {args.workers} workers", f"{in_loader:.0f}", "-"),
    ]
    figures.update(synthetic_in_process_img_s=in_process, synthetic_loader_img_s=in_loader)
    print(table(rows, ("pipeline", "images/s", "ratio to reference")))
    print(f"\nrecord appended to {append_record('data_pipeline', figures)}")


if __name__ == "__main__":
    main()
