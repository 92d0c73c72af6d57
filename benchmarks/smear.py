"""Seconds per whole 2592x1944 smear field (ALL-IDB1's size), split into its stages.

A :class:`~leukemia_wbc.data.SyntheticSmear` field of 2592x1944 pixels with 15-25 white cells
goes through :class:`~leukemia_wbc.evaluation.SmearAnalyzer`'s stages, each timed on its own
(median of ``--repeats`` runs after one warm-up):

* detection by the classical detector, the lightweight Mask R-CNN (tiles of 1024 pixels,
  overlap 192) and the hybrid;
* cropping: the cell and nucleus-mask crops of every detected cell at 224x224;
* classification of those crops by the paper's dual-branch network (ResNet-50 + MobileNetV2).

Reference, in the same run: torchvision's standard Mask R-CNN (ResNet-50 FPN, the same tiles
and no resizing), so the lightweight network's speed is a ratio. The ratio is taken on the
networks' forward passes over the tiles with no score threshold and 30 boxes per tile for
both, so that neither does more mask and box work for finding more (the reference is never
trained). The end-to-end detection rows include thresholding, full-size masks and the mask NMS.
Without ``--weights`` the lightweight network is randomly initialised too; cropping and
classification run on the classical detector's cells.

Run: ``python benchmarks/smear.py [--threads 2] [--repeats 3] [--weights mask_rcnn.pt]``;
CUDA figures are added when a GPU is present.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
from torchvision.models.detection import maskrcnn_resnet50_fpn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import append_record, median_seconds, table

from leukemia_wbc.smear import SyntheticSmear
from leukemia_wbc.smear.analysis import SmearAnalyzer
from leukemia_wbc.smear.detections import tile_starts
from leukemia_wbc.smear.detectors import ClassicalCellDetector, HybridCellDetector
from leukemia_wbc.smear.mask_rcnn import MaskRCNNCellDetector, create_mask_rcnn
from leukemia_wbc.tasks import DualBranchClassifier

SIZE = (1944, 2592)


def _standard_mask_rcnn(reference: torch.nn.Module) -> torch.nn.Module:
    """torchvision's ResNet-50 FPN Mask R-CNN with the lightweight one's transform (no resize)."""
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=2,
                                  box_detections_per_img=30)  # fmt: skip
    model.transform = reference.transform
    return model


def _tiles(image: torch.Tensor, tile: int = 1024, overlap: int = 192) -> list[torch.Tensor]:
    """The float tiles that ``detect_tiled`` hands the network (the same starts)."""
    _, h, w = image.shape
    x = image.float() / 255
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    return [x[:, y : y + tile, c : c + tile] for y in ys for c in xs]


def _forward(model: torch.nn.Module, tiles: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for t in tiles:
            model([t])


def run(device: str, weights: str | None, repeats: int) -> dict[str, Any]:
    """Time every stage on ``device``."""
    torch.manual_seed(0)
    image = SyntheticSmear(1, size=SIZE, seed=0, cells_per_field=(15, 25))[0]["image"]
    light = create_mask_rcnn(weights=weights, detections_per_image=30).to(device)
    standard = _standard_mask_rcnn(light).to(device)
    threshold = 0.5 if weights else 0.0
    network = MaskRCNNCellDetector(light, score_threshold=threshold)
    reference = MaskRCNNCellDetector(standard, score_threshold=threshold)  # type: ignore[arg-type]
    classical = ClassicalCellDetector()
    hybrid = HybridCellDetector(classical, network)
    gpu_image = image.to(device)
    figures: dict[str, Any] = {}
    for name, detect in (("classical", classical), ("mask_rcnn", network), ("hybrid", hybrid),
                         ("standard_mask_rcnn", reference)):  # fmt: skip
        found = detect(gpu_image)
        figures[f"detect_{name}_s"] = median_seconds(lambda d=detect: d(gpu_image), repeats, device)
        figures[f"cells_{name}"] = len(found)
    # the fair ratio: both networks forward every tile and run their heads on exactly 30
    # boxes per tile (no score threshold), so neither does more work for finding more
    tiles = _tiles(gpu_image)
    for name, model in (("light", light), ("standard", standard)):
        model.eval().roi_heads.score_thresh = 0.0
        figures[f"forward_{name}_s"] = median_seconds(
            lambda m=model: _forward(m, tiles), repeats, device
        )
    figures["tiles"] = len(tiles)
    clf = DualBranchClassifier(num_classes=4).to(device)
    clf.classes = ("ALL", "AML", "CLL", "normal")
    analyzer = SmearAnalyzer(classical, clf, size=224)
    cells = classical(image).to(device)
    crops, masks = analyzer.crops(gpu_image, cells)
    figures["crop_s"] = median_seconds(lambda: analyzer.crops(gpu_image, cells), repeats, device)
    figures["classify_s"] = median_seconds(lambda: analyzer.classify(crops, masks), repeats, device)
    figures["cells_classified"] = len(cells)
    figures["light_params_m"] = sum(p.numel() for p in light.parameters()) / 1e6
    figures["standard_params_m"] = sum(p.numel() for p in standard.parameters()) / 1e6
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--weights", default=None, help="trained lightweight Mask R-CNN")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    record: dict[str, Any] = {"threads": args.threads, "weights": args.weights, "size": SIZE}
    for device in devices:
        f = run(device, args.weights, args.repeats)
        record[device] = f
        name = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {args.threads} threads"
        total = f["detect_hybrid_s"] + f["crop_s"] + f["classify_s"]
        rows = [
            (stage, f"{f[key]:.3f}", extra)
            for stage, key, extra in (
                ("detect: classical", "detect_classical_s", f"{f['cells_classical']} cells"),
                ("detect: Mask R-CNN (MobileNetV3 FPN)", "detect_mask_rcnn_s",
                 f"{f['light_params_m']:.1f} M params"),
                ("detect: hybrid", "detect_hybrid_s", ""),
                ("reference: Mask R-CNN (ResNet-50 FPN)", "detect_standard_mask_rcnn_s",
                 f"{f['standard_params_m']:.1f} M params; finds {f['cells_standard_mask_rcnn']}"),
                ("network forward, lightweight", "forward_light_s",
                 f"{f['tiles']} tiles, 30 boxes per tile"),
                ("network forward, ResNet-50 FPN", "forward_standard_s",
                 f"lightweight {f['forward_standard_s'] / f['forward_light_s']:.1f}x faster"),
                ("crop 224x224", "crop_s", f"{f['cells_classified']} cells"),
                ("classify (ResNet-50 + MobileNetV2)", "classify_s", ""),
            )
        ]  # fmt: skip
        rows.append(("field total (hybrid + crop + classify)", f"{total:.3f}", ""))
        print(f"\n{SIZE[1]}x{SIZE[0]} smear field, {name}"
              f"{'' if args.weights else ', untrained networks'}")  # fmt: skip
        print(table(rows, ("stage", "seconds", "")))
    print(f"\nrecord appended to {append_record('smear', record)}")


if __name__ == "__main__":
    main()
