"""Overlays at the image's own size, with the class, its probability and a colour bar."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from leukemia_wbc.report.overlays import (
    MIN_SIDE,
    labelled_overlay,
    smooth_attribution,
    to_size,
)


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.mark.parametrize(("height", "width"), [(40, 40), (450, 600)])
def test_overlay_keeps_the_images_shape_and_adds_a_colour_bar(height: int, width: int) -> None:
    image = np.full((height, width, 3), 200, np.uint8)
    heat = torch.zeros(16, 16)
    heat[4:8, 4:8] = 1.0
    out = _png(labelled_overlay(image, heat, predicted="ALL", probability=0.93,
                                method="gradcam", branch="cell"))  # fmt: skip
    scale = max(1.0, MIN_SIDE / max(height, width))
    assert out.shape[0] >= height * scale and out.shape[1] >= width * scale + 60  # + the bar
    jet_red = (out[..., 0] > 100) & (out[..., 1] < 40) & (out[..., 2] < 40)
    assert jet_red.sum() > 20  # the bar's top (and the hot corner) are drawn


def test_integrated_gradients_speckle_is_smoothed() -> None:
    rng = np.random.default_rng(0)
    speckle = torch.from_numpy(rng.normal(0, 1, (64, 64))).float()
    speckle[20:40, 20:40] += 3.0  # a region that matters under pixel noise
    smooth = smooth_attribution(speckle)
    assert smooth.min() >= 0
    rough = np.abs(np.diff(speckle.abs().numpy(), axis=1)).mean()
    assert np.abs(np.diff(smooth.numpy(), axis=1)).mean() < rough / 3
    assert smooth[30, 30] > 2 * smooth[5, 5]  # the region survives


def test_maps_are_resized_to_the_image_and_scaled() -> None:
    heat = torch.tensor([[0.0, 2.0], [1.0, 4.0]])
    out = to_size(heat, (30, 50))
    assert out.shape == (30, 50) and out.max() == pytest.approx(1.0) and out.min() >= 0
