"""SyntheticSmear: determinism, instance geometry, overlap flags and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from leukemia_wbc.smear import SyntheticSmear, detection_collate


@pytest.fixture(scope="module")
def smears() -> SyntheticSmear:
    return SyntheticSmear(12, size=256, seed=5, cells_per_field=(3, 6), touching=0.5)


def test_same_seed_same_pixels_in_any_order(smears: SyntheticSmear) -> None:
    again = SyntheticSmear(12, size=256, seed=5, cells_per_field=(3, 6), touching=0.5)
    a, b = smears.render(7), again.render(7)
    smears.render(2)  # rendering another field first changes nothing
    assert np.array_equal(a.image, smears.render(7).image)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.nuclei, b.nuclei)
    other = SyntheticSmear(12, size=256, seed=6, cells_per_field=(3, 6)).render(7)
    assert not np.array_equal(a.image, other.image)


def test_instances_are_consistent(smears: SyntheticSmear) -> None:
    for i in range(len(smears)):
        s = smears[i]
        n = len(s["labels"])
        assert 3 <= n <= 6
        assert s["image"].shape == (3, 256, 256) and s["image"].dtype == torch.uint8
        assert s["masks"].shape == s["cell_masks"].shape == (n, 256, 256)
        assert s["boxes"].shape == (n, 4) and s["overlapping"].shape == (n,)
        nuclei, cells = s["masks"].bool(), s["cell_masks"].bool()
        # the nucleus lies inside its cell, and the box frames the cell exactly
        assert not (nuclei & ~cells).any()
        assert (nuclei.flatten(1).sum(1) > 50).all()
        for k in range(n):
            x0, y0, x1, y1 = s["boxes"][k].int().tolist()
            ys, xs = torch.nonzero(cells[k], as_tuple=True)
            assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert int(s["labels"].max()) < len(smears.classes)


def test_nuclei_are_darker_than_background(smears: SyntheticSmear) -> None:
    s = smears.render(0)
    grey = s.image.mean(axis=2)
    inside = s.nuclei.any(axis=0).astype(bool)
    assert grey[inside].mean() < grey[~s.cells.any(axis=0).astype(bool)].mean() - 40


def test_overlap_flags_follow_the_masks(smears: SyntheticSmear) -> None:
    flagged = 0
    for i in range(len(smears)):
        f = smears.render(i)
        for k in np.flatnonzero(f.overlapping):
            others = np.delete(f.cells, k, axis=0).any(axis=0)
            dilated = np.zeros_like(others)
            ys, xs = np.nonzero(f.cells[k])
            for dy in (-2, 0, 2):
                for dx in (-2, 0, 2):
                    dilated[np.clip(ys + dy, 0, 255), np.clip(xs + dx, 0, 255)] = True
            assert (dilated & others).any()
            flagged += 1
        for k in np.flatnonzero(~f.overlapping):
            others = np.delete(f.cells, k, axis=0).any(axis=0)
            assert not (others & f.cells[k].astype(bool)).any()
    assert flagged >= 4  # touching=0.5 yields touching pairs


def test_patients_have_a_dominant_class() -> None:
    ds = SyntheticSmear(40, size=128, seed=1, n_patients=4, cells_per_field=(4, 4))
    labels: dict[int, list[int]] = {p: [] for p in range(4)}
    for i in range(len(ds)):
        labels[int(ds.patients[i])] += ds.render(i).labels.tolist()
    for p, labs in labels.items():
        if labs:
            share = np.mean(np.asarray(labs) == ds.dominant[p])
            assert share > 0.4, (p, share)
    assert ds.groups[0].startswith("patient")


def test_collate_keeps_lists(smears: SyntheticSmear) -> None:
    batch = detection_collate([smears[0], smears[1]])
    images, targets = batch["image"], batch["targets"]
    assert len(images) == 2 and images[0].shape == (3, 256, 256)
    assert "image" not in targets[0] and targets[1]["masks"].shape[0] == len(targets[1]["labels"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, "n must be at least 1"),
        ({"size": 32}, "size must be at least 64"),
        ({"cells_per_field": (5, 2)}, "cells_per_field"),
        ({"touching": 1.5}, "touching must be in"),
        ({"red_cover": (0.5, 1.0)}, "red_cover"),
        ({"pixels_per_um": 0}, "pixels_per_um must be positive"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SyntheticSmear(**kwargs)  # type: ignore[arg-type]


def test_index_out_of_range(smears: SyntheticSmear) -> None:
    with pytest.raises(IndexError, match="12 fields"):
        smears.render(12)
