"""Tests of leukemia_wbc.tasks.losses against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from leukemia_wbc.tasks import FocalLoss, HybridFocalCELoss

# A 2x3 example whose softmax is known exactly: logits are log-probabilities, targets (0, 2),
# so p_t = (0.5, 0.7).
#   -log p_t                  = (0.693147181, 0.356674944)
#   (1 - p_t)^2               = (0.25, 0.09)
#   focal, gamma 2            = (0.25 * 0.693147181, 0.09 * 0.356674944)
#                             = (0.173286795, 0.032100745)
#   alpha = (0.25, 1, 2): alpha_t = (0.25, 2) -> (0.043321699, 0.064201490)
#   hybrid w=0.5, alpha: alpha_t * -log p_t * (0.5 (1 - p_t)^2 + 0.5)
#                             = (0.25 * 0.693147181 * 0.625, 2 * 0.356674944 * 0.545)
#                             = (0.108304247, 0.388775689)
#   hybrid w=0.3, gamma 0.5: -log p_t * (0.3 sqrt(1 - p_t) + 0.7)
#                             = (0.693147181 * 0.912132034, 0.356674944 * 0.864316767)
#                             = (0.632241748, 0.308280135)
PROBS = torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.2, 0.7]])
LOGITS = PROBS.log()
TARGET = torch.tensor([0, 2])
ALPHA = (0.25, 1.0, 2.0)


def test_focal_hand_computed() -> None:
    loss = FocalLoss(gamma=2.0, reduction="none")(LOGITS, TARGET)
    torch.testing.assert_close(loss, torch.tensor([0.173286795, 0.032100745]))
    assert FocalLoss(gamma=2.0)(LOGITS, TARGET).item() == pytest.approx(0.102693770, abs=1e-6)
    assert FocalLoss(reduction="sum")(LOGITS, TARGET).item() == pytest.approx(0.20538754, abs=1e-6)


def test_focal_alpha_hand_computed() -> None:
    loss = FocalLoss(gamma=2.0, alpha=ALPHA, reduction="none")(LOGITS, TARGET)
    torch.testing.assert_close(loss, torch.tensor([0.043321699, 0.064201490]))
    mean = FocalLoss(gamma=2.0, alpha=torch.tensor(ALPHA))(LOGITS, TARGET)
    assert mean.item() == pytest.approx(0.053761594, abs=1e-6)


def test_focal_is_shift_invariant() -> None:
    loss = FocalLoss()
    assert loss(LOGITS + 7.0, TARGET).item() == pytest.approx(loss(LOGITS, TARGET).item(), rel=1e-5)


def test_hybrid_hand_computed() -> None:
    loss = HybridFocalCELoss(focal_weight=0.5, gamma=2.0, class_weights=ALPHA, reduction="none")
    torch.testing.assert_close(loss(LOGITS, TARGET), torch.tensor([0.108304247, 0.388775689]))
    other = HybridFocalCELoss(focal_weight=0.3, gamma=0.5)
    assert other(LOGITS, TARGET).item() == pytest.approx((0.632241748 + 0.308280135) / 2, abs=1e-6)


def test_gamma_zero_is_cross_entropy() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 4, generator=generator) * 3
    target = torch.randint(0, 4, (16,), generator=generator)
    expected = F.cross_entropy(logits, target)
    torch.testing.assert_close(FocalLoss(gamma=0.0)(logits, target), expected)
    torch.testing.assert_close(HybridFocalCELoss(focal_weight=0.0)(logits, target), expected)
    torch.testing.assert_close(
        HybridFocalCELoss(focal_weight=0.7, gamma=0.0)(logits, target), expected
    )
    # With class weights, "sum" agrees with PyTorch (its "mean" divides by the sum of weights).
    weights = torch.tensor([0.5, 1.0, 2.0, 1.5])
    torch.testing.assert_close(
        FocalLoss(gamma=0.0, alpha=weights, reduction="sum")(logits, target),
        F.cross_entropy(logits, target, weight=weights, reduction="sum"),
    )


def test_focal_weight_one_is_focal() -> None:
    hybrid = HybridFocalCELoss(focal_weight=1.0, gamma=2.0, class_weights=ALPHA)
    focal = FocalLoss(gamma=2.0, alpha=ALPHA)
    torch.testing.assert_close(hybrid(LOGITS, TARGET), focal(LOGITS, TARGET))


def test_dense_targets() -> None:
    logits = torch.randn(2, 3, 4, 5)
    target = torch.randint(0, 3, (2, 4, 5))
    expected = F.cross_entropy(logits, target)
    torch.testing.assert_close(FocalLoss(gamma=0.0)(logits, target), expected)


def test_ignore_index() -> None:
    target = torch.tensor([0, -100])
    loss = FocalLoss(gamma=2.0, ignore_index=-100, reduction="none")(LOGITS, target)
    torch.testing.assert_close(loss, torch.tensor([0.173286795, 0.0]))
    mean = FocalLoss(gamma=2.0, ignore_index=-100)(LOGITS, target)
    assert mean.item() == pytest.approx(0.173286795, abs=1e-6)
    logits = LOGITS.clone().requires_grad_(True)
    none_left = FocalLoss(ignore_index=1)(logits, torch.tensor([1, 1]))
    none_left.backward()
    assert none_left.item() == 0.0
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 5.0])
def test_gradients_finite_even_when_confident(gamma: float) -> None:
    logits = torch.tensor([[60.0, -60.0, 0.0], [0.0, 1.0, 2.0], [-80.0, 80.0, 0.0]])
    logits.requires_grad_(True)
    target = torch.tensor([0, 2, 0])  # certain and right, uncertain, certain and wrong
    loss = HybridFocalCELoss(focal_weight=0.8, gamma=gamma, class_weights=ALPHA)(logits, target)
    loss.backward()
    assert math.isfinite(loss.item())
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_half_precision_logits() -> None:
    loss = FocalLoss()(LOGITS.to(torch.bfloat16), TARGET)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(0.102693770, rel=2e-2)


def test_loss_falls_under_sgd() -> None:
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.5]])
    target = torch.randint(0, 3, (96,), generator=generator)
    x = centres[target] + 0.5 * torch.randn(96, 2, generator=generator)
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 3)
    criterion = HybridFocalCELoss(focal_weight=0.5, gamma=2.0, class_weights=(1.0, 2.0, 0.5))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = criterion(model(x), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]
    accuracy = (model(x).argmax(1) == target).float().mean().item()
    assert accuracy > 0.9


def test_buffers_follow_module_but_not_state_dict() -> None:
    loss = FocalLoss(alpha=ALPHA).to(torch.float64)
    assert isinstance(loss.alpha, torch.Tensor)
    assert "alpha" in dict(loss.named_buffers())
    assert loss.state_dict() == {}


def test_bad_targets() -> None:
    with pytest.raises(ValueError, match=r"outside \[0, num_classes=3\).*\[3\]"):
        FocalLoss()(LOGITS, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"num_classes=3"):
        HybridFocalCELoss()(LOGITS, torch.tensor([-1, 0]))
    with pytest.raises(ValueError, match=r"target must have shape \(2,\)"):
        FocalLoss()(LOGITS, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="integer class indices"):
        FocalLoss()(LOGITS, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"logits must be a float tensor"):
        FocalLoss()(torch.zeros(3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"4 class weights.*num_classes=3"):
        FocalLoss(alpha=[1.0, 1.0, 1.0, 1.0])(LOGITS, TARGET)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="gamma"):
        FocalLoss(gamma=-1.0)
    with pytest.raises(ValueError, match="gamma"):
        HybridFocalCELoss(gamma=float("nan"))
    with pytest.raises(ValueError, match="focal_weight"):
        HybridFocalCELoss(focal_weight=1.5)
    with pytest.raises(ValueError, match="alpha"):
        FocalLoss(alpha=[1.0, -0.5])
    with pytest.raises(ValueError, match="class_weights"):
        HybridFocalCELoss(class_weights=[[1.0, 2.0]])
    with pytest.raises(ValueError, match="reduction"):
        FocalLoss(reduction="avg")  # type: ignore[arg-type]
