"""``datasets verify`` decodes every file and lists those that training could not read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from leukemia_wbc.cli import main
from tests.conftest import make_fixture


def _verify(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, list[str]]:
    code = main(["datasets", "verify", *map(str, args)])
    return code, capsys.readouterr().out.splitlines()


def test_unreadable_images_and_off_code_masks_are_listed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_fixture("segmentation_wbc", tmp_path)
    code, lines = _verify(capsys, "segmentation_wbc", root)
    assert code == 0 and lines[-1] == "decoded: all 10 images readable"

    broken = root / "Dataset 1" / "003.bmp"
    broken.write_bytes(b"BM" + b"\0" * 20)  # a BMP header cut short
    width, height = Image.open(root / "Dataset 2" / "001.bmp").size
    noise = np.random.default_rng(0).integers(0, 256, (height, width), dtype=np.uint8)
    Image.fromarray(noise).save(root / "Dataset 2" / "001.png")  # the mask is noise
    width, height = Image.open(root / "Dataset 2" / "002.bmp").size
    Image.fromarray(np.zeros((height, width), np.uint8)).save(root / "Dataset 2" / "002.png")
    code, lines = _verify(capsys, "segmentation_wbc", root)
    assert code == 1
    start = lines.index("decoded: 2 of 10 images cannot be read; 1 with an empty nucleus mask "
                        "(kept):")  # fmt: skip
    listed = lines[start + 1 :]
    assert len(listed) == 2
    assert listed[0].startswith(f"  {broken}: ")
    assert listed[1].startswith(f"  {root / 'Dataset 2' / '001.bmp'}: ")
    assert "001.png" in listed[1] and "grey levels from every code" in listed[1]

    code, lines = _verify(capsys, "segmentation_wbc", root, "--no-decode")
    assert code == 0 and not any(line.startswith("decoded") for line in lines)


def test_large_datasets_are_decoded_only_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from leukemia_wbc._commands import datasets

    root = make_fixture("segmentation_wbc", tmp_path)
    monkeypatch.setattr(datasets, "DECODE_LIMIT", 5)
    code, lines = _verify(capsys, "segmentation_wbc", root)
    assert code == 0 and lines[-1].startswith(
        "not decoded: 10 images are more than 5; pass --decode"
    )
    code, lines = _verify(capsys, "segmentation_wbc", root, "--decode")
    assert code == 0 and lines[-1] == "decoded: all 10 images readable"
