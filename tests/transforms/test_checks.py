"""One shared input check: float images outside 0-1 are refused by every transform, not clipped."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from leukemia_wbc.data.synthetic import SyntheticWBC
from leukemia_wbc.transforms.checks import UNIT_RANGE_TOLERANCE, check_batch
from leukemia_wbc.transforms.enhance import CLAHE, BackgroundRemoval, Grayscale
from leukemia_wbc.transforms.macenko import estimate_stains
from leukemia_wbc.transforms.stain import MacenkoNormalizer


def _cells() -> Tensor:
    """Two synthetic stained cells, uint8 ``(2, 3, 48, 48)``."""
    ds = SyntheticWBC(2, size=48, seed=1)
    return torch.stack([ds[i]["image"] for i in range(2)])


TRANSFORMS: dict[str, Callable[[Tensor], object]] = {
    "CLAHE": CLAHE(),
    "Grayscale": Grayscale(),
    "BackgroundRemoval": BackgroundRemoval(),
    "estimate_stains": estimate_stains,
    "MacenkoNormalizer": MacenkoNormalizer().fit(_cells()),
}


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_float_images_in_0_255_are_refused_by_every_transform(name: str) -> None:
    as_float = _cells().float()  # 0-255 in a float tensor: once clipped to white
    with pytest.raises(
        ValueError, match=r"float images with values in \[\d+, \d+\].*divide by 255"
    ):
        TRANSFORMS[name](as_float)


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_uint8_and_unit_floats_are_taken(name: str) -> None:
    for batch in (_cells(), _cells().float() / 255.0):
        out = TRANSFORMS[name](batch)
        tensors = [out] if isinstance(out, Tensor) else [v for v in out if isinstance(v, Tensor)]
        assert tensors and all(t.shape[0] == len(batch) for t in tensors), name
        assert all(bool(torch.isfinite(t.float()).all()) for t in tensors), name


def test_normalised_images_get_their_own_hint() -> None:
    x = (_cells().float() / 255.0 - 0.5) / 0.25
    with pytest.raises(ValueError, match="undo the mean/std normalisation"):
        check_batch(x, "input")


def test_interpolation_overshoot_within_the_tolerance_is_taken() -> None:
    x = _cells().float() / 255.0
    x[0, 0, 0, 0] = 1.0 + UNIT_RANGE_TOLERANCE / 2
    x[0, 1, 0, 0] = -UNIT_RANGE_TOLERANCE / 2
    assert check_batch(x, "input") is x
    x[0, 2, 0, 0] = 1.0 + 2 * UNIT_RANGE_TOLERANCE
    with pytest.raises(ValueError, match="input: float images"):
        check_batch(x, "input")
