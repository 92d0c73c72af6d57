"""Cell morphology and patient stain models: building blocks of the synthetic renderers.

:class:`~leukemia_wbc.data.SyntheticWBC` (single cells) and
:class:`~leukemia_wbc.smear.SyntheticSmear` (whole smear fields) draw every patient's stain with
:func:`draw_patient` and every white cell's morphology with :func:`draw_recipe`, then paint it
with :mod:`leukemia_wbc.data.render`. Each class draws its cells from textbook descriptions
(lymphoblast, myeloblast, CLL lymphocyte, normal lymphocyte and segmented neutrophil) with
spread; ``difficulty`` blends every cell towards another class so that the classes overlap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CellRecipe", "PatientStain", "draw_patient", "draw_recipe"]

# Kinds of cell the renderer draws; the class decides which kinds it draws from.
_KINDS = ("lymphoblast", "myeloblast", "cll", "lymphocyte", "neutrophil")


@dataclass(frozen=True)
class PatientStain:
    """Stain and acquisition of one synthetic patient (smear).

    Attributes:
        h: Unit optical-density vector of hematoxylin / azure (RGB).
        e: Unit optical-density vector of eosin (RGB).
        h_scale: Staining strength of hematoxylin.
        e_scale: Staining strength of eosin.
        illumination: Background intensity ``I0`` per channel (0-255).
        noise: Standard deviation of the camera noise in grey levels.
        plasma: Eosin concentration of the background plasma.
    """

    h: np.ndarray
    e: np.ndarray
    h_scale: float
    e_scale: float
    illumination: np.ndarray
    noise: float
    plasma: float


@dataclass(frozen=True)
class CellRecipe:
    """Everything needed to draw one cell, drawn from its class's distributions."""

    kind: str
    cell_um: float
    nucleus_fraction: float
    roundness: float
    indent: float
    chromatin_grid: int
    chromatin_amp: float
    chromatin_clump: float
    h_nucleus: float
    h_cyto: float
    e_cyto: float
    nucleoli: int
    nucleolus_contrast: float
    auer_rods: int
    granules: float
    lobes: int
    smudged: bool


def _unit(v: np.ndarray) -> np.ndarray:
    return np.asarray(v / np.linalg.norm(v), dtype=np.float64)


def draw_patient(rng: np.random.Generator) -> PatientStain:
    """Draw a patient's stain matrix, staining strengths and illumination.

    Args:
        rng: Random generator seeded for this patient.

    Returns:
        The patient's stain and acquisition settings.
    """
    # Reference Romanowsky-type stain vectors (purple nuclei, pink-red erythrocytes), jittered.
    h = _unit(np.array([0.55, 0.78, 0.30]) + rng.normal(0, 0.07, 3))
    e = _unit(np.array([0.12, 0.80, 0.55]) + rng.normal(0, 0.07, 3))
    return PatientStain(
        h=np.abs(h),
        e=np.abs(e),
        h_scale=float(rng.uniform(0.65, 1.4)),
        e_scale=float(rng.uniform(0.65, 1.4)),
        illumination=np.clip(rng.normal(238, 9, 3), 205, 255),
        noise=float(rng.uniform(1.0, 4.0)),
        plasma=float(rng.uniform(0.0, 0.08)),
    )


def _kind_params(kind: str, rng: np.random.Generator) -> dict[str, float | int]:
    """Numeric morphology of one cell of ``kind`` (textbook values with spread)."""
    n = rng.normal
    if kind == "lymphoblast":  # ALL: large, nucleus 80-90 %, fine chromatin, 0-2 nucleoli
        return dict(
            cell_um=n(13.5, 1.8),
            nucleus_fraction=rng.uniform(0.80, 0.90),
            roundness=n(0.05, 0.02),
            indent=rng.uniform(0.0, 0.25),
            chromatin_grid=14,
            chromatin_amp=n(0.12, 0.03),
            chromatin_clump=0.0,
            h_nucleus=n(0.95, 0.1),
            h_cyto=n(0.42, 0.06),
            e_cyto=n(0.05, 0.02),
            nucleoli=int(rng.integers(0, 3)),
            nucleolus_contrast=n(0.25, 0.06),
            auer_rods=0,
            granules=0.0,
            lobes=1,
        )
    if kind == "myeloblast":  # AML: large, nucleus ~70 %, 2-5 prominent nucleoli, Auer rods
        return dict(
            cell_um=n(16.0, 2.0),
            nucleus_fraction=n(0.70, 0.04),
            roundness=n(0.05, 0.02),
            indent=rng.uniform(0.0, 0.1),
            chromatin_grid=16,
            chromatin_amp=n(0.10, 0.03),
            chromatin_clump=0.0,
            h_nucleus=n(0.85, 0.1),
            h_cyto=n(0.30, 0.05),
            e_cyto=n(0.12, 0.03),
            nucleoli=int(rng.integers(2, 6)),
            nucleolus_contrast=n(0.5, 0.08),
            auer_rods=int(rng.random() < 0.3) * int(rng.integers(1, 3)),
            granules=rng.uniform(0.0, 0.15),
            lobes=1,
        )
    if kind in ("cll", "lymphocyte"):  # small mature lymphocyte; CLL: coarse clumped chromatin
        cll = kind == "cll"
        return dict(
            cell_um=n(8.2 if cll else 8.8, 0.9),
            nucleus_fraction=n(0.84, 0.04),
            roundness=n(0.02 if cll else 0.035, 0.01),
            indent=rng.uniform(0.0, 0.1),
            chromatin_grid=7 if cll else 9,
            chromatin_amp=n(0.45 if cll else 0.22, 0.05),
            chromatin_clump=0.8 if cll else 0.2,
            h_nucleus=n(1.2, 0.1),
            h_cyto=n(0.35, 0.05),
            e_cyto=n(0.05, 0.02),
            nucleoli=0,
            nucleolus_contrast=0.0,
            auer_rods=0,
            granules=0.0,
            lobes=1,
        )
    # neutrophil: 2-5 nuclear lobes, granular pink-lilac cytoplasm
    return dict(
        cell_um=n(12.5, 1.0),
        nucleus_fraction=n(0.40, 0.05),
        roundness=n(0.03, 0.01),
        indent=0.0,
        chromatin_grid=8,
        chromatin_amp=n(0.2, 0.04),
        chromatin_clump=0.3,
        h_nucleus=n(1.1, 0.1),
        h_cyto=n(0.10, 0.03),
        e_cyto=n(0.28, 0.05),
        nucleoli=0,
        nucleolus_contrast=0.0,
        auer_rods=0,
        granules=rng.uniform(0.5, 1.0),
        lobes=int(rng.integers(2, 6)),
    )


_CLASS_KINDS: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {
    "ALL": (("lymphoblast",), (1.0,)),
    "AML": (("myeloblast",), (1.0,)),
    "CLL": (("cll",), (1.0,)),
    "normal": (("lymphocyte", "neutrophil"), (0.5, 0.5)),
}


def draw_recipe(class_name: str, difficulty: float, rng: np.random.Generator) -> CellRecipe:
    """Draw the morphology of one cell of ``class_name``.

    With ``difficulty`` > 0 every numeric trait moves a random share (up to ``difficulty``) of
    the way towards a cell of another class, and each discrete trait (nucleoli, lobes, Auer rods)
    is taken from that cell with the same probability, so the classes overlap.

    Args:
        class_name: One of ``ALL``, ``AML``, ``CLL``, ``normal``.
        difficulty: Overlap between classes, 0 (textbook cells) to 1.
        rng: Random generator seeded for this image.

    Returns:
        The cell's recipe.
    """
    kinds, probs = _CLASS_KINDS[class_name]
    kind = str(rng.choice(kinds, p=probs))
    own = _kind_params(kind, rng)
    others = [k for k in _KINDS if k != kind]
    other_kind = str(rng.choice(others))
    other = _kind_params(other_kind, rng)
    w = float(rng.uniform(0.0, difficulty))
    discrete = ("nucleoli", "auer_rods", "lobes", "chromatin_grid")
    mixed: dict[str, float] = {}
    for key, value in own.items():
        if key in discrete:
            mixed[key] = other[key] if rng.random() < w else value
        else:
            mixed[key] = (1.0 - w) * float(value) + w * float(other[key])
    smudged = kind == "cll" and rng.random() < 0.15
    return CellRecipe(
        kind=kind,
        cell_um=max(5.0, mixed["cell_um"]),
        nucleus_fraction=float(np.clip(mixed["nucleus_fraction"], 0.25, 0.95)),
        roundness=max(0.0, mixed["roundness"]),
        indent=max(0.0, mixed["indent"]),
        chromatin_grid=int(mixed["chromatin_grid"]),
        chromatin_amp=max(0.0, mixed["chromatin_amp"]),
        chromatin_clump=max(0.0, mixed["chromatin_clump"]),
        h_nucleus=max(0.3, mixed["h_nucleus"]),
        h_cyto=max(0.02, mixed["h_cyto"]),
        e_cyto=max(0.0, mixed["e_cyto"]),
        nucleoli=int(mixed["nucleoli"]),
        nucleolus_contrast=float(np.clip(mixed["nucleolus_contrast"], 0.0, 0.8)),
        auer_rods=int(mixed["auer_rods"]),
        granules=max(0.0, mixed["granules"]),
        lobes=max(1, int(mixed["lobes"])),
        smudged=smudged,
    )
