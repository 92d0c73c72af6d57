"""Sphinx configuration of the leukemia_wbc documentation (``nox -s docs``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# Importing the package imports torch; keep the build to one thread on shared machines.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import leukemia_wbc  # noqa: E402

project = "leukemia_wbc"
author = "leukemia_wbc developers"
copyright = "leukemia_wbc developers"
release = leukemia_wbc.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "myst_parser",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# Google-style docstrings.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = True

autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
    "member-order": "bysource",
}
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_class_signature = "separated"
autosummary_generate = False

html_theme = "furo"
html_title = f"leukemia_wbc {release}"
html_static_path: list[str] = []


def _skip_namedtuple_fields(
    app: object, what: str, name: str, obj: object, skip: bool, options: object
) -> bool | None:
    """Skip a NamedTuple's generated field descriptors.

    Their docstring is only "Alias for field number N"; the class docstring's ``Attributes:``
    section already describes each field, and documenting both is a duplicate description.
    """
    if what == "class" and (getattr(obj, "__doc__", None) or "").startswith(
        "Alias for field number"
    ):
        return True
    return None


def setup(app: object) -> None:
    """Connect the member filter."""
    app.connect("autodoc-skip-member", _skip_namedtuple_fields)  # type: ignore[attr-defined]
