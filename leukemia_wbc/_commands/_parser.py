"""One dialect for every subcommand: jsonargparse options, ``--config`` and ``--print_config``.

Every ``leukemia-wbc`` command parses with jsonargparse, as ``fit`` (LightningCLI) and ``cv``
do, so options are spelled one way everywhere: words joined by underscores
(``--batch_size``, ``--on_error``, like ``--data.batch_size``), each command reads its options
from a YAML file (``--config``; a packaged config by name as well) and prints them as one
(``--print_config``). The dashed spellings of earlier releases (``--batch-size``) are still
read: :func:`parse` turns them into the underscored option before parsing, so ``--help``
lists each option once.

Errors are raised, not printed (``exit_on_error=False``); :func:`leukemia_wbc.cli.main` prints
them as one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["command_parser", "flag", "parse", "underscored"]


def command_parser(prog: str, description: str) -> Any:
    """A subcommand's parser with ``--config`` (and so ``--print_config``).

    Args:
        prog: The command as the user types it (``leukemia-wbc classify``).
        description: The first paragraph of ``--help``.

    Returns:
        A ``jsonargparse.ArgumentParser``.
    """
    from jsonargparse import ActionConfigFile, ArgumentParser  # type: ignore[attr-defined]

    parser = ArgumentParser(prog=prog, description=description, exit_on_error=False)
    parser.add_argument(
        "--config", action=ActionConfigFile,
        help="a YAML file of these options (or a packaged config's name; see `leukemia-wbc "
        "configs`); --print_config writes one",
    )  # fmt: skip
    return parser


def flag(parser: Any, name: str, help: str) -> None:
    """An on/off option, off by default: ``--NAME`` on the command line, ``NAME: true`` in YAML.

    Args:
        parser: The command's parser.
        name: The option without dashes (words joined by underscores).
        help: What it does.
    """
    parser.add_argument(f"--{name}", action="store_true", help=help)


def underscored(argv: Sequence[str], parser: Any) -> list[str]:
    """``argv`` with each dashed option (``--batch-size``) of ``parser`` spelled underscored.

    Args:
        argv: Command-line arguments.
        parser: The parser that reads them (an argparse or jsonargparse parser).

    Returns:
        The arguments, options the parser knows spelled as it knows them; values and anything
        after ``--`` as given.
    """
    known = {s for action in parser._actions for s in action.option_strings}  # argparse's list
    out: list[str] = []
    after_double_dash = False
    for arg in argv:
        if after_double_dash or not arg.startswith("--") or arg == "--":
            after_double_dash = after_double_dash or arg == "--"
            out.append(arg)
            continue
        option, eq, value = arg.partition("=")
        underscored = "--" + option[2:].replace("-", "_")
        out.append(underscored + eq + value if underscored in known else arg)
    return out


def parse(parser: Any, argv: Sequence[str]) -> Any:
    """Parse ``argv`` (dashed spellings of the options read as their underscored names).

    Args:
        parser: A parser of :func:`command_parser`.
        argv: The arguments after the command's name.

    Returns:
        The parsed namespace.
    """
    return parser.parse_args(underscored(argv, parser))
