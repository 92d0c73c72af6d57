"""The attribution gallery grid: cells as columns, image / maps / nucleus outline as rows."""

from __future__ import annotations

import io
import itertools
import math

import numpy as np
import pytest
from PIL import Image

from leukemia_wbc.experiments import GalleryItem
from leukemia_wbc.report.gallery import MAX_COLUMNS, PANEL_PX, block_sizes, gallery_figure

#: The outline's colour (pure green, which neither the cells nor the jet colours contain).
GREEN = (57, 255, 20)


def cell(
    i: int,
    *,
    size: int = 32,
    mask: bool = True,
    branches: tuple[str, ...] = ("cell",),
    method: str = "gradcam",
) -> GalleryItem:
    """A round purple cell with a dark nucleus; its map peaks off-centre."""
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size / 2, xx - size / 2)
    image = np.full((size, size, 3), 235, np.uint8)
    image[r < size * 0.4] = (200, 160, 200)
    nucleus = r < size * 0.2
    image[nucleus] = (90, 40, 130)
    heat = np.exp(-((yy - size / 3) ** 2 + (xx - size / 3) ** 2) / (2 * (size / 8) ** 2))
    return GalleryItem(
        index=i, path=f"cells/{i}.png", fold=i % 3, label="ALL", pred="ALL" if i % 2 else "AML",
        prob=0.8, image=image, maps=dict.fromkeys(branches, heat),
        nucleus_share=dict.fromkeys(branches, 0.4), nucleus_area=float(nucleus.mean()),
        mask=nucleus.astype(np.uint8) if mask else None, method=method,
        nucleus="dataset masks" if mask else None,
    )  # fmt: skip


def png(items: list[GalleryItem]) -> np.ndarray:
    data = gallery_figure(items)
    assert data is not None
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def green_pixels(picture: np.ndarray) -> int:
    r, g, b = (picture[..., k].astype(int) for k in range(3))
    return int(((abs(r - GREEN[0]) < 40) & (g > 215) & (b < 80)).sum())


def test_each_cell_adds_one_readable_column() -> None:
    shapes = [png([cell(i) for i in range(n)]).shape for n in (1, 2, 3, 4)]
    steps = {b[1] - a[1] for a, b in itertools.pairwise(shapes)}
    assert len(steps) == 1 and steps.pop() >= PANEL_PX >= 160  # one panel per column
    heights = [s[0] for s in shapes]
    assert max(heights) - min(heights) < 40  # the same rows (the header may wrap differently)


def test_many_cells_wrap_into_blocks_of_at_most_max_columns() -> None:
    assert MAX_COLUMNS <= 8
    assert block_sizes(7, 5) == [4, 3] and block_sizes(10, 5) == [5, 5] and block_sizes(3) == [3]
    assert sum(block_sizes(23, 5)) == 23 and max(block_sizes(23, 5)) <= 5
    one = png([cell(i) for i in range(MAX_COLUMNS)])
    two = png([cell(i) for i in range(2 * MAX_COLUMNS)])
    assert two.shape[1] == one.shape[1]  # no wider than one block
    assert two.shape[0] > 1.8 * one.shape[0]  # a second block under the first


def test_an_item_without_a_mask_gets_no_outline_row() -> None:
    with_mask, without = png([cell(0), cell(1)]), png([cell(0, mask=False), cell(1, mask=False)])
    row = with_mask.shape[0] - without.shape[0]
    assert row >= PANEL_PX and with_mask.shape[1] == without.shape[1]
    assert green_pixels(with_mask) > 2 * 40  # each cell's nucleus outlined (a ring of pixels)
    assert green_pixels(without) == 0
    # one attribution row per branch, of the same height as the outline row
    dual = png([cell(0, branches=("cell", "nucleus")), cell(1, branches=("cell", "nucleus"))])
    assert dual.shape[0] - with_mask.shape[0] == row


def bar_columns(picture: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Columns and rows of the colour bars' hot end (jet's dark red, (0.5, 0, 0))."""
    r, g, b = (picture[..., k].astype(int) for k in range(3))
    red = (r > 110) & (r < 150) & (g < 15) & (b < 15)
    columns = np.flatnonzero(red.any(axis=0))
    return columns, np.flatnonzero(red[:, columns].any(axis=1))


def test_each_attribution_row_has_one_colour_bar() -> None:
    picture = png([cell(1, branches=("cell", "nucleus")), cell(3, branches=("cell", "nucleus"))])
    columns, rows = bar_columns(picture)
    assert columns.size and columns.min() > 2 * PANEL_PX  # beside the two columns of cells
    assert 1 + int((np.diff(rows) > 1).sum()) == 2  # one bar per branch row


def test_a_map_is_drawn_over_its_cell_and_an_all_zero_map_is_not() -> None:
    def hot(item: GalleryItem) -> int:
        picture = png([item])
        left = picture[:, : bar_columns(picture)[0].min()].astype(int)  # the panels only
        r, g, b = left[..., 0], left[..., 1], left[..., 2]
        return int(((r - g > 55) & (r - b > 40)).sum())

    blank = cell(1)  # a right prediction: black title
    blank.maps["cell"] = np.zeros((32, 32))
    blank.nucleus_share["cell"] = math.nan
    assert hot(cell(1)) > 100 and hot(blank) == 0


def test_one_attribution_method_per_grid() -> None:
    smoothed = cell(0, method="integrated_gradients")
    smoothed.maps["cell"] = np.random.default_rng(0).random((32, 32))
    assert png([smoothed]).shape[1] == png([cell(0)]).shape[1]
    with pytest.raises(ValueError, match="one attribution method per grid"):
        gallery_figure([cell(0), smoothed])
    assert gallery_figure([]) is None
