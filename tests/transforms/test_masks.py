"""The CPU fast paths of the mask helpers give the masks of the batched kornia paths."""

from __future__ import annotations

import kornia.morphology as KM
import pytest
import torch
from kornia.contrib import connected_components_union_find

from leukemia_wbc.transforms import masks as MK


def _blobs(
    seed: int, shape: tuple[int, ...] = (12, 1, 48, 40), level: float = 0.55
) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.avg_pool2d(torch.rand(*shape, generator=g), 3, 1, 1) > level


def test_scipy_labels_are_kornias_components_and_distinct_across_the_batch() -> None:
    mask = _blobs(0)
    ours, theirs = MK.components(mask), connected_components_union_find(mask)
    assert torch.equal(ours > 0, mask)
    pairs = torch.stack([ours.flatten(), theirs.flatten()], 1).unique(dim=0)
    assert len(pairs) == len(ours.unique()) == len(theirs.unique())  # one-to-one
    per_image = [set(ours[i].unique().tolist()) - {0} for i in range(len(mask))]
    assert sum(map(len, per_image)) == len(set().union(*per_image)) > len(mask)


@pytest.mark.parametrize("radius", [1, 2, 3, 6])
@pytest.mark.parametrize("op", ["erosion", "dilation", "opening", "closing"])
def test_disk_morphology_by_shifts_equals_kornia(op: str, radius: int) -> None:
    mask = _blobs(1, level=0.5)
    r = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = ((r[:, None] ** 2 + r[None, :] ** 2) <= radius**2 + 0.5).float()
    steps = {"erosion": "e", "dilation": "d", "opening": "ed", "closing": "de"}[op]
    expected = mask.float()
    for step in steps:
        expected = (KM.erosion if step == "e" else KM.dilation)(expected, kernel)
    out = MK.disk_morphology(mask, op, radius)
    assert torch.equal(out, expected > 0.5)
    assert not torch.equal(out, mask)  # the operation did something


@pytest.mark.parametrize("radius", [3.0, 12.0])
def test_central_nucleus_equals_the_three_steps(radius: float) -> None:
    mask = _blobs(2)
    mask[3] = False  # an empty image stays empty
    mask[4] = False
    mask[4, 0, :4, :4] = True  # only a corner blob: the one nearest the centre is kept
    three = MK.keep_central(MK.fill_holes(MK.remove_small(mask, 6)), radius, keep_all=True)
    one = MK.central_nucleus(mask, 6, radius)
    assert torch.equal(one, three)
    assert not one[3].any() and one[4].sum() == 16
    assert (one.flatten(1).sum(1) < mask.flatten(1).sum(1)).any()  # something was removed


def test_central_nucleus_fills_a_ring_made_of_two_components() -> None:
    """Two lobes that enclose a hole together become one filled nucleus."""
    mask = torch.zeros(1, 1, 21, 21, dtype=torch.bool)
    mask[0, 0, 5:16, 5:10] = True
    mask[0, 0, 5:16, 11:16] = True
    mask[0, 0, 8:13, 9:12] = False
    mask[0, 0, 5, 10] = mask[0, 0, 15, 10] = True  # the lobes touch at the top and the bottom
    out = MK.central_nucleus(mask, 2, 2.0)
    assert torch.equal(out, MK.keep_central(MK.fill_holes(mask), 2.0, keep_all=True))
    assert out[0, 0, 10, 10] and out.sum() > mask.sum()
