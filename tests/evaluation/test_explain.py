"""Captum attributions: layers, map shapes, the nucleus map's placement, shares and overlays."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from leukemia_wbc.data import SyntheticWBC, WBCDataModule, collate_samples
from leukemia_wbc.evaluation import (
    Explainer,
    attribution_share,
    last_conv_layer,
    nucleus_focus,
    overlay,
)
from leukemia_wbc.models.backbones import create_backbone
from leukemia_wbc.models.nucleus_crop import mask_boxes
from leukemia_wbc.tasks import CellClassifier, DualBranchClassifier, OptimConfig

SIZE = 48


@pytest.fixture(scope="module")
def batch() -> dict[str, Any]:
    ds = SyntheticWBC(6, size=SIZE, seed=4)
    dm = WBCDataModule(ds, size=SIZE, augment=False)
    return dm.device_transform(collate_samples([ds[i] for i in range(6)]), train=False)


@pytest.mark.parametrize(
    ("name", "layer"),
    [("resnet18", "layer4"), ("mobilenetv2_050", "blocks.6"), ("vgg11", "features.20")],
)
def test_gradcam_layer_is_the_last_stage(name: str, layer: str) -> None:
    backbone = create_backbone(name)
    assert last_conv_layer(backbone) is backbone.get_submodule(layer)


def test_layer_fallback_and_error() -> None:
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 8, 3), nn.Flatten())
    assert last_conv_layer(plain) is plain[2]
    with pytest.raises(ValueError, match="no feature_info and no Conv2d"):
        last_conv_layer(nn.Linear(3, 3))


@pytest.mark.parametrize("method", ["gradcam", "integrated_gradients"])
def test_cell_classifier_maps(batch: dict[str, Any], method: Any) -> None:
    torch.manual_seed(0)
    task = CellClassifier("resnet18", num_classes=4, head_hidden=(16,))
    attr = Explainer(task, method, n_steps=8).explain(batch, target=[0, 1, 2, 3, 0, 1])
    assert list(attr.maps) == ["cell"]
    m = attr.maps["cell"]
    assert m.shape == (6, 1, SIZE, SIZE) and torch.isfinite(m).all() and (m >= 0).all()
    assert attr.target.tolist() == [0, 1, 2, 3, 0, 1]
    assert torch.allclose(attr.probs.sum(1), torch.ones(6))
    assert task.training  # the explainer restores the mode


@pytest.mark.parametrize(
    "method",
    # Integrated Gradients on both branches takes 30 s on 2 cores; its maps per branch are also
    # checked by the documented `explain --method integrated_gradients` line (cell model).
    ["gradcam", pytest.param("integrated_gradients", marks=pytest.mark.slow)],
)
def test_dual_branch_maps_one_per_branch(batch: dict[str, Any], method: Any) -> None:
    torch.manual_seed(0)
    task = DualBranchClassifier("resnet18", "mobilenetv2_050", num_classes=4, nucleus_size=32,
                                fusion_features=32, head_hidden=(16,))  # fmt: skip
    attr = Explainer(task, method, n_steps=8).explain(batch)
    assert set(attr.maps) == {"cell", "nucleus"}
    for m in attr.maps.values():
        assert m.shape == (6, 1, SIZE, SIZE) and torch.isfinite(m).all() and (m >= 0).all()
    # The nucleus map is pasted back at its crop's box: nothing outside the box.
    boxes, _ = mask_boxes(batch["mask"])
    nucleus = attr.maps["nucleus"]
    for i, (x0, y0, x1, y1) in enumerate(boxes.long().tolist()):
        outside = nucleus[i, 0].clone()
        outside[y0 : y1 + 1, x0 : x1 + 1] = 0
        assert outside.abs().sum() == 0
        assert nucleus[i, 0, y0 : y1 + 1, x0 : x1 + 1].sum() > 0


def test_share_and_focus_on_known_maps() -> None:
    mask = torch.zeros(2, 1, 4, 4)
    mask[:, :, :2, :2] = 1  # a quarter of the image
    maps = torch.ones(2, 1, 4, 4)
    maps[1, :, :2, :2] = 7.0  # 28 of 40 inside
    share = attribution_share(maps, mask)
    assert share.tolist() == pytest.approx([0.25, 0.7])
    assert torch.isnan(attribution_share(torch.zeros(1, 1, 4, 4), mask[:1])).all()
    focus = nucleus_focus(maps, mask, [0, 1], ("a", "b", "c"))
    assert focus.share[:2].tolist() == pytest.approx([0.25, 0.7])
    assert focus.area[:2].tolist() == pytest.approx([0.25, 0.25])
    assert focus.count.tolist() == [1, 1, 0]
    table = focus.to_markdown()
    assert "| b | 1 | 0.700 | 0.250 | 2.80 |" in table and "| c |" not in table
    with pytest.raises(ValueError, match="differ in shape"):
        attribution_share(maps, mask[:, :, :2])


def test_overlay_is_rgb_uint8() -> None:
    image = torch.full((3, 8, 8), 200, dtype=torch.uint8)
    heat = torch.zeros(8, 8)
    heat[2, 3] = 5.0
    out = overlay(image, heat)
    assert out.shape == (8, 8, 3) and out.dtype.name == "uint8"
    assert (out[0, 0] == 200).all()  # zero heat leaves the pixel as it was
    assert tuple(out[2, 3]) != (200, 200, 200)


def test_unknown_network_and_method_are_refused() -> None:
    task = CellClassifier("resnet18", num_classes=4)
    with pytest.raises(ValueError, match="method must be"):
        Explainer(task, "saliency")  # type: ignore[arg-type]
    task.net = nn.Linear(2, 2)  # a network without a convolution: nothing for Grad-CAM
    with pytest.raises(ValueError, match="Linear has no feature_info and no Conv2d"):
        Explainer(task)


class _TinyCNN(CellClassifier):
    """A user's subclass with its own network and no backbone attribute."""

    def configure_models(self) -> None:
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
            nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, self.num_classes),
        )  # fmt: skip


@pytest.mark.parametrize("method", ["gradcam", "integrated_gradients"])
def test_any_network_of_a_subclass_is_explained(batch: dict[str, Any], method: Any) -> None:
    torch.manual_seed(0)
    task = _TinyCNN(num_classes=4)
    explainer = Explainer(task, method, n_steps=4)
    assert explainer.layers["cell"] is task.net[2]  # its last convolution, found without a name
    attr = explainer.explain(batch)
    assert list(attr.maps) == ["cell"]
    m = attr.maps["cell"]
    assert m.shape == (6, 1, SIZE, SIZE) and torch.isfinite(m).all() and m.sum() > 0


def test_nucleus_classifier_is_explained_on_its_crops(batch: dict[str, Any]) -> None:
    """Its one branch reads the nucleus crop: the map lies inside each nucleus's box."""
    from leukemia_wbc.tasks import NucleusClassifier

    torch.manual_seed(0)
    task = NucleusClassifier("resnet18", num_classes=4, nucleus_size=32, head_hidden=(16,))
    attr = Explainer(task).explain(batch)
    assert list(attr.maps) == ["nucleus"]
    boxes, _ = mask_boxes(batch["mask"])
    for i, (x0, y0, x1, y1) in enumerate(boxes.long().tolist()):
        outside = attr.maps["nucleus"][i, 0].clone()
        outside[y0 : y1 + 1, x0 : x1 + 1] = 0
        assert outside.abs().sum() == 0
    # the probabilities are those of the task's own prediction on the crops
    with torch.no_grad():
        expected = task.eval().forward_batch(batch).softmax(dim=1)
    torch.testing.assert_close(attr.probs, expected)


@pytest.mark.slow
def test_trained_classifier_attribution_concentrates_on_the_nucleus() -> None:
    """The paper's claim, measured: attribution mass inside the nucleus against its area.

    A CellClassifier trained from scratch on SyntheticWBC at 128 px (the last stage is 4x4,
    fine enough to localise), explained on held-out cells with the default Grad-CAM layer and
    with Integrated Gradients. Run with ``pytest -m slow -s`` to see the tables.

    Measured: 0.855 held-out accuracy; Grad-CAM mass in the nucleus 1.53-1.87 times the
    nucleus's area share across the four classes, Integrated Gradients only 0.50-0.75 times
    (reported, not asserted: the methods disagree on this model). About 20 min on 1 thread.
    """
    import lightning.pytorch as pl

    pl.seed_everything(0)
    ds = SyntheticWBC(1600, size=128, seed=3, n_patients=16, difficulty=0.1)
    dm = WBCDataModule(ds, size=128, batch_size=32, split="holdout", augment=True,
                       test_fraction=0.2, num_workers=1)  # fmt: skip
    task = CellClassifier("resnet18", num_classes=4, head_hidden=(64,), dropout=0.2,
                          optim=OptimConfig(lr=1e-3, lr_patience=2))  # fmt: skip
    fit = pl.Trainer(accelerator="cpu", max_epochs=15, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    fit.fit(task, datamodule=dm)
    accuracy = fit.test(task, datamodule=dm, verbose=False)[0]["test_accuracy"]
    print(f"held-out accuracy {accuracy:.3f}")
    assert accuracy > 0.5  # chance is 0.25
    assert dm.split is not None
    cells = [ds[int(i)] for i in dm.split.test[:128]]
    batch = dm.device_transform(collate_samples(cells), train=False)
    ratios = {}
    for method in ("gradcam", "integrated_gradients"):
        attr = Explainer(task, method, n_steps=32).explain(batch)  # type: ignore[arg-type]
        focus = nucleus_focus(attr.maps["cell"], batch["mask"], batch["label"], ds.classes)
        print(method, "\n" + focus.to_markdown())
        ratios[method] = focus.share / focus.area
    assert (ratios["gradcam"] > 1).all()
