"""Head, fusion modules and batched nucleus crops."""

from __future__ import annotations

import pytest
import timm
import torch

from leukemia_wbc.models.backbones import feature_dim
from leukemia_wbc.models.heads import (
    AttentionFusion,
    ClassifierHead,
    GatedFusion,
    make_fusion,
)
from leukemia_wbc.models.nucleus_crop import crop_nucleus, mask_boxes


def test_head_logits_and_probabilities() -> None:
    head = ClassifierHead(16, 3, hidden=(8, 4), dropout=0.3).eval()
    x = torch.randn(5, 16)
    logits = head(x)
    assert logits.shape == (5, 3)
    probs = head.predict_proba(x)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(5))
    assert torch.equal(probs.argmax(1), logits.argmax(1))


def test_head_dropout_is_active_in_training_only() -> None:
    head = ClassifierHead(32, 2, hidden=(32,), dropout=0.5)
    x = torch.randn(4, 32)
    torch.manual_seed(0)
    a = head.train()(x)
    b = head(x)
    assert not torch.allclose(a, b)
    head.eval()
    assert torch.equal(head(x), head(x))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"in_features": 4, "num_classes": 1}, "num_classes"),
        ({"in_features": 0, "num_classes": 2}, "widths"),
        ({"in_features": 4, "num_classes": 2, "dropout": 1.0}, "dropout"),
    ],
)
def test_head_rejects_bad_arguments(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ClassifierHead(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["concat", "gated", "attention"])
def test_fusion_shapes_and_gradients(kind: str) -> None:
    fusion = make_fusion(kind, (10, 6), 8)  # type: ignore[arg-type]
    a = torch.randn(3, 10, requires_grad=True)
    b = torch.randn(3, 6, requires_grad=True)
    out = fusion(a, b)
    assert out.shape == (3, 8)
    out.sum().backward()
    assert a.grad is not None and b.grad is not None
    assert float(a.grad.abs().sum()) > 0 and float(b.grad.abs().sum()) > 0


def test_gated_fusion_follows_the_gate() -> None:
    fusion = GatedFusion((4, 4), 4)
    with torch.no_grad():
        fusion.gate.weight.zero_()
        fusion.gate.bias.fill_(50.0)  # gate ~ 1: the cell branch only
    a, b = torch.randn(2, 4), torch.randn(2, 4)
    expected = torch.relu(fusion.cell(a))
    torch.testing.assert_close(fusion(a, b), expected)


def test_attention_weights_sum_to_one() -> None:
    fusion = AttentionFusion((5, 7), 6)
    fusion(torch.randn(4, 5), torch.randn(4, 7))
    assert fusion.last_weights is not None
    torch.testing.assert_close(fusion.last_weights.sum(dim=1), torch.ones(4))


def test_unknown_fusion() -> None:
    with pytest.raises(ValueError, match="fusion must be one of"):
        make_fusion("sum", (2, 2), 2)  # type: ignore[arg-type]


def test_feature_dim_uses_pre_logits_width() -> None:
    vgg = timm.create_model("vgg11", num_classes=0)
    assert feature_dim(vgg) == 4096
    assert vgg(torch.randn(1, 3, 32, 32)).shape[1] == feature_dim(vgg)
    with pytest.raises(ValueError, match="expected a timm model"):
        feature_dim(torch.nn.Linear(2, 2))


def test_mask_boxes_and_empty_fallback() -> None:
    mask = torch.zeros(3, 1, 20, 30, dtype=torch.uint8)
    mask[0, 0, 5:9, 10:17] = 1
    mask[2, 0, 0:2, 28:30] = 1
    boxes, empty = mask_boxes(mask, margin=1)
    assert empty.tolist() == [False, True, False]
    assert boxes[0].tolist() == [9.0, 4.0, 17.0, 9.0]
    assert boxes[1].tolist() == [0.0, 0.0, 29.0, 19.0]
    assert boxes[2].tolist() == [27.0, 0.0, 29.0, 2.0]  # clipped to the image


def test_crop_zeroes_outside_the_mask_and_keeps_the_box() -> None:
    image = torch.rand(2, 3, 16, 16) + 1.0  # strictly positive
    mask = torch.zeros(2, 1, 16, 16, dtype=torch.uint8)
    mask[0, 0, 4:12, 4:12] = 1
    mask[0, 0, 4, 4] = 0  # a background pixel inside the box
    crops = crop_nucleus(image, mask, 8, margin=0)
    assert crops.crops.shape == (2, 3, 8, 8)
    assert crops.empty.tolist() == [False, True]
    # box 4..11 resized 8 -> 8 with aligned corners is the identity
    torch.testing.assert_close(crops.crops[0, :, 1:, 1:], image[0, :, 5:12, 5:12])
    assert float(crops.crops[0, :, 0, 0].abs().max()) < 1e-5
    # the empty sample falls back to the whole, unmasked image
    assert float(crops.crops[1].min()) > 0.9


def test_crop_is_batched_like_per_sample() -> None:
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(4, 3, 24, 24, generator=gen)
    mask = (torch.rand(4, 1, 24, 24, generator=gen) > 0.8).to(torch.uint8)
    whole = crop_nucleus(image, mask, 12)
    for i in range(4):
        one = crop_nucleus(image[i : i + 1], mask[i : i + 1], 12)
        torch.testing.assert_close(whole.crops[i], one.crops[0])


def test_crop_rejects_mismatched_mask() -> None:
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\) = \(2, 1, 16, 16\)"):
        crop_nucleus(torch.rand(2, 3, 16, 16), torch.ones(2, 1, 8, 8), 8)
    with pytest.raises(ValueError, match="size must be positive"):
        crop_nucleus(torch.rand(2, 3, 16, 16), torch.ones(2, 1, 16, 16), 0)
