"""Macenko stain normalisation: accuracy against torchstain / staintools, and speed.

Accuracy (``accuracy``): the 400 real images of ``../shared/data/segmentation_WBC`` at 224x224,
each normaliser fitted on the same reference image; per image, the mean absolute difference of
the normalised images (grey levels of 255) and the larger angle between the two estimates'
hematoxylin / eosin vectors. torchstain's torch Macenko is the same algorithm; staintools
estimates concentrations by lasso (and uses its own tissue mask), so it is reported, not matched.

Speed (``speed``): images/s of ``MacenkoNormalizer`` on a batch of 64 against torchstain's and
staintools' per-image loops over the same images, in one run (CPU, 2 threads); on CUDA, when
available, ``MacenkoNormalizer`` images/s too.

Run: ``python benchmarks/stain.py [--batch 64] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED_DATA, append_record, table

from leukemia_wbc.transforms.stain import MacenkoNormalizer


def real_images(size: int = 224) -> torch.Tensor:
    """The 400 segmentation_WBC images as a uint8 batch ``(400, 3, size, size)``."""
    from leukemia_wbc.data import SegmentationWBC2018

    ds = SegmentationWBC2018(SHARED_DATA / "segmentation_WBC", size=size)
    return torch.stack([ds[i]["image"] for i in range(len(ds))])


def _angle(a: torch.Tensor, b: torch.Tensor) -> float:
    cos = float(torch.dot(a / a.norm(), b / b.norm()).clamp(-1.0, 1.0))
    return math.degrees(math.acos(cos))


def accuracy(images: torch.Tensor, reference: int = 0) -> dict[str, dict[str, float]]:
    """Agreement of ``MacenkoNormalizer`` with torchstain (and staintools when installed).

    Returns, per comparison, the mean / median / max MAD (grey levels) over images, the share of
    images with MAD <= 2, and the mean / max stain-vector angle (degrees). The ``*_tissue``
    comparison measures MAD only on pixels the library normalises (background kept as it is);
    the plain one turns background preservation off (torchstain recomposes every pixel).
    """
    import torchstain

    ref = images[reference]
    ours_all = MacenkoNormalizer(preserve_background=False).fit(ref)
    ours = MacenkoNormalizer().fit(ref)
    out_all, _ = ours_all.normalize(images)
    out, _ = ours.normalize(images)
    est = ours.estimate(images)
    background = est.background.view(len(images), *images.shape[2:])

    ts = torchstain.normalizers.MacenkoNormalizer(backend="torch")
    ts.fit(ref)
    rows: dict[str, list[tuple[float, float, float]]] = {"torchstain": [], "staintools": []}
    failures = {"torchstain": 0, "staintools": 0}
    for i, image in enumerate(images):
        try:
            norm, _, _ = ts.normalize(image, stains=False)
            stains, _, _ = ts._TorchMacenkoNormalizer__compute_matrices(image, 240, 1, 0.15)
        except Exception:  # torchstain fails on some inputs; count them
            failures["torchstain"] += 1
            continue
        diff = (norm.permute(2, 0, 1).float() - out_all[i].float()).abs()
        tissue_diff = (norm.permute(2, 0, 1).float() - out[i].float()).abs()[:, ~background[i]]
        angle = max(_angle(stains[:, k], est.stains[i, :, k]) for k in range(2))
        rows["torchstain"].append((float(diff.mean()), float(tissue_diff.mean()), angle))
    try:
        import staintools
    except ImportError:
        staintools = None
    if staintools is not None:
        st = staintools.StainNormalizer(method="macenko")
        st.fit(ref.permute(1, 2, 0).contiguous().numpy())
        extractor = staintools.stain_extraction.macenko_stain_extractor.MacenkoStainExtractor
        for i, image in enumerate(images):
            arr = image.permute(1, 2, 0).contiguous().numpy()
            try:
                norm = torch.from_numpy(st.transform(arr)).permute(2, 0, 1).float()
                stains = torch.from_numpy(extractor.get_stain_matrix(arr)).float().T  # (3, 2)
            except Exception:  # staintools raises on empty tissue masks
                failures["staintools"] += 1
                continue
            diff = (norm - out_all[i].float()).abs()
            tissue_diff = (norm - out[i].float()).abs()[:, ~background[i]]
            angle = max(_angle(stains[:, k], est.stains[i, :, k]) for k in range(2))
            rows["staintools"].append((float(diff.mean()), float(tissue_diff.mean()), angle))
    result: dict[str, dict[str, float]] = {}
    for name, values in rows.items():
        if not values:
            continue
        arr = np.array(values)
        result[name] = {
            "images": len(arr),
            "failures": failures[name],
            "mad_mean": float(arr[:, 0].mean()),
            "mad_median": float(np.median(arr[:, 0])),
            "mad_max": float(arr[:, 0].max()),
            "share_mad_le_2": float((arr[:, 0] <= 2).mean()),
            "tissue_mad_mean": float(arr[:, 1].mean()),
            "tissue_mad_max": float(arr[:, 1].max()),
            "angle_mean": float(arr[:, 2].mean()),
            "angle_max": float(arr[:, 2].max()),
        }
    return result


def _rate(fn: Any, n_images: int, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return n_images * repeats / (time.perf_counter() - start)


def speed(images: torch.Tensor, batch: int, repeats: int) -> dict[str, float]:
    """Images/s of the batched normaliser and of torchstain's / staintools' per-image loops."""
    import torchstain

    x = images[:batch]
    ours = MacenkoNormalizer().fit(images[0])
    whole = MacenkoNormalizer(cpu_chunk=batch).fit(images[0])
    ts = torchstain.normalizers.MacenkoNormalizer(backend="torch")
    ts.fit(images[0])
    figures = {
        "ours_img_s": _rate(lambda: ours.normalize(x), len(x), repeats),
        "ours_whole_batch_img_s": _rate(lambda: whole.normalize(x), len(x), repeats),
        "torchstain_img_s": _rate(
            lambda: [ts.normalize(im, stains=False) for im in x], len(x), repeats
        ),
    }
    try:
        import staintools

        st = staintools.StainNormalizer(method="macenko")
        st.fit(images[0].permute(1, 2, 0).contiguous().numpy())
        arrays = [im.permute(1, 2, 0).contiguous().numpy() for im in x]
        figures["staintools_img_s"] = _rate(lambda: [st.transform(a) for a in arrays], len(x), 1)
    except ImportError:
        pass
    if torch.cuda.is_available():
        gpu = MacenkoNormalizer().fit(images[0]).cuda()
        xg = x.cuda()

        def run() -> None:
            gpu.normalize(xg)
            torch.cuda.synchronize()

        figures["ours_cuda_img_s"] = _rate(run, len(x), repeats * 5)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not (SHARED_DATA / "segmentation_WBC").is_dir():
        sys.exit(
            f"{SHARED_DATA / 'segmentation_WBC'} not found: the benchmark needs the real images"
        )
    images = real_images()

    acc = accuracy(images)
    rows = [
        (
            name,
            f"{r['images']:.0f} ({r['failures']:.0f} failed)",
            f"{r['mad_mean']:.2f} / {r['mad_median']:.2f} / {r['mad_max']:.2f}",
            f"{r['share_mad_le_2']:.1%}",
            f"{r['tissue_mad_mean']:.2f} / {r['tissue_mad_max']:.2f}",
            f"{r['angle_mean']:.3f} / {r['angle_max']:.3f}",
        )
        for name, r in acc.items()
    ]
    header = (
        "against", "images", "MAD all px mean/median/max", "MAD<=2",
        "MAD tissue px mean/max", "angle deg mean/max",
    )  # fmt: skip
    print("Accuracy on segmentation_WBC, 224x224 (MAD in grey levels of 255)")
    print(table(rows, header))

    fig = speed(images, args.batch, args.repeats)
    ref = fig["ours_img_s"]
    speed_rows = [("MacenkoNormalizer (CPU, chunks of 8)", f"{ref:.0f}", "1.00")]
    for key, label in (
        ("ours_whole_batch_img_s", f"MacenkoNormalizer (CPU, all {args.batch} at once)"),
        ("torchstain_img_s", "torchstain per-image loop"),
        ("staintools_img_s", "staintools per-image loop"),
    ):
        if key in fig:
            speed_rows.append((label, f"{fig[key]:.0f}", f"{ref / fig[key]:.1f}x"))
    if "ours_cuda_img_s" in fig:
        speed_rows.append(
            ("MacenkoNormalizer (batched, CUDA)", f"{fig['ours_cuda_img_s']:.0f}", "-")
        )
    print(f"\nSpeed, batch {args.batch}, 224x224, {args.threads} CPU threads")
    print(table(speed_rows, ("normaliser", "images/s", "our speed-up")))
    record = {"accuracy": acc, "speed": fig, "batch": args.batch, "threads": args.threads}
    print(f"\nrecord appended to {append_record('stain', record)}")


if __name__ == "__main__":
    main()
