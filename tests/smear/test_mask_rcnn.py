"""The lightweight Mask R-CNN, detections, mask NMS and tiled detection."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.models import mobilenet_v3_large
from torchvision.ops import FrozenBatchNorm2d

from leukemia_wbc.smear import (
    ClassicalCellDetector,
    Detections,
    MaskRCNNCellDetector,
    SyntheticSmear,
    create_mask_rcnn,
    detect_tiled,
    mask_nms,
)


def _square_detections(specs: list[tuple[int, int, int, float]], size: int = 64) -> Detections:
    """Detections of square masks ``(x0, y0, side, score)``."""
    masks = torch.zeros(len(specs), size, size, dtype=torch.bool)
    boxes = []
    for k, (x0, y0, side, _) in enumerate(specs):
        masks[k, y0 : y0 + side, x0 : x0 + side] = True
        boxes.append([x0, y0, x0 + side, y0 + side])
    return Detections(
        torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        masks,
        torch.tensor([s[3] for s in specs]),
        torch.ones(len(specs), dtype=torch.long),
    )


def test_network_is_light_and_keeps_the_image_scale() -> None:
    torch.manual_seed(0)
    model = create_mask_rcnn(detections_per_image=5)
    params = sum(p.numel() for p in model.parameters())
    assert params < 10e6  # torchvision's ResNet-50 FPN Mask R-CNN has 44 M
    model.eval()
    with torch.no_grad():
        (out,) = model([torch.rand(3, 200, 296)])
    # no internal resizing: masks come back at the input's own size
    assert out["masks"].shape[-2:] == (200, 296)
    assert len(out["boxes"]) <= 5


def test_training_mode_returns_the_losses() -> None:
    smear = SyntheticSmear(1, size=128, seed=0, cells_per_field=(2, 2))[0]
    model = create_mask_rcnn().train()
    target = {"boxes": smear["boxes"], "labels": torch.ones(2, dtype=torch.long),
              "masks": smear["masks"]}  # fmt: skip
    losses = model([smear["image"].float() / 255], [target])
    assert {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())


def test_weights_round_trip_and_wrong_files(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = create_mask_rcnn().eval()
    path = tmp_path / "det.pt"
    torch.save(model.state_dict(), path)
    again = create_mask_rcnn(weights=path).eval()
    image = [torch.rand(3, 96, 96)]
    with torch.no_grad():
        a, b = model.backbone(torch.stack(image)), again.backbone(torch.stack(image))
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="does not fit this Mask R-CNN"):
        create_mask_rcnn(weights=path, mask_head_layers=(64,))
    with pytest.raises(FileNotFoundError, match="not found"):
        create_mask_rcnn(weights=tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="num_classes"):
        create_mask_rcnn(1)


def test_backbone_weights_from_a_torchvision_file(tmp_path: Path) -> None:
    torch.manual_seed(2)
    reference = mobilenet_v3_large()
    path = tmp_path / "mnv3.pth"
    torch.save(reference.state_dict(), path)
    model = create_mask_rcnn(backbone_weights=path)
    body = model.backbone.body
    assert torch.equal(body["0"][0].weight, reference.features[0][0].weight)
    assert isinstance(body["0"][1], FrozenBatchNorm2d)  # pretrained: batch norm frozen
    torch.save({"nothing": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="mobilenet_v3_large"):
        create_mask_rcnn(backbone_weights=tmp_path / "bad.pth")


def test_detections_centroids_and_selection() -> None:
    det = _square_detections([(10, 20, 10, 0.9), (40, 4, 6, 0.5)])
    centre = det.centroids()
    assert torch.allclose(centre, torch.tensor([[15.0, 25.0], [43.0, 7.0]]))
    assert len(det.select(torch.tensor([1]))) == 1
    assert len(Detections.empty(8, 8)) == 0 and Detections.empty(8, 8).centroids().shape == (0, 2)


def test_mask_nms_removes_duplicates_and_fragments() -> None:
    det = _square_detections(
        [
            (10, 10, 20, 0.6),  # a cell
            (11, 10, 20, 0.9),  # the same cell, higher score: kept first
            (14, 14, 6, 0.8),  # a fragment inside it
            (40, 40, 12, 0.7),  # another cell
        ]
    )
    by_iou = mask_nms(det, iou_threshold=0.5)
    assert by_iou.scores.tolist() == pytest.approx([0.9, 0.8, 0.7])
    both = mask_nms(det, iou_threshold=0.5, containment=0.6)
    assert both.scores.tolist() == pytest.approx([0.9, 0.7])


@pytest.fixture(scope="module")
def field() -> dict[str, torch.Tensor]:
    return SyntheticSmear(1, size=(600, 880), seed=4, cells_per_field=(10, 10))[0]


def test_tiled_detection_matches_the_whole_image(field: dict[str, torch.Tensor]) -> None:
    detector = ClassicalCellDetector()
    whole = detector(field["image"])
    # no NMS at all (an IoU above 1 never happens): the tile cores alone keep each cell once,
    # also where the last tile is pushed back inside the image (rows: tiles at 0 and 200)
    tiled = detect_tiled(detector, field["image"], tile=400, overlap=160, iou_threshold=1.0)
    assert len(whole) >= 8
    assert len(tiled) == len(whole)
    # every cell is found at the same place, with a full-size mask
    assert tiled.masks.shape[-2:] == (600, 880)
    dist = torch.cdist(tiled.centroids(), whole.centroids()).min(1).values
    assert float(dist.max()) < 3.0


def test_tiling_arguments() -> None:
    with pytest.raises(ValueError, match="overlap < tile"):
        detect_tiled(ClassicalCellDetector(), torch.zeros(3, 64, 64, dtype=torch.uint8),
                     tile=32, overlap=32)  # fmt: skip


def test_network_detector_thresholds_and_input_checks() -> None:
    torch.manual_seed(0)
    model = create_mask_rcnn(detections_per_image=10)
    detector = MaskRCNNCellDetector(model, score_threshold=0.0, tile=128, overlap=32)
    found = detector(torch.randint(0, 255, (3, 160, 200), dtype=torch.uint8))
    assert found.masks.shape[-2:] == (160, 200) and found.masks.dtype == torch.bool
    assert len(found) == len(found.scores) == len(found.boxes)
    with pytest.raises(ValueError, match="score_threshold"):
        MaskRCNNCellDetector(model, score_threshold=1.5)
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        detector(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="expected \\[0, 1\\]"):
        detector(torch.full((3, 32, 32), 200.0))
    with pytest.raises(ValueError, match="overlap < tile"):
        MaskRCNNCellDetector(model, tile=100, overlap=100)
