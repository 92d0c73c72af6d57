"""SmearAnalyzer: crops, counts, the blast share and its verdict, overlays; detector scores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from leukemia_wbc.smear import (
    Detections,
    SmearAnalyzer,
    SyntheticSmear,
    blast_share_interval,
    compare_detectors,
    detector_table,
    save_smear_overlay,
)

BLUE, GREEN = (40, 40, 200), (40, 200, 40)


class _ColourClassifier(nn.Module):
    """Calls a crop ``ALL`` when its nucleus pixels are bluer than green, else ``normal``.

    It checks that the analyzer hands it the detector's nucleus masks.
    """

    classes = ("ALL", "AML", "CLL", "normal")

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))
        self.mask_areas: list[int] = []

    def forward_batch(self, batch: dict[str, Any]) -> Tensor:
        image, mask = batch["image"], batch["mask"].bool()
        self.mask_areas += mask.flatten(1).sum(1).tolist()
        inside = mask.expand_as(image)
        mean = (image * inside).flatten(2).sum(2) / inside.flatten(2).sum(2).clamp_min(1)
        blue = mean[:, 2] > mean[:, 1]
        logits = torch.full((len(image), 4), -5.0)
        logits[blue, 0] = 5.0
        logits[~blue, 3] = 5.0
        return logits


def _scene() -> tuple[Tensor, Detections]:
    """A white 120x200 image with 3 blue and 2 green squares, and their detections."""
    image = torch.full((3, 120, 200), 255, dtype=torch.uint8)
    specs = [(10, 10, BLUE), (60, 10, BLUE), (110, 10, BLUE), (10, 70, GREEN), (176, 90, GREEN)]
    masks = torch.zeros(len(specs), 120, 200, dtype=torch.bool)
    boxes = []
    for k, (x, y, colour) in enumerate(specs):
        image[:, y : y + 20, x : x + 20] = torch.tensor(colour, dtype=torch.uint8).view(3, 1, 1)
        masks[k, y + 4 : y + 16, x + 4 : x + 16] = True
        boxes.append([x, y, x + 20, y + 20])
    n = len(specs)
    det = Detections(torch.tensor(boxes, dtype=torch.float32), masks, torch.ones(n),
                     torch.ones(n, dtype=torch.long))  # fmt: skip
    return image, det


class _Fixed:
    def __init__(self, det: Detections) -> None:
        self.det = det

    def __call__(self, image: Tensor) -> Detections:
        return self.det


def _analyzer(det: Detections, **kwargs: Any) -> tuple[SmearAnalyzer, _ColourClassifier]:
    clf = _ColourClassifier()
    analyzer = SmearAnalyzer(_Fixed(det), clf, size=32, **kwargs)  # type: ignore[arg-type]
    return analyzer, clf


def test_counts_blast_share_and_verdict() -> None:
    image, det = _scene()
    analyzer, clf = _analyzer(det)
    result = analyzer.analyze(image)
    assert result.counts == {"ALL": 3, "AML": 0, "CLL": 0, "normal": 2}
    assert result.n_blasts == 3 and result.blast_share == pytest.approx(0.6)
    _, low, high = blast_share_interval(3, 5)
    assert result.blast_interval == pytest.approx((low, high))
    assert result.verdict == "above"  # Wilson 95 %: 0.23-0.88, all above 20 %
    assert result.blast_centroids().shape == (3, 2)
    # the nucleus masks reached the classifier, scaled to the crop: 12 of 20 pixels per side
    # of a 1.7 x 20 pixel crop resized to 32
    expected = (12 * 32 / 34) ** 2
    assert np.allclose(clf.mask_areas, expected, rtol=0.25)
    rows = result.to_rows()
    assert [r["class"] for r in rows] == ["ALL", "ALL", "ALL", "normal", "normal"]
    assert rows[0]["x"] == pytest.approx(20.0, abs=0.6) and rows[0]["p_ALL"] > 0.99
    assert "3 = 60.0 %" in result.summary()


def test_verdicts_below_and_without_cells() -> None:
    image, det = _scene()
    green = Detections(det.boxes[3:], det.masks[3:], det.scores[3:], det.labels[3:])
    many = Detections(
        green.boxes.repeat(15, 1), green.masks.repeat(15, 1, 1), green.scores.repeat(15),
        green.labels.repeat(15),
    )  # fmt: skip
    assert _analyzer(many)[0].analyze(image).verdict == "below"  # 0 of 30: CI up to 11 %
    none = _analyzer(Detections.empty(120, 200))[0].analyze(image)
    assert none.verdict == "no cells" and np.isnan(none.blast_share) and len(none.to_rows()) == 0


def test_crops_are_centred_and_kept_inside_the_image() -> None:
    image, det = _scene()
    analyzer, _ = _analyzer(det, margin=0.35)
    crops, masks = analyzer.crops(image, det)
    assert crops.shape == (5, 3, 32, 32) and masks.shape == (5, 1, 32, 32)
    centre = crops[0, :, 14:18, 14:18].float().mean((1, 2))
    assert centre[2] > 150 and centre[1] < 80  # the blue square sits in the middle
    # the last square touches the right border: its crop is shifted inside, not padded black
    assert int(crops[4].float().mean(0).min()) > 30
    assert masks[4, 0, :, 16:].sum() > masks[4, 0, :, :16].sum()  # the cell sits right of centre


def test_scale_maps_centroids_back_to_the_original_image() -> None:
    image, det = _scene()
    half = Detections(det.boxes / 2, det.masks[:, ::2, ::2], det.scores, det.labels)
    analyzer, _ = _analyzer(half, scale=0.5)
    result = analyzer.analyze(image)
    assert result.image.shape == (60, 100, 3)
    assert result.centroids()[0] == pytest.approx([20.0, 20.0], abs=1.0)


def test_inputs_and_blast_classes(tmp_path: Path) -> None:
    image, det = _scene()
    analyzer, _ = _analyzer(det)
    path = tmp_path / "smear.png"
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)
    from_file = analyzer.analyze(path)
    assert from_file.path == str(path) and from_file.n_blasts == 3
    assert analyzer.analyze(image.permute(1, 2, 0).numpy()).n_blasts == 3
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        analyzer.analyze(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="blast_classes"):
        SmearAnalyzer(_Fixed(det), _ColourClassifier(), blast_classes=["myelocyte"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="argument 'margin' must be >= 0"):
        SmearAnalyzer(_Fixed(det), _ColourClassifier(), margin=-1)  # type: ignore[arg-type]
    only_cll = SmearAnalyzer(_Fixed(det), _ColourClassifier(), blast_classes=["CLL"])  # type: ignore[arg-type]
    assert only_cll.analyze(image).n_blasts == 0


def test_overlay_marks_blasts_and_is_not_overwritten(tmp_path: Path) -> None:
    image, det = _scene()
    result = _analyzer(det)[0].analyze(image)
    picture = result.overlay()
    assert picture.shape == (120 + 48, 200, 3)
    red = (picture[..., 0] > 200) & (picture[..., 1] < 60) & (picture[..., 2] < 60)
    assert red[48:].sum() > 50  # blast outlines and boxes drawn red
    out = save_smear_overlay(result, tmp_path / "o.png")
    assert Image.open(out).size == (200, 168)
    with pytest.raises(FileExistsError, match=r"o\.png"):
        save_smear_overlay(result, out)


class _Oracle:
    """Detects exactly the annotated cells of a SyntheticSmear."""

    def __init__(self, smears: SyntheticSmear) -> None:
        self.by_image = {smears[i]["image"].sum().item(): smears[i] for i in range(len(smears))}

    def __call__(self, image: Tensor) -> Detections:
        s = self.by_image[image.sum().item()]
        n = len(s["labels"])
        return Detections(s["boxes"], s["masks"].bool(), torch.ones(n),
                          torch.ones(n, dtype=torch.long))  # fmt: skip


def test_compare_detectors_scores_an_oracle_and_a_blind_detector() -> None:
    smears = SyntheticSmear(3, size=192, seed=2, cells_per_field=(3, 4), touching=0.8)
    blind = lambda image: Detections.empty(192, 192)  # noqa: E731
    scores = compare_detectors({"oracle": _Oracle(smears), "blind": blind}, smears,
                               progress=False)  # fmt: skip
    oracle, nothing = scores
    assert oracle.all["map"] == pytest.approx(1.0) and oracle.overlapping["map"] == pytest.approx(
        1.0
    )
    assert nothing.all["map"] == 0.0 and nothing.all["mar_100"] == 0.0
    assert (
        oracle.n_images == 3 and oracle.n_cells >= 9 and 0 < oracle.n_overlapping <= oracle.n_cells
    )
    table = detector_table(scores)
    assert "| oracle | 1.000 |" in table and "| blind | 0.000 |" in table
    with pytest.raises(ValueError, match="empty"):
        compare_detectors({}, smears)
