"""Guessing baselines beside every model, and warnings when a model does no better."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from leukemia_wbc.evaluation import chance_results, compare, honesty_warnings, shortcut_warnings
from leukemia_wbc.evaluation.chance import MAJORITY, STRATIFIED
from leukemia_wbc.experiments.predictions import Predictions
from leukemia_wbc.experiments.result import CVResult, FoldResult
from leukemia_wbc.metrics import classification_metrics
from leukemia_wbc.report import write_report

CLASSES = ("Neutrophil", "Lymphocyte", "Eosinophil")


def _result(name: str, probs_of: str, n: int = 90, n_folds: int = 3) -> CVResult:
    """A result on unbalanced labels (60 / 25 / 15 %) whose model is useless or good."""
    rng = np.random.default_rng(0)
    label = rng.choice(3, size=n, p=[0.6, 0.25, 0.15])
    fold = np.arange(n) % n_folds
    if probs_of == "majority":  # always Neutrophil, with a little noise
        probs = np.tile([0.8, 0.1, 0.1], (n, 1)) + rng.normal(0, 0.01, (n, 3))
    else:  # right 90 % of the time
        pred = np.where(rng.random(n) < 0.9, label, (label + 1) % 3)
        probs = np.full((n, 3), 0.05)
        probs[np.arange(n), pred] = 0.9
    preds = Predictions(np.arange(n), [f"{i}.png" for i in range(n)],
                        [f"p{i}" for i in range(n)], label, fold, probs, CLASSES)  # fmt: skip
    folds = [
        FoldResult(
            k,
            classification_metrics(label[fold == k], probs[fold == k], CLASSES),
            n - n // n_folds,
            0,
            n // n_folds,
            1.0,
            1.0,
        )
        for k in range(n_folds)
    ]
    return CVResult(name, CLASSES, folds, preds, config={"split": {"n_splits": n_folds}})


def test_majority_row_scores_the_training_majority_on_each_fold() -> None:
    useless = _result("ResNet", "majority")
    majority, stratified = chance_results(useless)
    assert (majority.name, stratified.name) == (MAJORITY, STRATIFIED)
    p = useless.predictions
    for f in majority.folds:
        held = p.fold == f.fold
        assert f.metrics["accuracy"] == pytest.approx(np.mean(p.label[held] == 0))
        assert f.metrics["balanced_accuracy"] == pytest.approx(1 / 3)
        assert f.metrics["auroc"] == pytest.approx(0.5)
    again = chance_results(useless)[1]
    assert np.array_equal(again.predictions.probs, stratified.predictions.probs)  # seeded
    share = np.bincount(stratified.predictions.pred, minlength=3) / len(p)
    assert share[0] > share[1] > share[2] > 0  # drawn with the class shares


def test_a_useless_model_is_called_useless_and_a_good_one_is_not() -> None:
    warned = honesty_warnings(_result("ResNet", "majority"))
    assert len(warned) == 2
    assert re.match(r"ResNet predicts Neutrophil for 100% of the cells", warned[0])
    assert "does not beat the majority-class baseline" in warned[1]
    assert honesty_warnings(_result("ResNet", "good")) == []


def test_comparison_table_has_the_guessing_rows_and_says_what_is_undefined() -> None:
    table = compare([_result("ResNet", "majority")])
    lines = table.splitlines()
    assert lines[0].startswith("| Model | Accuracy | Balanced accuracy |")
    assert lines[3].startswith(f"| {MAJORITY} | ") and lines[4].startswith(f"| {STRATIFIED} | ")
    assert lines[2].split("|")[2] == lines[3].split("|")[2]  # same accuracy as guessing
    assert sum(line.startswith("**Warning:** ResNet") for line in lines) == 2
    assert "mean of the per-fold one-vs-rest AUCs" in table and "pooled" in table
    assert "fewer than 5 folds" in table
    assert "| ResNet | Lymphocyte | undefined (never predicted) |" in table


def test_interval_row_flags_few_folds_and_no_spread() -> None:
    text = _result("ResNet", "majority").to_markdown()
    ci = next(line for line in text.splitlines() if line.startswith("| 95 % CI"))
    assert ci.startswith("| 95 % CI (3 folds: rough) |")
    assert "n/a (no spread over folds)" in ci  # balanced accuracy is 1/3 in every fold
    five = _result("ResNet", "good", n=100, n_folds=5).to_markdown()
    assert "| 95 % CI |" in five


def test_report_warns_at_the_top_and_renders_markdown(tmp_path: Path) -> None:
    files = write_report([_result("ResNet", "majority")], tmp_path / "r",
                         notes="| class | cells |\n| --- | --- |\n| a | 3 |")  # fmt: skip
    page = files.html.read_text()
    first_heading = page.index("<h2>")
    top = page[:first_heading]
    assert '<div class="warning">' in top and "ResNet predicts Neutrophil" in top
    assert "<table>" in top and "| --- |" not in page  # the notes' table is a table
    assert re.search(r"<h2>Comparison[^<]*</h2>", page[first_heading : first_heading + 200])
    assert not re.search(r"<thead>\s*<tr>\s*<th></th>", page)  # no empty key-value header
    assert "<script" not in page
    md = files.markdown.read_text()
    assert md.index("**Warning:** ResNet") < md.index("## Comparison")


COLOUR = "leukemia_wbc.models.colour_baseline.ColourShortcutBaseline"


def _colour_result() -> CVResult:
    """A colour-shortcut baseline's result (its recorded class says so), as good as ``good``."""
    good = _result("ColourShortcutBaseline", "good")
    config = {"split": {"n_splits": 3}, "model": {"class": COLOUR, "hparams": {}}}
    return CVResult(good.name, CLASSES, good.folds, good.predictions, config=config)


def test_a_model_no_better_than_colour_alone_is_named() -> None:
    colour = _colour_result()
    same = _result("ResNet", "good")  # as good as colour alone, clean
    warned = shortcut_warnings([same, colour])
    assert len(warned) == 1 and warned[0].startswith("ResNet's accuracy")
    assert "does not beat ColourShortcutBaseline" in warned[0]
    assert shortcut_warnings([same]) == []  # no colour baseline, nothing to compare with
    under = {"ResNet": 0.40, "ColourShortcutBaseline": 0.45}
    both = shortcut_warnings([same, colour], under)
    assert len(both) == 2 and "under a stain shift ResNet scores 0.400" in both[1]
    assert len(shortcut_warnings([same, colour], {**under, "ResNet": 0.70})) == 1
    page = compare([same, colour])  # the table itself has no colour warning; the report does
    assert "stain, not the cell" not in page


def test_the_report_warns_when_a_model_is_no_better_than_colour(tmp_path: Path) -> None:
    colour = _colour_result()
    page = write_report([_result("ResNet", "good"), colour], tmp_path / "r").html.read_text()
    top = page[: page.index("<h2>")]
    assert '<div class="warning">' in top and "may have learned the stain, not the cell" in top
