"""A manifest lists each image once: a repeated row is merged, a conflicting one refused."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from leukemia_wbc.data.folder import ManifestWBC
from tests.conftest import make_fixture


@pytest.fixture()
def manifest(tmp_path: Path) -> Path:
    return make_fixture("folder", tmp_path) / "manifest.csv"


def _append(csv_path: Path, row: str) -> None:
    csv_path.write_text(csv_path.read_text().rstrip("\n") + "\n" + row + "\n")


def _first_row(csv_path: Path) -> list[str]:
    return csv_path.read_text().splitlines()[1].split(",")


def test_identical_row_is_kept_once_with_a_warning(
    manifest: Path, caplog: pytest.LogCaptureFixture
) -> None:
    before = ManifestWBC(manifest)
    _append(manifest, ",".join(_first_row(manifest)))
    with caplog.at_level(logging.WARNING, logger="leukemia_wbc.data.manifest"):
        after = ManifestWBC(manifest)
    assert after.paths == before.paths and after.groups == before.groups
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "line 6 repeats line 2" in warned[0], warned


def test_same_file_by_another_spelling_is_the_same_file(manifest: Path) -> None:
    path, label, _group, *rest = _first_row(manifest)
    other = "./" + path.replace("/", "/./", 1)  # resolves to the same file
    _append(manifest, ",".join([other, label, "another_patient", *rest]))
    with pytest.raises(ValueError, match=r"manifest\.csv: the image .* line 2 .*line 6"):
        ManifestWBC(manifest)


@pytest.mark.parametrize("field", ["label", "group"])
def test_conflicting_rows_are_refused_naming_both_lines(manifest: Path, field: str) -> None:
    row = _first_row(manifest)
    if field == "label":
        row[1] = "Neutrophil" if row[1] != "Neutrophil" else "Lymphocyte"
    else:
        row[2] = "patient_z"
    _append(manifest, ",".join(row))
    with pytest.raises(ValueError, match=r"listed on line 2 .* again on line 6 .*expected each"):
        ManifestWBC(manifest)
