"""Macenko stain normalisation: accuracy against torchstain / staintools, and speed.

Accuracy (``accuracy``): the 400 real images of ``../shared/data/segmentation_WBC`` at 224x224,
each normaliser fitted on the same reference image; per image, the mean absolute difference of
the normalised images (grey levels of 255) and the larger angle between the two estimates'
hematoxylin / eosin vectors. ``MacenkoNormalizer`` runs twice: with its default sampled
estimate and with ``sample=None`` (every pixel); the sampled one is also compared with the
full-pixel one. torchstain's torch Macenko is the same algorithm; staintools estimates
concentrations by lasso (and uses its own tissue mask), so it is reported, not matched.

Speed (``speed``): images/s of ``MacenkoNormalizer`` on a batch of 64 and one image at a time,
against torchstain's and staintools' per-image loops over the same images, in one run (CPU, 2
threads; the best of ``--repeats`` timings, which a busy machine disturbs least); on CUDA, when
available, ``MacenkoNormalizer`` images/s too. The record holds the load average before and
after the timings.

Run: ``python benchmarks/stain.py [--batch 64] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import math
import os
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


def _summary(values: list[tuple[float, float, float]], failures: int) -> dict[str, float]:
    arr = np.array(values)
    return {
        "images": len(arr),
        "failures": failures,
        "mad_mean": float(arr[:, 0].mean()),
        "mad_median": float(np.median(arr[:, 0])),
        "mad_max": float(arr[:, 0].max()),
        "share_mad_le_2": float((arr[:, 0] <= 2).mean()),
        "tissue_mad_mean": float(arr[:, 1].mean()),
        "tissue_mad_max": float(arr[:, 1].max()),
        "angle_mean": float(arr[:, 2].mean()),
        "angle_max": float(arr[:, 2].max()),
        "share_angle_le_1": float((arr[:, 2] <= 1).mean()),
    }


def accuracy(images: torch.Tensor, reference: int = 0) -> dict[str, dict[str, float]]:
    """Agreement of ``MacenkoNormalizer`` with torchstain (and staintools when installed).

    Returns, per comparison, the mean / median / max MAD (grey levels) over images, the share of
    images with MAD <= 2, and the mean / max stain-vector angle (degrees) and the share within
    1 degree. The ``*_tissue`` figures measure MAD only on pixels the library normalises
    (background kept as it is); the plain ones turn background preservation off (torchstain
    recomposes every pixel). Comparisons: ``torchstain`` (the default, sampled estimate),
    ``torchstain_every_pixel`` (``sample=None``), ``every_pixel`` (sampled against
    ``sample=None``) and ``staintools`` (the default).
    """
    import torchstain

    ref = images[reference]
    samples = {"sampled": MacenkoNormalizer().sample, "full": None}
    ours = {name: MacenkoNormalizer(sample=sample).fit(ref) for name, sample in samples.items()}
    out_all, out, stains = {}, {}, {}
    for name, normalizer in ours.items():
        out[name] = normalizer.normalize(images)[0].float()
        keep_all = MacenkoNormalizer(sample=normalizer.sample, preserve_background=False)
        out_all[name] = keep_all.fit(ref).normalize(images)[0].float()
        stains[name] = normalizer.estimate(images).stains
    est = ours["full"].estimate(images)
    background = est.background.view(len(images), *images.shape[2:])

    def row(
        i: int, other: torch.Tensor, other_stains: torch.Tensor, name: str
    ) -> tuple[float, ...]:
        diff = (other - out_all[name][i]).abs()
        tissue_diff = (other - out[name][i]).abs()[:, ~background[i]]
        angle = max(_angle(other_stains[:, k], stains[name][i, :, k]) for k in range(2))
        return float(diff.mean()), float(tissue_diff.mean()), angle

    rows: dict[str, list[tuple[float, float, float]]] = {
        "torchstain": [], "torchstain_every_pixel": [], "every_pixel": [], "staintools": []
    }  # fmt: skip
    failures = dict.fromkeys(rows, 0)
    for i in range(len(images)):
        rows["every_pixel"].append(row(i, out_all["full"][i], stains["full"][i], "sampled"))
    ts = torchstain.normalizers.MacenkoNormalizer(backend="torch")
    ts.fit(ref)
    for i, image in enumerate(images):
        try:
            norm, _, _ = ts.normalize(image, stains=False)
            ts_stains, _, _ = ts._TorchMacenkoNormalizer__compute_matrices(image, 240, 1, 0.15)
        except Exception:  # torchstain fails on some inputs; count them
            failures["torchstain"] += 1
            continue
        norm = norm.permute(2, 0, 1).float()
        rows["torchstain"].append(row(i, norm, ts_stains, "sampled"))
        rows["torchstain_every_pixel"].append(row(i, norm, ts_stains, "full"))
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
                st_stains = torch.from_numpy(extractor.get_stain_matrix(arr)).float().T
            except Exception:  # staintools raises on empty tissue masks
                failures["staintools"] += 1
                continue
            rows["staintools"].append(row(i, norm, st_stains, "sampled"))
    failures["torchstain_every_pixel"] = failures["torchstain"]
    return {name: _summary(v, failures[name]) for name, v in rows.items() if v}


def _rate(fn: Any, n_images: int, repeats: int) -> float:
    """Images/s of the fastest of ``repeats`` calls after a warm-up (others' load only slows)."""
    fn()  # warm-up
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return n_images / best


def speed(images: torch.Tensor, batch: int, repeats: int) -> dict[str, float]:
    """Images/s of the normaliser (batched, one image at a time, every pixel) and of
    torchstain's / staintools' per-image loops, with the load average around the timings."""
    import torchstain

    x = images[:batch]
    ours = MacenkoNormalizer().fit(images[0])
    full = MacenkoNormalizer(sample=None).fit(images[0])
    ts = torchstain.normalizers.MacenkoNormalizer(backend="torch")
    ts.fit(images[0])
    figures = {"load_before": os.getloadavg()[0]}
    figures["torchstain_img_s"] = _rate(
        lambda: [ts.normalize(im, stains=False) for im in x], len(x), max(1, repeats // 2)
    )
    figures["ours_img_s"] = _rate(lambda: ours.normalize(x), len(x), repeats)
    figures["ours_single_img_s"] = _rate(
        lambda: [ours.normalize(im.unsqueeze(0)) for im in x], len(x), max(1, repeats // 2)
    )
    figures["ours_every_pixel_img_s"] = _rate(lambda: full.normalize(x), len(x), repeats)
    try:
        import staintools

        st = staintools.StainNormalizer(method="macenko")
        st.fit(images[0].permute(1, 2, 0).contiguous().numpy())
        arrays = [im.permute(1, 2, 0).contiguous().numpy() for im in x]
        figures["staintools_img_s"] = _rate(lambda: [st.transform(a) for a in arrays], len(x), 1)
    except ImportError:
        pass
    figures["load_after"] = os.getloadavg()[0]
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
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-accuracy", action="store_true", help="speed only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not (SHARED_DATA / "segmentation_WBC").is_dir():
        sys.exit(
            f"{SHARED_DATA / 'segmentation_WBC'} not found: the benchmark needs the real images"
        )
    images = real_images()

    acc = {} if args.skip_accuracy else accuracy(images)
    rows = [
        (
            name,
            f"{r['images']:.0f} ({r['failures']:.0f} failed)",
            f"{r['mad_mean']:.2f} / {r['mad_median']:.2f} / {r['mad_max']:.2f}",
            f"{r['share_mad_le_2']:.1%}",
            f"{r['tissue_mad_mean']:.2f} / {r['tissue_mad_max']:.2f}",
            f"{r['angle_mean']:.3f} / {r['angle_max']:.3f}",
            f"{r['share_angle_le_1']:.1%}",
        )
        for name, r in acc.items()
    ]
    header = (
        "against", "images", "MAD all px mean/median/max", "MAD<=2",
        "MAD tissue px mean/max", "angle deg mean/max", "angle<=1",
    )  # fmt: skip
    if acc:
        print("Accuracy on segmentation_WBC, 224x224 (MAD in grey levels of 255)")
        print(table(rows, header))

    fig = speed(images, args.batch, args.repeats)
    ts_rate = fig["torchstain_img_s"]
    speed_rows = []
    for key, label in (
        ("ours_img_s", f"MacenkoNormalizer, batch of {args.batch}"),
        ("ours_single_img_s", "MacenkoNormalizer, one image at a time"),
        ("ours_every_pixel_img_s", f"MacenkoNormalizer(sample=None), batch of {args.batch}"),
        ("torchstain_img_s", "torchstain per-image loop"),
        ("staintools_img_s", "staintools per-image loop"),
    ):
        if key in fig:
            st_rate = fig.get("staintools_img_s")
            vs_st = f"{fig[key] / st_rate:.1f}x" if st_rate else "-"
            speed_rows.append((label, f"{fig[key]:.0f}", f"{fig[key] / ts_rate:.1f}x", vs_st))
    if "ours_cuda_img_s" in fig:
        speed_rows.append(
            ("MacenkoNormalizer (batched, CUDA)", f"{fig['ours_cuda_img_s']:.0f}", "-", "-")
        )
    print(
        f"\nSpeed, batch {args.batch}, 224x224, {args.threads} CPU threads, best of "
        f"{args.repeats}; load average {fig['load_before']:.2f} before, "
        f"{fig['load_after']:.2f} after"
    )
    print(table(speed_rows, ("normaliser", "images/s", "vs torchstain", "vs staintools")))
    record = {"accuracy": acc, "speed": fig, "batch": args.batch, "threads": args.threads}
    print(f"\nrecord appended to {append_record('stain', record)}")


if __name__ == "__main__":
    main()
