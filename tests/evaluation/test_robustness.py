"""Perturbation suite, robustness scoring and the colour-shortcut baseline under the CV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from leukemia_wbc.data import ImageFolderWBC, SyntheticWBC, WBCDataModule
from leukemia_wbc.evaluation.robustness import (
    PERTURBATIONS,
    cv_robustness,
    evaluate_robustness,
    perturb,
)
from leukemia_wbc.experiments import CrossValidator
from leukemia_wbc.models.colour_baseline import (
    COLOUR_FEATURE_NAMES,
    ColourShortcutBaseline,
    colour_statistics,
)


@pytest.fixture(scope="module")
def cells() -> torch.Tensor:
    ds = SyntheticWBC(6, size=64, seed=3)
    return torch.stack([ds[i]["image"] for i in range(6)])


@pytest.mark.parametrize("name", sorted(PERTURBATIONS))
def test_perturbations_grow_with_strength_and_are_seeded(name: str, cells: torch.Tensor) -> None:
    assert torch.equal(perturb(cells, name, 0.0), cells)
    changes = [
        float((perturb(cells, name, s, seed=1).float() - cells.float()).abs().mean())
        for s in (0.25, 1.0)
    ]
    assert changes[1] > 0.3, changes  # the strongest setting visibly changes the images
    assert changes[0] < changes[1], changes
    again = perturb(cells, name, 1.0, seed=1)
    assert torch.equal(again, perturb(cells, name, 1.0, seed=1))
    assert again.dtype == torch.uint8 and again.shape == cells.shape


def test_perturb_arguments(cells: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="unknown perturbation 'fog'"):
        perturb(cells, "fog", 0.5)
    with pytest.raises(ValueError, match=r"strength must lie in \[0, 1\]"):
        perturb(cells, "blur", 1.5)
    with pytest.raises(TypeError, match="uint8"):
        perturb(cells.float(), "blur", 0.5)


def test_colour_statistics_layout() -> None:
    image = np.zeros((8, 8, 3), np.uint8)
    image[..., 0] = 255
    stats = colour_statistics(image)
    assert stats.shape == (len(COLOUR_FEATURE_NAMES),) == (30,)
    assert stats[COLOUR_FEATURE_NAMES.index("r_mean")] == pytest.approx(1.0)
    assert stats[COLOUR_FEATURE_NAMES.index("g_p95")] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="RGB image"):
        colour_statistics(np.zeros((8, 8)))


def _tinted_folder(root: Path) -> Path:
    """Two classes told apart by the stain tint alone: the cells are drawn from one class."""
    source = SyntheticWBC(48, size=48, seed=5, classes=("ALL",))
    for i in range(48):
        image = source[i]["image"].permute(1, 2, 0).numpy().astype(np.float64)
        name = "lab_a" if i % 2 == 0 else "lab_b"
        if name == "lab_b":  # a bluer stain: less red, more blue
            image = image * np.array([0.85, 0.95, 1.0]) + np.array([0, 0, 10])
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(folder / f"p{i % 8}_{i}.png")
    return root


def test_colour_shortcut_finds_a_stain_separable_dataset_and_breaks_under_stain_shift(
    tmp_path: Path,
) -> None:
    tinted = ImageFolderWBC(_tinted_folder(tmp_path / "tinted"), size=48, group_pattern=r"^(p\d)_")
    dm = WBCDataModule(tinted, size=48, batch_size=8)
    baseline = ColourShortcutBaseline(progress=False)
    result = CrossValidator(baseline, dm, tmp_path / "cv", n_splits=4, seed=0).run()
    accuracy = result.summary()["accuracy"].mean
    assert accuracy > 0.9  # separable without looking at a cell
    robust = cv_robustness(result, tinted, perturbations=("stain_rotation", "brightness"),
                           strengths=(1.0,), progress=False)  # fmt: skip
    assert robust.clean["accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert robust.n_images == len(tinted)
    assert robust.drop("stain_rotation", 1.0) > 0.1 or robust.drop("brightness", 1.0) > 0.1
    rows = robust.to_rows()
    assert rows[0]["perturbation"] == "none" and len(rows) == 3
    assert "| stain_rotation |" in robust.table()
    # on SyntheticWBC the stain is drawn per patient, not per class: near chance (0.25)
    synthetic = SyntheticWBC(120, size=48, seed=0)
    plain = CrossValidator(ColourShortcutBaseline(progress=False),
                           WBCDataModule(synthetic, size=48, batch_size=8), tmp_path / "cv2",
                           n_splits=3, seed=0).run()  # fmt: skip
    assert plain.summary()["accuracy"].mean < 0.4


def test_evaluate_robustness_arguments(cells: torch.Tensor) -> None:
    ds = SyntheticWBC(4, size=32, seed=0)

    def uniform(batch: dict[str, torch.Tensor]) -> np.ndarray:
        return np.full((len(batch["image"]), 4), 0.25)

    result = evaluate_robustness(uniform, ds, perturbations=("blur",), strengths=(0.5,),
                                 progress=False)  # fmt: skip
    assert result.n_images == 4 and set(result.scores) == {"blur"}
    with pytest.raises(ValueError, match="unknown perturbations"):
        evaluate_robustness(uniform, ds, perturbations=("fog",), progress=False)
    with pytest.raises(ValueError, match="strengths"):
        evaluate_robustness(uniform, ds, strengths=(0.0,), progress=False)


def test_report_shows_robustness_and_the_colour_shortcut(tmp_path: Path) -> None:
    from leukemia_wbc.evaluation import compare
    from leukemia_wbc.models import HandcraftedSVM
    from leukemia_wbc.report import write_report

    data = SyntheticWBC(60, size=48, seed=0)
    dm = WBCDataModule(data, size=48)
    svm = CrossValidator(HandcraftedSVM(progress=False), dm, tmp_path / "svm", n_splits=3).run()
    colour = CrossValidator(ColourShortcutBaseline(progress=False), dm, tmp_path / "colour",
                            n_splits=3).run()  # fmt: skip
    robust = {
        r.name: cv_robustness(
            r, data, perturbations=("stain_rotation", "blur"), strengths=(1.0,), progress=False
        )
        for r in (svm, colour)
    }
    # the SVM sees the same features (nucleus and cell masks) as in its cross-validation
    assert robust["HandcraftedSVM"].clean["accuracy"] == pytest.approx(
        svm.summary()["accuracy"].mean, abs=1e-6
    )
    table = compare([svm, colour], stain_shift={"HandcraftedSVM": 0.5})
    assert table.splitlines()[0].endswith("| Stain-shift accuracy |")
    assert table.splitlines()[3].endswith("| n/a |")  # the colour baseline got no value
    files = write_report([svm, colour], tmp_path / "report", robustness=robust)
    md = files.markdown.read_text()
    assert "## Robustness to stain and acquisition shift" in md
    assert "Colour shortcut: a classifier on whole-image colour statistics alone" in md
    worst = robust["HandcraftedSVM"].worst("stain")
    assert f"| {worst:.3f} |" in md.split("## Comparison")[1].split("\n\n")[1]
    page = files.html.read_text()
    assert 'alt="robustness"' in page and "<strong>HandcraftedSVM</strong>" in page
