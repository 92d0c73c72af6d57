"""The packaged YAML configs and their lookup by name (``--config paper_dual_branch``)."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path

__all__ = ["config_names", "resolve_config", "resolve_configs"]


def config_names() -> list[str]:
    """Names of the packaged YAML configs (``leukemia_wbc/configs/<name>.yaml``)."""
    folder = resources.files("leukemia_wbc") / "configs"
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


def resolve_config(value: str) -> str:
    """A ``--config`` value: an existing file as given, else a packaged config by name.

    Args:
        value: A path or a config name (``paper_dual_branch``, ``demo``, ...).

    Returns:
        The file path.

    Raises:
        FileNotFoundError: Neither a file nor a packaged config; the message lists the names.
    """
    if Path(value).is_file():
        return value
    name = value.removesuffix(".yaml")
    if name in config_names():
        return str(resources.files("leukemia_wbc") / "configs" / f"{name}.yaml")
    raise FileNotFoundError(
        f"config {value!r} is neither a file nor a packaged config; "
        f"packaged: {', '.join(config_names())}"
    )


def resolve_configs(argv: Sequence[str]) -> list[str]:
    """Command-line arguments with every ``--config`` / ``-c`` value resolved (see above).

    Args:
        argv: Arguments (``--config NAME``, ``-c NAME`` or ``--config=NAME``).

    Returns:
        The arguments with file paths in place of packaged config names.

    Raises:
        FileNotFoundError: A value that is neither a file nor a packaged config.
    """
    out: list[str] = []
    for i, arg in enumerate(argv):
        if i > 0 and argv[i - 1] in ("--config", "-c"):
            out.append(resolve_config(arg))
        elif arg.startswith("--config="):
            out.append("--config=" + resolve_config(arg.partition("=")[2]))
        else:
            out.append(arg)
    return out
