"""Point matching, Wilson blast-share intervals and the ALL-IDB1 detection evaluation."""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path

import numpy as np
import pytest
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching

from leukemia_wbc.data.allidb import ALLIDB1
from leukemia_wbc.smear.metrics import (
    ACUTE_LEUKEMIA_BLAST_THRESHOLD,
    ALLIDB1Evaluation,
    blast_share_interval,
    evaluate_allidb1,
    match_points,
)
from tests.conftest import fixture_module, make_fixture

GEN = fixture_module("allidb")


def pts(*xy: tuple[float, float]) -> np.ndarray:
    return np.array(xy, dtype=np.float64).reshape(-1, 2)


# -- match_points -----------------------------------------------------------------------------
def test_prediction_goes_to_the_nearer_truth() -> None:
    m = match_points(pts((0, 0)), pts((3, 0), (1, 0)), radius=5)
    assert m.pairs.tolist() == [[0, 1]]
    assert (m.true_positives, m.false_positives, m.false_negatives) == (1, 0, 1)
    assert m.precision == 1.0 and m.recall == 0.5 and m.f1 == pytest.approx(2 / 3)


def test_optimal_matching_beats_greedy_nearest() -> None:
    # Truth A = (0, 0), B = (8.8, 0). p = (4, 0) is 4 from A and 4.8 from B; q = (-4.5, 0)
    # reaches only A (4.5). Greedy nearest-first takes p-A (4) and strands q: 1 match.
    # The optimum pairs p-B and q-A: 2 matches.
    m = match_points(pts((4, 0), (-4.5, 0)), pts((0, 0), (8.8, 0)), radius=5)
    assert m.pairs.tolist() == [[0, 1], [1, 0]]
    assert (m.true_positives, m.false_positives, m.false_negatives) == (2, 0, 0)
    assert m.precision == m.recall == m.f1 == 1.0


def test_equal_counts_prefer_the_smaller_total_distance() -> None:
    # Both one-to-one matchings have two pairs; the crossed one totals 0.2 px, the straight 2.0.
    m = match_points(pts((0, 0), (1, 0)), pts((0.9, 0), (0.1, 0)), radius=5)
    assert m.pairs.tolist() == [[0, 1], [1, 0]]


def test_radius_is_inclusive() -> None:
    pred, true = pts((0, 0)), pts((3, 4))  # 5 px apart
    assert match_points(pred, true, radius=5.0).true_positives == 1
    beyond = match_points(pred, true, radius=4.999)
    assert beyond.pairs.shape == (0, 2)
    assert (beyond.true_positives, beyond.false_positives, beyond.false_negatives) == (0, 1, 1)


def test_forbidden_pairs_are_never_returned() -> None:
    # The solver must assign every row of a 3x2 problem; all pairs are too far apart.
    m = match_points(pts((0, 0), (100, 0), (0, 100)), pts((50, 50), (200, 200)), radius=10)
    assert m.pairs.shape == (0, 2) and m.pairs.dtype == np.int64
    assert (m.true_positives, m.false_positives, m.false_negatives) == (0, 3, 2)
    assert m.precision == 0.0 and m.recall == 0.0 and m.f1 == 0.0


def test_matching_is_maximum_on_random_points() -> None:
    rng = np.random.default_rng(0)
    for _ in range(30):
        pred, true = rng.uniform(0, 40, (12, 2)), rng.uniform(0, 40, (9, 2))
        m = match_points(pred, true, radius=6)
        dist = np.linalg.norm(pred[:, None] - true[None], axis=2)
        assert (dist[m.pairs[:, 0], m.pairs[:, 1]] <= 6).all()
        assert len(set(m.pairs[:, 0])) == len(set(m.pairs[:, 1])) == m.true_positives
        best = maximum_bipartite_matching(csr_matrix(dist <= 6), perm_type="column")
        assert m.true_positives == int((best >= 0).sum())
        assert m.false_positives == 12 - m.true_positives
        assert m.false_negatives == 9 - m.true_positives


def test_empty_sets() -> None:
    both = match_points(pts(), pts(), radius=1)
    assert both.pairs.shape == (0, 2)
    assert (both.true_positives, both.false_positives, both.false_negatives) == (0, 0, 0)
    assert both.precision == both.recall == both.f1 == 1.0
    no_pred = match_points(np.array([]), pts((1, 1), (2, 2)), radius=1)
    assert (no_pred.false_positives, no_pred.false_negatives) == (0, 2)
    assert no_pred.precision == 1.0 and no_pred.recall == 0.0 and no_pred.f1 == 0.0
    no_truth = match_points(pts((1, 1)), np.zeros((0, 2)), radius=1)
    assert (no_truth.false_positives, no_truth.false_negatives) == (1, 0)
    assert no_truth.precision == 0.0 and no_truth.recall == 1.0


def test_match_points_errors() -> None:
    with pytest.raises(ValueError, match=r"predicted: .*\(N, 2\).*shape \(3,\)"):
        match_points(np.array([1.0, 2.0, 3.0]), pts(), radius=1)
    with pytest.raises(ValueError, match=r"truth: .*shape \(2, 3\)"):
        match_points(pts(), np.zeros((2, 3)), radius=1)
    with pytest.raises(ValueError, match="truth: expected finite"):
        match_points(pts(), pts((1, math.nan)), radius=1)
    for bad in (0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match=r"radius: expected a finite number > 0"):
            match_points(pts(), pts(), radius=bad)


# -- blast_share_interval ---------------------------------------------------------------------
# Wilson score interval with z = 1.959963984540054 (95 %), computed by hand from
# (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n).
@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        (0, 10, 0.0, 0.2775327999),
        (5, 10, 0.2365930905, 0.7634069095),
        (20, 100, 0.1333669333, 0.2888291656),
    ],
)
def test_wilson_known_values(k: int, n: int, low: float, high: float) -> None:
    share, lo, hi = blast_share_interval(k, n)
    assert share == k / n
    assert lo == pytest.approx(low, abs=1e-6) and hi == pytest.approx(high, abs=1e-6)
    assert lo <= share <= hi


def test_wilson_contains_share_and_narrows() -> None:
    for n in (1, 3, 10, 57, 1000):
        for k in range(0, n + 1, max(1, n // 7)):
            share, lo, hi = blast_share_interval(k, n, confidence=0.9)
            assert 0.0 <= lo <= share <= hi <= 1.0
    assert blast_share_interval(10, 10)[2] == 1.0
    _, lo99, hi99 = blast_share_interval(20, 100, confidence=0.99)
    _, lo80, hi80 = blast_share_interval(20, 100, confidence=0.80)
    assert lo99 < lo80 < 0.2 < hi80 < hi99
    # 30 of 100 blasts: the whole 95 % interval lies above the WHO 20 % threshold.
    assert blast_share_interval(30, 100)[1] > ACUTE_LEUKEMIA_BLAST_THRESHOLD == 0.20


def test_wilson_no_cells() -> None:
    share, lo, hi = blast_share_interval(0, 0)
    assert math.isnan(share) and (lo, hi) == (0.0, 1.0)


def test_wilson_errors() -> None:
    with pytest.raises(ValueError, match=r"n_cells: expected a count >= 0, got -1"):
        blast_share_interval(0, -1)
    with pytest.raises(ValueError, match=r"n_blast: expected 0 <= n_blast <= n_cells = 5, got 6"):
        blast_share_interval(6, 5)
    with pytest.raises(ValueError, match=r"n_blast: .* got -1"):
        blast_share_interval(-1, 5)
    with pytest.raises(ValueError, match="n_blast: expected an integer count"):
        blast_share_interval(2.5, 5)  # type: ignore[arg-type]
    for bad in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="confidence: expected a level strictly between"):
            blast_share_interval(1, 5, confidence=bad)


# -- evaluate_allidb1 -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def idb1(tmp_path_factory: pytest.TempPathFactory) -> ALLIDB1:
    return ALLIDB1(make_fixture("allidb", tmp_path_factory.mktemp("allidb")))


def test_evaluate_allidb1_counts(idb1: ALLIDB1) -> None:
    assert [Path(p).stem for p in idb1.paths] == GEN.IDB1

    def predict(index: int) -> np.ndarray:
        stem = GEN.IDB1[index]
        shifted = pts(*GEN.CENTROIDS.get(stem, [])) + np.array([2.0, -1.0])  # ~2.2 px off
        if stem == "Im002_1":
            return shifted[1:]  # drops the blast at (20, 20)
        if stem == "Im003_0":
            return pts((30, 30))  # a false blast on a blast-free smear
        return shifted

    result = evaluate_allidb1(idb1, predict, radius=5, progress=False)
    assert isinstance(result, ALLIDB1Evaluation) and result.radius == 5.0
    table = result.to_rows()
    rows = [(row["stem"], *list(row.values())[2:]) for row in table]
    assert rows == [
        ("Im001_1", 1, 3, 3, 3, 0, 0, True),
        ("Im002_1", 1, 2, 1, 1, 0, 1, True),
        ("Im003_0", 0, 0, 1, 0, 1, 0, True),
        ("Im004_0", 0, 0, 0, 0, 0, 0, False),
    ]
    assert (result.true_positives, result.false_positives, result.false_negatives) == (4, 1, 1)
    assert result.precision == pytest.approx(0.8) and result.recall == pytest.approx(0.8)
    assert result.f1 == pytest.approx(0.8)
    assert result.image_accuracy == 0.75
    assert result.image_sensitivity == 1.0 and result.image_specificity == 0.5

    assert [r.stem for r in result.images] == GEN.IDB1
    assert table[1]["path"] == idb1.paths[1] and table[1]["false_negatives"] == 1
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(table[0]))
    writer.writeheader()
    writer.writerows(table)
    assert out.getvalue().splitlines()[3].startswith("Im003_0,")

    text = result.summary()
    assert "4 images, radius 5 px" in text
    assert re.search(r"blasts\s+4\s+1\s+1\s+0\.800\s+0\.800\s+0\.800", text)
    assert "accuracy 0.750, sensitivity 1.000, specificity 0.500" in text


def test_evaluate_allidb1_default_radius_and_undefined_image_scores(idb1: ALLIDB1) -> None:
    # One prediction, 39 px above the blast at (20, 20) of Im002_1 (60 px from the other one):
    # inside the default 40 px radius, outside 38 px.
    def predict(index: int) -> np.ndarray:
        return pts((20, -19)) if GEN.IDB1[index] == "Im002_1" else pts()

    wide = evaluate_allidb1(idb1, predict, progress=False)
    assert wide.radius == 40.0
    assert (wide.true_positives, wide.false_positives, wide.false_negatives) == (1, 0, 4)
    assert wide.image_accuracy == 0.75 and wide.image_sensitivity == 0.5
    narrow = evaluate_allidb1(idb1, predict, radius=38, progress=False)
    assert (narrow.true_positives, narrow.false_positives, narrow.false_negatives) == (0, 1, 5)
    assert narrow.precision == 0.0 and narrow.recall == 0.0 and narrow.f1 == 0.0

    blasts_only = idb1.subset([0, 1])
    assert isinstance(blasts_only, ALLIDB1)
    only = evaluate_allidb1(blasts_only, predict, progress=False)
    assert math.isnan(only.image_specificity) and only.image_sensitivity == 0.5
    assert "specificity n/a" in only.summary()


def test_evaluate_allidb1_bad_prediction_names_the_file(idb1: ALLIDB1) -> None:
    def predict(index: int) -> np.ndarray:
        return np.zeros((2, 3)) if index == 1 else np.zeros((0, 2))

    expected = re.escape(f"{idb1.paths[1]}: predict(1): expected an (N, 2) array")
    with pytest.raises(ValueError, match=expected + r".*shape \(2, 3\)"):
        evaluate_allidb1(idb1, predict, progress=False)
    with pytest.raises(ValueError, match="radius"):
        evaluate_allidb1(idb1, predict, radius=-1, progress=False)
