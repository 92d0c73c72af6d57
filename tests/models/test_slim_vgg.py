"""The quarter-width VGG-11 of the CPU demo: registered in timm, VGG-shaped, no weights."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from leukemia_wbc.models import create_backbone
from leukemia_wbc.models.slim_vgg import QUARTER_VGG11_CFG
from leukemia_wbc.tasks import CellClassifier


def test_registered_by_name_with_quarter_widths() -> None:
    assert "vgg11_bn_quarter" in timm.list_models("vgg11_bn_quarter")
    net = timm.create_model("vgg11_bn_quarter", num_classes=3)
    convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
    vgg11 = [64, 128, 256, 256, 512, 512, 512, 512]  # configuration "A" (Simonyan & Zisserman)
    assert [c.out_channels * 4 for c in convs] == vgg11
    assert [c.out_channels for c in convs] == [v for v in QUARTER_VGG11_CFG if v != "M"]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.features) == len(convs)
    assert not any("downsample" in name for name, _ in net.named_modules())  # no shortcuts
    assert net(torch.randn(2, 3, 64, 64)).shape == (2, 3)


def test_used_through_the_library_like_any_timm_backbone() -> None:
    backbone = create_backbone("vgg11_bn_quarter")
    assert backbone(torch.randn(1, 3, 64, 64)).ndim == 2
    model = CellClassifier("vgg11_bn_quarter", num_classes=4, head_hidden=(16,))
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 4)


def test_no_pretrained_weights() -> None:
    with pytest.raises(ValueError, match="vgg11_bn_quarter has no pretrained weights"):
        timm.create_model("vgg11_bn_quarter", pretrained=True)
