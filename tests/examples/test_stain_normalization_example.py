"""``examples/stain_normalization.py --fast`` on the real segmentation_WBC images."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "stain_normalization.py"


@pytest.mark.slow  # 11 s; stain normalisation on real cells is tested in test_stain.py
@pytest.mark.realdata
def test_stain_normalization_fast_mode(tmp_path: Path, shared_data: Path) -> None:
    if not (shared_data / "segmentation_WBC").is_dir():
        pytest.skip("segmentation_WBC not present")
    out = tmp_path / "stain"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--fast", "--threads", "1", "--data-root",
         str(shared_data), "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "stain_gap.json").read_text())
    assert result["images"] == {"Dataset 1": 8, "Dataset 2": 8}
    assert result["reference"] == "Dataset 1/001"
    gaps = result["gaps"]
    assert set(gaps) == {"original", "CLAHE", "Macenko", "Macenko + CLAHE",
                         "background removal + Macenko"}  # fmt: skip
    original = gaps["original"]
    # The labs' colours differ before (37.5 / 36.8 grey levels measured on these 16 cells) ...
    assert original["nucleus"]["gap"] > 20 and original["cytoplasm"]["gap"] > 20
    # ... Macenko to one Dataset 1 target halves the nucleus gap (18.3) and, estimated on the
    # white cell alone (background removed), closes most of both gaps (9.3 / 3.4).
    assert gaps["Macenko"]["nucleus"]["gap"] < 0.75 * original["nucleus"]["gap"]
    cell_only = gaps["background removal + Macenko"]
    for region in ("nucleus", "cytoplasm"):
        assert cell_only[region]["gap"] < 0.5 * original[region]["gap"]
        for subset in ("Dataset 1", "Dataset 2"):
            assert cell_only[region][subset]["images"] == 8
            assert all(0 <= v <= 255 for v in cell_only[region][subset]["mean"])
    # Equalisation alone is no colour normaliser: it leaves the gap where it was.
    assert gaps["CLAHE"]["nucleus"]["gap"] > 0.8 * original["nucleus"]["gap"]
    assert "colour gap between the labs" in proc.stdout
    with Image.open(out / "before_after.png") as figure:
        assert figure.width > 500 and figure.height > 600  # 4 columns, reference + 4 rows


def test_stain_normalization_missing_data_root(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = importlib.util.spec_from_file_location("_stain_example", SCRIPT)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, example)  # for its dataclass
    spec.loader.exec_module(example)
    with pytest.raises(SystemExit) as exit_info:
        example.parse_args(["--fast", "--data-root", str(tmp_path / "nowhere")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "no segmentation_WBC folder" in err and "--data-root" in err
