"""Procedural rendering of white-blood-cell smear images: building blocks of the synthetic data.

:class:`~leukemia_wbc.data.SyntheticWBC` renders one cell per image with :func:`render_cell`;
:class:`~leukemia_wbc.smear.SyntheticSmear` composes whole fields from the same parts
(:func:`grid`, :func:`plasma`, :func:`add_red_cell`, :func:`white_cell`, :func:`beer_lambert`).

A cell is drawn as two stain-concentration maps, hematoxylin (``H``: nuclei, basophilic
cytoplasm) and eosin (``E``: red cells, granules, plasma), which Beer-Lambert's law turns into
RGB through a per-patient stain matrix and illumination::

    I = I0 * exp(-(C_H * h + C_E * e))

Morphology follows the classes' textbook descriptions (lymphoblast, myeloblast, CLL lymphocyte,
normal lymphocytes and segmented neutrophils). Geometry is set in micrometres and scaled into
the crop so that the white cell fills a class-independent share of the image: as in real
datasets, the red cells (about 7.5 um) are the only scale bar.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np

from .morphology import CellRecipe, PatientStain

__all__ = ["add_red_cell", "beer_lambert", "grid", "plasma", "render_cell", "white_cell"]

_F = np.float32


@functools.lru_cache(maxsize=64)
def _smoother(n_out: int, n_grid: int) -> np.ndarray:
    """Gaussian interpolation matrix ``(n_out, n_grid)`` mapping a coarse grid to pixels.

    Rows have unit Euclidean norm, so that ``A @ G @ B.T`` of a standard-normal grid ``G`` has
    unit variance at every pixel without measuring it.
    """
    centres = np.linspace(-0.1, 1.1, n_grid)
    pos = (np.arange(n_out) + 0.5) / n_out
    sigma = 1.2 / (n_grid - 1)
    k = np.exp(-0.5 * ((pos[:, None] - centres[None, :]) / sigma) ** 2)
    out: np.ndarray = (k / np.sqrt((k * k).sum(axis=1, keepdims=True))).astype(_F)
    return out


def _noise(rng: np.random.Generator, shape: tuple[int, int], grid: int) -> np.ndarray:
    """Smooth zero-mean, unit-variance random field with about ``grid`` blobs per side."""
    grid = max(3, grid)
    g = rng.standard_normal((grid, grid)).astype(_F)
    field: np.ndarray = _smoother(shape[0], grid) @ g @ _smoother(shape[1], grid).T
    return field


@functools.lru_cache(maxsize=8)
def _camera_noise_bank(h: int, w: int) -> np.ndarray:
    """A fixed standard-normal field of twice the image size, from a fixed seed.

    Each image takes a window at a random offset with a random sign, which is far cheaper
    than drawing ``h * w`` normal numbers per image and just as deterministic.
    """
    return np.random.default_rng(20230).standard_normal((2 * h, 2 * w), dtype=_F)


def _camera_noise(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    bank = _camera_noise_bank(h, w)
    y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
    sign = _F(1.0 if rng.random() < 0.5 else -1.0)
    window: np.ndarray = bank[y0 : y0 + h, x0 : x0 + w] * sign
    return window


@functools.lru_cache(maxsize=16)
def grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in units where the shorter side spans [-1, 1]."""
    s = min(h, w) / 2.0
    y = ((np.arange(h, dtype=_F) + 0.5) - h / 2.0) / s
    x = ((np.arange(w, dtype=_F) + 0.5) - w / 2.0) / s
    return np.broadcast_to(y[:, None], (h, w)), np.broadcast_to(x[None, :], (h, w))


def _soft(signed: np.ndarray, edge: float) -> np.ndarray:
    """Anti-aliased inside map from a signed distance (positive inside)."""
    return np.clip(signed / edge + 0.5, 0.0, 1.0)


def _blob(
    yy: np.ndarray,
    xx: np.ndarray,
    cy: float,
    cx: float,
    r: float,
    rng: np.random.Generator,
    wobble: float,
    edge: float,
) -> np.ndarray:
    """Soft map of a round shape with a wavy outline (harmonics 2-4 of amplitude ``wobble``).

    Only the shape's bounding box is computed; the rest of the map is zero.
    """
    coeffs = [(r * wobble * rng.normal(0, 1) / k, rng.uniform(0, 2 * np.pi)) for k in (2, 3, 4)]
    reach = r + sum(abs(a) for a, _ in coeffs) + edge
    out = np.zeros(yy.shape, _F)
    y0, y1, x0, x1 = _box(cy, cx, reach, *yy.shape)
    if y0 >= y1 or x0 >= x1:
        return out
    dy, dx = yy[y0:y1, x0:x1] - cy, xx[y0:y1, x0:x1] - cx
    rho = np.sqrt(dy * dy + dx * dx) + 1e-9
    c1, s1 = dx / rho, dy / rho  # cos and sin of the polar angle, without arctan2
    radius = np.full_like(rho, r)
    ck, sk = c1, s1
    for a, phi in coeffs:  # harmonics 2, 3, 4 by the angle-addition recurrence
        ck, sk = ck * c1 - sk * s1, sk * c1 + ck * s1
        radius += a * (ck * np.cos(phi) - sk * np.sin(phi))
    out[y0:y1, x0:x1] = _soft(radius - rho, edge)
    return out


def render_cell(
    recipe: CellRecipe, stain: PatientStain, size: tuple[int, int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one cell.

    Args:
        recipe: The cell's morphology.
        stain: The patient's stain and acquisition.
        size: ``(height, width)`` in pixels.
        rng: Random generator seeded for this image.

    Returns:
        ``(image, nucleus_mask, cell_mask)``: ``uint8`` ``(H, W, 3)`` and two ``uint8``
        ``(H, W)`` 0/1 masks.
    """
    h, w = size
    yy, xx = grid(h, w)
    edge = 2.0 / min(h, w) * 1.2
    cell_r = float(rng.uniform(0.42, 0.68))
    um = cell_r / (recipe.cell_um / 2.0)  # units per micrometre
    cy, cx = rng.normal(0, 0.04, 2)
    c_e = plasma(stain, (h, w), rng)

    # red cells: a class-independent share of the field, biconcave (pale centre)
    rbc_r = 7.5 / 2 * um * float(rng.uniform(0.92, 1.08))
    target = float(rng.uniform(0.05, 0.35)) * 4.0 * w / h
    for _ in range(int(target / (np.pi * rbc_r**2)) + 1):
        ry, rx = rng.uniform(-1.1, 1.1, 2)
        if np.hypot(ry - cy, rx - cx) < cell_r * 0.6:
            continue
        add_red_cell(c_e, yy, xx, float(ry), float(rx), rbc_r, edge)

    c_h, c_e, nucleus, cell = white_cell(recipe, yy, xx, (cy, cx), cell_r, c_e, rng, edge)
    image = beer_lambert(c_h, c_e, stain, rng)
    return image, (nucleus > 0.5).astype(np.uint8), (cell > 0.5).astype(np.uint8)


def plasma(stain: PatientStain, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Eosin concentration of the background plasma: the patient's level with smooth variation.

    Args:
        stain: The patient's stain and acquisition.
        size: ``(height, width)`` in pixels.
        rng: Random generator.

    Returns:
        ``float32`` ``(H, W)`` concentration map.
    """
    field: np.ndarray = np.full(size, stain.plasma, _F) * (1 + 0.3 * _noise(rng, size, 5))
    return field


def add_red_cell(
    c_e: np.ndarray, yy: np.ndarray, xx: np.ndarray, ry: float, rx: float, r: float, edge: float
) -> None:
    """Add one biconcave red cell (pale centre) to an eosin map in place.

    Args:
        c_e: ``float32`` ``(H, W)`` eosin concentration, changed in place.
        yy: Pixel-centre rows in grid units (see ``grid``).
        xx: Pixel-centre columns in grid units.
        ry: Centre row in grid units.
        rx: Centre column in grid units.
        r: Radius in grid units.
        edge: Anti-aliasing width in grid units.
    """
    y0, y1, x0, x1 = _box(ry, rx, r * 1.2, *c_e.shape)
    if y0 >= y1 or x0 >= x1:
        return
    sy, sx = yy[y0:y1, x0:x1], xx[y0:y1, x0:x1]
    rho = np.sqrt((sy - ry) ** 2 + (sx - rx) ** 2) / r
    inside = _soft((1.0 - rho) * r, edge)
    c_e[y0:y1, x0:x1] += inside * 0.55 * (0.55 + 0.45 * np.clip(rho, 0, 1) ** 2)


def white_cell(
    recipe: CellRecipe,
    yy: np.ndarray,
    xx: np.ndarray,
    centre: tuple[float, float],
    cell_r: float,
    c_e: np.ndarray,
    rng: np.random.Generator,
    edge: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Draw one white cell over a background eosin map.

    Args:
        recipe: The cell's morphology.
        yy: Pixel-centre rows in grid units (see ``grid``).
        xx: Pixel-centre columns in grid units.
        centre: ``(row, column)`` of the cell in grid units.
        cell_r: Cell radius in grid units.
        c_e: Background eosin concentration (plasma, red cells); not changed.
        rng: Random generator.
        edge: Anti-aliasing width in grid units.

    Returns:
        ``(c_h, c_e, nucleus, cell)``: the cell's hematoxylin map, the eosin map with the cell
        drawn over the background, and the soft (0-1) nucleus and cell maps, all ``(H, W)``.
    """
    h, w = yy.shape
    cy, cx = centre
    cell = _blob(yy, xx, cy, cx, cell_r, rng, recipe.roundness, edge)
    r_nuc = cell_r * np.sqrt(recipe.nucleus_fraction)
    off = (cell_r - r_nuc) * rng.uniform(0.0, 0.8)
    ang = rng.uniform(0, 2 * np.pi)
    ny, nx = cy + off * np.sin(ang), cx + off * np.cos(ang)
    if recipe.lobes > 1:
        nucleus = _lobes(yy, xx, cy, cx, cell_r, recipe, rng, edge)
    else:
        nucleus = _blob(yy, xx, ny, nx, r_nuc, rng, recipe.roundness * 1.5, edge)
        if recipe.indent > 0:
            notch_r = r_nuc * recipe.indent
            notch = _blob(
                yy,
                xx,
                ny + r_nuc * np.sin(ang + np.pi),
                nx + r_nuc * np.cos(ang + np.pi),
                notch_r,
                rng,
                0.0,
                edge,
            )
            nucleus = nucleus * (1.0 - notch)
    if recipe.smudged:  # smudge cell: nucleus spread thin, frayed edge, no cytoplasm
        nucleus = _blob(yy, xx, cy, cx, cell_r * 1.05, rng, 0.35, edge * 8)
        cell = np.maximum(cell * 0.0, nucleus)
    nucleus = nucleus * cell

    # chromatin_grid counts texture blobs across the nucleus; the noise grid spans the image
    chrom = _noise(rng, (h, w), int(recipe.chromatin_grid / max(r_nuc, 0.1)))
    if recipe.chromatin_clump > 0:
        clumps = 1.0 / (1.0 + np.exp(-(chrom - 0.3) * 4.0))
        chrom = (1 - recipe.chromatin_clump) * chrom + recipe.chromatin_clump * (2 * clumps - 1)
    h_nuc = recipe.h_nucleus * (1.0 + recipe.chromatin_amp * chrom) * (0.6 if recipe.smudged else 1)
    for _ in range(recipe.nucleoli):
        a, d = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.6) * r_nuc
        spot = _blob(
            yy,
            xx,
            ny + d * np.sin(a),
            nx + d * np.cos(a),
            r_nuc * rng.uniform(0.08, 0.15),
            rng,
            0.1,
            edge,
        )
        h_nuc = h_nuc * (1.0 - recipe.nucleolus_contrast * spot)
    cyto_h: np.ndarray = recipe.h_cyto * (1.0 + 0.1 * _noise(rng, (h, w), 8))
    cyto_e: np.ndarray = np.full((h, w), recipe.e_cyto, _F)
    if recipe.granules > 0:
        gran = np.clip(_noise(rng, (h, w), max(h, w) // 4) - 1.0, 0, None) * recipe.granules
        cyto_e = cyto_e + 0.35 * gran
        cyto_h = cyto_h + 0.12 * gran
    for _ in range(recipe.auer_rods):
        cyto_e = cyto_e + 0.9 * _rod(yy, xx, cy, cx, cell_r, r_nuc, rng, edge)
    cyto = cell - nucleus
    c_h = cyto * cyto_h + nucleus * h_nuc
    c_e = c_e * (1 - cell) + cyto * cyto_e + nucleus * _F(0.08)
    return c_h, c_e, nucleus, cell


def beer_lambert(
    c_h: np.ndarray, c_e: np.ndarray, stain: PatientStain, rng: np.random.Generator
) -> np.ndarray:
    """Turn stain concentrations into an RGB image, with camera noise shared by the channels.

    Args:
        c_h: ``float32`` ``(H, W)`` hematoxylin concentration.
        c_e: ``float32`` ``(H, W)`` eosin concentration.
        stain: The patient's stain and acquisition.
        rng: Random generator (draws the noise window).

    Returns:
        ``uint8`` ``(H, W, 3)`` image.
    """
    h, w = c_h.shape
    noise = _camera_noise(rng, h, w) * _F(stain.noise) + _F(0.5)
    image = np.empty((h, w, 3), np.uint8)
    for ch in range(3):
        od = c_h * _F(stain.h[ch] * stain.h_scale) + c_e * _F(stain.e[ch] * stain.e_scale)
        channel = np.exp(-od, out=od)
        channel *= _F(stain.illumination[ch])
        channel += noise
        np.clip(channel, 0, 255, out=channel)
        image[:, :, ch] = channel
    return image


def _box(cy: float, cx: float, r: float, h: int, w: int) -> tuple[int, int, int, int]:
    s = min(h, w) / 2.0
    y0 = max(0, int((cy - r) * s + h / 2.0))
    y1 = min(h, int((cy + r) * s + h / 2.0) + 1)
    x0 = max(0, int((cx - r) * s + w / 2.0))
    x1 = min(w, int((cx + r) * s + w / 2.0) + 1)
    return y0, y1, x0, x1


def _lobes(
    yy: np.ndarray,
    xx: np.ndarray,
    cy: float,
    cx: float,
    cell_r: float,
    recipe: CellRecipe,
    rng: np.random.Generator,
    edge: float,
) -> np.ndarray:
    """Segmented nucleus: lobes along an arc joined by thin chromatin filaments."""
    n = recipe.lobes
    lobe_r = cell_r * np.sqrt(recipe.nucleus_fraction / n) * 0.95
    arc_r = cell_r * 0.45
    start = rng.uniform(0, 2 * np.pi)
    span = rng.uniform(0.8, 1.5) * np.pi
    angles = start + np.linspace(0, span, n)
    centres = [(cy + arc_r * np.sin(a), cx + arc_r * np.cos(a)) for a in angles]
    out = np.zeros_like(yy)
    for ly, lx in centres:
        out = np.maximum(
            out, _blob(yy, xx, ly, lx, lobe_r * rng.uniform(0.85, 1.1), rng, 0.08, edge)
        )
    for (ay, ax), (by, bx) in itertools.pairwise(centres):
        out = np.maximum(
            out, _soft(cell_r * 0.05 - _segment_distance(yy, xx, ay, ax, by, bx), edge)
        )
    return out


def _segment_distance(
    yy: np.ndarray, xx: np.ndarray, ay: float, ax: float, by: float, bx: float
) -> np.ndarray:
    vy, vx = by - ay, bx - ax
    t = np.clip(((yy - ay) * vy + (xx - ax) * vx) / (vy * vy + vx * vx + 1e-12), 0, 1)
    return np.sqrt((yy - ay - t * vy) ** 2 + (xx - ax - t * vx) ** 2)


def _rod(
    yy: np.ndarray,
    xx: np.ndarray,
    cy: float,
    cx: float,
    cell_r: float,
    r_nuc: float,
    rng: np.random.Generator,
    edge: float,
) -> np.ndarray:
    """A thin Auer rod in the cytoplasm (between nucleus and membrane)."""
    a = rng.uniform(0, 2 * np.pi)
    d = (cell_r + r_nuc) / 2.0
    my, mx = cy + d * np.sin(a), cx + d * np.cos(a)
    t = a + np.pi / 2 + rng.normal(0, 0.3)
    half = cell_r * rng.uniform(0.15, 0.3)
    dist = _segment_distance(
        yy,
        xx,
        my - half * np.sin(t),
        mx - half * np.cos(t),
        my + half * np.sin(t),
        mx + half * np.cos(t),
    )
    return _soft(cell_r * 0.018 - dist, edge)
