"""Dual-branch inference speed against the machine's own matrix-multiply rate.

``DualBranchNet`` (ResNet-50 on the 224x224 cell + MobileNetV2 on the 128x128 nucleus crop, the
crop included) in ``inference_mode``, channels-last: latency at batch 1 and throughput at
batch 32, in float32 and under bfloat16 autocast. The achieved GFLOP/s (FLOPs counted by
``torch.utils.flop_counter``) is reported as a fraction of the rate of a large matrix product
in the same dtype, measured in the same run: the reference of the claim (target >= 50 %).
On CUDA, when available: latency per image at batch 1 (the paper reports 25 ms on an RTX 3080)
and throughput at batch 256, and the batch-1 latency with the networks compiled as
``TrainedModel(compile="reduce-overhead")`` does (CUDA graphs).

Run: ``python benchmarks/inference.py [--threads 2] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import append_record, median_seconds, table

from leukemia_wbc.models import DualBranchNet
from leukemia_wbc.models.compiled import CompiledForward


def _batch(n: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    image = torch.randn(n, 3, 224, 224, generator=gen)
    mask = torch.zeros(n, 1, 224, 224, dtype=torch.uint8)
    mask[:, :, 60:160, 70:150] = 1
    image = image.to(device).contiguous(memory_format=torch.channels_last)
    return image, mask.to(device)


@contextlib.contextmanager
def _precision(dtype: torch.dtype, device: str) -> Iterator[None]:
    if dtype == torch.float32:
        yield
    else:
        with torch.autocast(device, dtype=dtype):
            yield


def matmul_rate(dtype: torch.dtype, device: str, repeats: int) -> float:
    """GFLOP/s of a 2048x2048 matrix product in ``dtype`` (the reference of the claim)."""
    n = 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    with torch.inference_mode():
        seconds = median_seconds(lambda: a @ b, repeats, device, warmup=2)
    return 2 * n**3 / seconds / 1e9


def model_flops(net: DualBranchNet, image: torch.Tensor, mask: torch.Tensor) -> int:
    """FLOPs of one ``forward_masked`` pass (convolutions and matrix products)."""
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        net.forward_masked(image, mask)
    return int(counter.get_total_flops())


def measure(net: DualBranchNet, device: str, batch: int, dtype: torch.dtype, repeats: int) -> float:
    """Median seconds per batch of ``forward_masked`` at ``batch`` under ``dtype``."""
    image, mask = _batch(batch, device)

    def run() -> None:
        with torch.inference_mode(), _precision(dtype, device):
            net.forward_masked(image, mask)

    return median_seconds(run, repeats, device, warmup=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = DualBranchNet(4).eval().to(memory_format=torch.channels_last)
    flops_per_image = model_flops(net, *_batch(1, "cpu"))
    rows: list[tuple[str, ...]] = []
    record: dict[str, Any] = {"gflops_per_image": flops_per_image / 1e9, "threads": args.threads}
    record["cpu"] = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16 autocast", torch.bfloat16)):
        peak = matmul_rate(dtype, "cpu", args.repeats)
        latency = measure(net, "cpu", 1, dtype, args.repeats)
        per_batch = measure(net, "cpu", 32, dtype, max(2, args.repeats // 2))
        throughput = 32 / per_batch
        achieved = flops_per_image * throughput / 1e9
        rows.append((name, f"{latency * 1e3:.0f}", f"{throughput:.1f}", f"{achieved:.0f}",
                     f"{peak:.0f}", f"{achieved / peak:.0%}"))  # fmt: skip
        record["cpu"][name] = {"latency_ms_b1": latency * 1e3, "img_s_b32": throughput,
                               "gflops": achieved, "matmul_gflops": peak}  # fmt: skip
    print(f"DualBranchNet (resnet50 + mobilenetv2_100), 224x224, {flops_per_image / 1e9:.2f} "
          f"GFLOP/image, CPU, {args.threads} threads, channels-last, inference_mode")  # fmt: skip
    header = ("precision", "latency b1 ms", "img/s b32", "GFLOP/s", "matmul GFLOP/s", "of matmul")
    print(table(rows, header))
    if torch.cuda.is_available():
        gpu = net.cuda()
        cuda_rows = []
        record["cuda"] = {"device": torch.cuda.get_device_name()}
        for name, dtype in (("float32", torch.float32), ("bfloat16 autocast", torch.bfloat16)):
            latency = measure(gpu, "cuda", 1, dtype, args.repeats * 4)
            throughput = 256 / measure(gpu, "cuda", 256, dtype, args.repeats)
            cuda_rows.append((name, f"{latency * 1e3:.1f}", f"{throughput:.0f}"))
            record["cuda"][name] = {"latency_ms_b1": latency * 1e3, "img_s_b256": throughput}
        # TrainedModel(compile="reduce-overhead"): the networks under CUDA graphs, batch 1
        compiled = CompiledForward(gpu, "reduce-overhead")
        with compiled.active():
            for _ in range(3):  # compile, then record the graph
                measure(gpu, "cuda", 1, torch.float32, 1)
            latency = measure(gpu, "cuda", 1, torch.float32, args.repeats * 4)
        name = "float32, compiled (reduce-overhead)"
        cuda_rows.append((name, f"{latency * 1e3:.1f}", "-"))
        record["cuda"][name] = {"latency_ms_b1": latency * 1e3}
        print(f"\nCUDA ({torch.cuda.get_device_name()}); the paper reports 25 ms on an RTX 3080")
        print(table(cuda_rows, ("precision", "latency b1 ms", "img/s b256")))
    print(f"\nrecord appended to {append_record('inference', record)}")


if __name__ == "__main__":
    main()
