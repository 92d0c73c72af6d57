"""Developer sessions: ``nox -s lint typecheck tests build docs``."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[dev]")
    session.run("mypy")


@nox.session
def tests(session: nox.Session) -> None:
    session.install("-e", ".[dev]")
    session.env["HF_HUB_OFFLINE"] = "1"
    session.run("pytest", *session.posargs)


@nox.session
def build(session: nox.Session) -> None:
    """Build sdist and wheel, install the wheel in a fresh venv, import the package."""
    import glob
    import shutil
    import tempfile

    session.install("build")
    shutil.rmtree("dist", ignore_errors=True)
    session.run("python", "-m", "build")
    wheel = glob.glob("dist/leukemia_wbc-*.whl")[0]
    with tempfile.TemporaryDirectory() as tmp:
        session.run("python", "-m", "venv", f"{tmp}/venv", external=True)
        py = f"{tmp}/venv/bin/python"
        session.run(py, "-m", "pip", "install", "-q", wheel, external=True)
        check = (
            "import importlib.resources, leukemia_wbc, leukemia_wbc.data as d; "
            "assert (importlib.resources.files('leukemia_wbc') / 'py.typed').is_file(); "
            "print('imported leukemia_wbc', leukemia_wbc.__version__, "
            "len(d.SyntheticWBC(2, size=32)))"
        )
        session.run(py, "-c", check, external=True)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the HTML documentation with warnings as errors."""
    session.install("-e", ".[docs]")
    session.env["OMP_NUM_THREADS"] = "1"
    session.run(
        "sphinx-build",
        "-W",
        "--keep-going",
        "-b",
        "html",
        "docs",
        "docs/_build/html",
        *session.posargs,
    )
