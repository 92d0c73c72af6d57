"""The ``leukemia-wbc`` command (also ``python -m leukemia_wbc``).

``fit``, ``validate``, ``test`` and ``predict`` are Lightning's ``LightningCLI`` in subclass
mode (``--model DualBranchClassifier --data WBCDataModule``, or YAML ``class_path``); ``cv``
runs the :class:`~leukemia_wbc.experiments.CrossValidator`; ``datasets`` lists the known
datasets and verifies a folder. ``--config NAME`` accepts a packaged preset by name
(``leukemia-wbc cv --config demo``). Errors are one line on stderr and a non-zero exit status;
``--debug`` shows the traceback.
"""

from __future__ import annotations

import importlib
import itertools
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .configs import config_names, resolve_config, resolve_configs

__all__ = ["config_names", "main", "resolve_config"]

_LIGHTNING = ("fit", "validate", "test", "predict")
_USAGE = """usage: leukemia-wbc COMMAND [options]

commands:
  fit | validate | test | predict   train or evaluate a task (LightningCLI; see --help)
  cv                                cross-validate a model, or --collect a folder's folds
  pretrain                          pretrain a backbone without labels (SimCLR / BYOL)
  classify CHECKPOINT PATHS...      class probabilities of images into a CSV
  explain CHECKPOINT PATHS...       attribution overlays (Grad-CAM or Integrated Gradients)
  analyze-smear CHECKPOINTS IMAGES...
                                    whole smears: detect and classify the white cells,
                                    count blasts (share, interval), overlays
  datasets [verify NAME ROOT]       the known datasets, or check a dataset folder
  demo [--full]                     U-Net, the paper's comparison beside colour alone, report,
                                    on SyntheticWBC (CPU-sized; --full: the paper's settings)
  configs                           the packaged configs (use with --config NAME)

options: --debug shows tracebacks; COMMAND --help lists a command's options.
"""


def _lightning(argv: list[str]) -> int:
    from ._commands.fit import run_lightning

    return run_lightning(argv)


def _configs(argv: list[str]) -> int:
    names = config_names()
    width = max(len(n) for n in names) + 1
    for name in names:
        path = resolve_config(name)
        first = Path(path).read_text(encoding="utf-8").splitlines()[0].lstrip("# ")
        print(f"{name:{width}s} {first}")
    return 0


#: Subcommand -> ``"module:function"`` under ``leukemia_wbc._commands`` (imported only when the
#: command runs, so ``--help`` and the command list load neither PyTorch nor Lightning), or the
#: function itself.
_COMMANDS: dict[str, str | Callable[[list[str]], int]] = {
    "cv": "cv:run_cv",
    "pretrain": "pretrain:run_pretrain",
    "classify": "classify:run_classify",
    "explain": "classify:run_explain",
    "analyze-smear": "smear:run_analyze_smear",
    "datasets": "datasets:run_datasets",
    "configs": _configs,
    "demo": "demo:run_demo_command",
}


def _handler(command: str) -> Callable[[list[str]], int] | None:
    """The function that runs ``command`` (its module imported now), or None if unknown."""
    target = _COMMANDS.get(command)
    if target is None or callable(target):
        return target
    module, _, function = target.partition(":")
    run: Callable[[list[str]], int] = getattr(
        importlib.import_module(f"._commands.{module}", __package__), function
    )
    return run


def main(args: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        args: Arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        The exit status (0 on success).
    """
    argv = list(sys.argv[1:] if args is None else args)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help"):
        print(_USAGE)
        return 0 if argv else 2
    try:
        argv = resolve_configs(argv)
        if argv[0] in _LIGHTNING:
            return _lightning(argv)
        handler = _handler(argv[0])
        if handler is None:
            raise ValueError(
                f"unknown command {argv[0]!r}; expected one of "
                f"{', '.join([*_LIGHTNING, *_COMMANDS])}"
            )
        return handler(argv[1:])
    except SystemExit as stop:  # argparse / jsonargparse already printed their message
        return stop.code if isinstance(stop.code, int) else 1
    except Exception as err:  # one line for the user; the traceback with --debug
        if debug:
            raise
        print(f"leukemia-wbc: error: {_one_line(str(err))}", file=sys.stderr)
        return 1


def _one_line(message: str) -> str:
    """One line of an error message.

    jsonargparse reports a value of the wrong type as nested ``Parser key "..."`` blocks; they
    become ``<argument>: expected <types>; got <value>`` (:func:`_type_error`). It reports a
    bad ``class_path`` argument (or a model whose constructor failed) as a list of causes, one
    per candidate type, followed by the whole namespace; the causes that name the argument are
    kept, the "not a subclass of" ones of the other candidates and the "expected None" of an
    optional argument are dropped.
    """
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if len(lines) <= 1:
        return message.strip()
    typed = _type_error(lines)
    if typed is not None:
        return typed
    causes = [
        line[2:] for line in lines
        if line.startswith("- ") and "does not correspond to a subclass" not in line
        and line != "- Expected a <class 'NoneType'>"
    ]  # fmt: skip
    return "; ".join(causes) if causes else lines[0]


_KEY = re.compile(r'^(?:- )?Parser key "([^"]+)":')
_GOT = re.compile(r"^(?:- )?(Expected .*?)\. Got value: (.*)$")


def _type_name(expected: str) -> str:
    """``Expected a <class 'int'>`` -> ``int``; a ``Literal`` -> its choices."""
    text = expected.removeprefix("- ").removeprefix("Expected ").removeprefix("a ")
    if text.startswith("dot import path string"):  # an unknown class name
        return "a class name or a dot import path"
    if text.startswith("path but "):  # neither a config file nor a value
        return "a config file"
    text = re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", text).replace("NoneType", "null")
    literal = re.fullmatch(r"typing\.Literal\[(.*)\]", text)
    return f"one of {literal.group(1)}" if literal else text


def _type_error(lines: list[str]) -> str | None:
    """``<argument>: expected <types>; got <value>`` of jsonargparse's nested report, or None.

    The argument is the chain of ``Parser key`` names down to the innermost one (a class's
    arguments under ``init_args``), the types and the value are that key's.
    """
    keys = [(i, m.group(1)) for i, line in enumerate(lines) if (m := _KEY.match(line))]
    if not keys:
        return None
    path = keys[0][1]
    for (before, _), (at, key) in itertools.pairwise(keys):
        nested = any("Problem with given class_path" in line for line in lines[before:at])
        path += (".init_args." if nested else ".") + key
    inner = lines[keys[-1][0] + 1 :]
    expected: list[str] = []
    got = None
    for line in inner:
        pair = _GOT.match(line)
        if pair:
            expected.append(_type_name(pair.group(1)))
            got = pair.group(2)
            break
        if line.removeprefix("- ").startswith("Expected "):
            expected.append(_type_name(line))
        elif line.startswith("Given value: "):
            got = line.removeprefix("Given value: ")
            break
    if not expected:
        return f"{path}: {inner[0]}" if inner else None
    names = " or ".join(dict.fromkeys(expected))
    return f"{path}: expected {names}; got {got!r}" if got is not None else f"{path}: {names}"


if __name__ == "__main__":
    sys.exit(main())
