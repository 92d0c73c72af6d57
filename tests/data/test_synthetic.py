from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from leukemia_wbc.data.folder import ManifestWBC
from leukemia_wbc.data.synthetic import SYNTHETIC_CLASSES, SyntheticWBC


def test_sample_contract():
    ds = SyntheticWBC(8, size=(64, 80), seed=1)
    s = ds[3]
    assert s["image"].dtype == torch.uint8 and s["image"].shape == (3, 64, 80)
    assert s["mask"].shape == (1, 64, 80) and set(s["mask"].unique().tolist()) <= {0, 1}
    assert s["cell_mask"].shape == (1, 64, 80)
    # the nucleus lies inside the cell and both are non-empty
    assert s["mask"].sum() > 0 and bool((s["mask"] <= s["cell_mask"]).all())
    assert int(s["label"]) == int(ds.labels[3]) and s["group"] == ds.groups[3]


def test_deterministic_and_order_independent():
    a = SyntheticWBC(12, size=48, seed=5)
    b = SyntheticWBC(12, size=48, seed=5)
    c = SyntheticWBC(12, size=48, seed=6)
    assert np.array_equal(a.labels, b.labels) and a.groups == b.groups
    # sample 7 renders the same whether read first or after others
    late = [b[i] for i in range(12)][7]["image"]
    assert torch.equal(a[7]["image"], late)
    assert not torch.equal(a[7]["image"], c[7]["image"])


def test_subset_keeps_pixels():
    ds = SyntheticWBC(10, size=32, seed=2)
    sub = ds.subset([7, 2])
    assert torch.equal(sub[0]["image"], ds[7]["image"])
    assert list(sub.labels) == [ds.labels[7], ds.labels[2]]


def test_balanced_classes_and_weights():
    ds = SyntheticWBC(103, size=32, seed=0)
    counts = np.bincount(ds.labels, minlength=4)
    assert counts.max() - counts.min() <= 1
    skewed = SyntheticWBC(100, size=32, seed=0, class_weights=[7, 1, 1, 1])
    assert skewed.class_counts()["ALL"] == 70


def test_stain_varies_by_patient_not_class():
    """Mean colour alone does not separate the classes (the stain is a per-patient trait)."""
    ds = SyntheticWBC(480, size=64, seed=3, n_patients=16)
    renders = [ds.render(i) for i in range(len(ds))]
    colour = np.array([im.reshape(-1, 3).mean(0) for im, _, _ in renders])
    shape = np.array([[n.mean(), c.mean(), n.sum() / max(c.sum(), 1)] for _, n, c in renders])
    cv = StratifiedGroupKFold(4, shuffle=True, random_state=0)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    colour_acc = cross_val_score(clf, colour, ds.labels, groups=ds.groups, cv=cv).mean()
    shape_acc = cross_val_score(clf, shape, ds.labels, groups=ds.groups, cv=cv).mean()
    # chance is 0.25; the same linear model on mask morphology does far better
    assert colour_acc < 0.35, colour_acc
    assert shape_acc > colour_acc + 0.1, (shape_acc, colour_acc)
    # and patients really differ in colour: per-patient mean colours spread more than per-class
    groups = np.array(ds.groups)
    by_patient = np.array([colour[groups == g].mean(0) for g in np.unique(groups)])
    by_class = np.array([colour[ds.labels == k].mean(0) for k in range(4)])
    assert by_patient.std(0).mean() > 2 * by_class.std(0).mean()


def test_difficulty_makes_classes_overlap():
    def nucleus_fraction(difficulty: float) -> tuple[np.ndarray, np.ndarray]:
        ds = SyntheticWBC(200, size=48, seed=4, difficulty=difficulty, classes=("ALL", "AML"))
        frac = np.array([n.sum() / c.sum() for _, n, c in (ds.render(i) for i in range(len(ds)))])
        return frac[ds.labels == 0], frac[ds.labels == 1]

    easy_all, easy_aml = nucleus_fraction(0.0)
    hard_all, hard_aml = nucleus_fraction(1.0)
    easy_gap = easy_all.mean() - easy_aml.mean()
    hard_gap = hard_all.mean() - hard_aml.mean()
    assert easy_gap > 0.08  # lymphoblast nucleus 80-90 % vs myeloblast about 70 %
    assert hard_gap < 0.75 * easy_gap


def test_to_folder_round_trip(tmp_path):
    ds = SyntheticWBC(12, size=40, seed=9)
    manifest = ds.to_folder(tmp_path / "syn")
    back = ManifestWBC(manifest, classes=SYNTHETIC_CLASSES, size=40)
    assert list(back.labels) == list(ds.labels) and back.groups == ds.groups
    s = back[4]
    assert torch.equal(s["image"], ds[4]["image"])  # PNG is lossless
    assert torch.equal(s["mask"], ds[4]["mask"]) and torch.equal(s["cell_mask"], ds[4]["cell_mask"])
    with pytest.raises(FileExistsError, match=r"manifest\.csv"):
        ds.to_folder(tmp_path / "syn")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, "n must be"),
        ({"difficulty": 1.5}, "difficulty"),
        ({"classes": ("ALL", "CML")}, "subset of"),
        ({"class_weights": [1, 1]}, "class_weights"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SyntheticWBC(**{"n": 4, **kwargs})


def test_rendered_cells_are_kept_and_read_back_unchanged() -> None:
    """A second access reads the kept pixels: the same arrays, not shared with the caller."""
    ds = SyntheticWBC(6, size=32, seed=9, n_patients=2)
    first = ds.render(3)
    first[0][:] = 0  # the caller's copy: the kept one is untouched
    again = ds.render(3)
    fresh = SyntheticWBC(6, size=32, seed=9, n_patients=2, cache_mb=0).render(3)
    assert all(np.array_equal(a, b) for a, b in zip(again, fresh, strict=True))
    assert again[0].any()
    assert len(ds._rendered) == 1
    # a view at another size renders its own pixels; a subset reads the shared ones
    assert ds.with_size(16).render(3)[0].shape == (16, 16, 3)
    assert len(ds._rendered) == 2
    assert np.array_equal(ds.subset([3]).render(0)[0], fresh[0])
    # a worker started by spawn gets the dataset pickled: without the kept cells
    import pickle

    sent = pickle.loads(pickle.dumps(ds))
    assert len(sent._rendered) == 0 and np.array_equal(sent.render(3)[0], fresh[0])
    small = SyntheticWBC(6, size=32, seed=9, n_patients=2, cache_mb=0.001)  # 1 kB: too little
    small.render(0)
    assert len(small._rendered) == 0
