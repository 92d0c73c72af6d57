"""``leukemia-wbc fit | validate | test | predict``: Lightning's ``LightningCLI``, checked first.

Every task of the library (``--model CellClassifier``, ``DualBranchClassifier``,
``SegmentationModule``, ``DetectionModule``, or a subclass by class path) trains with its data
module (``--data WBCDataModule`` for cells, ``--data SmearDataModule`` for whole smear fields).

The subclass differs from ``LightningCLI`` in four ways, all about bad input:

* the model and the data are checked against each other (classes, nucleus masks, the
  segmenter's input size: :meth:`~leukemia_wbc.tasks.ClassificationTask.bind_data`) as soon as
  they exist, before the trainer is built: a mismatch is one error naming the argument, and
  nothing (logger folder, saved config, checkpoint) is written;
* the model's arguments are plain values: a path given to one (``segmenter: unet.ckpt``) stays
  a path, where ``LightningCLI`` would read a text file's content in its place;
* the seed is set before the model is built, as ``LightningCLI`` does, but Lightning's
  ``Seed set to N`` line comes after the check, so that a bad input prints one line only;
* ``main`` passes the command line itself, so Lightning's warning about ``args`` given beside
  ``sys.argv`` is not printed; a value of the wrong type raises (``main`` prints it as one
  line) instead of printing the whole usage.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.seed import seed_everything
from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

__all__ = ["WBCLightningCLI", "run_lightning"]

#: How the model's constructor arguments are named on the command line and in a config.
MODEL_ARGS = "model.init_args"
_SUBCOMMANDS = ("fit", "validate", "test", "predict")
#: Lightning's logger of the seed (its ``Seed set to N`` line).
_SEED_LOG = logging.getLogger("lightning.fabric.utilities.seed")


def _plain_model_arguments(parser: LightningArgumentParser) -> None:
    """Read the model's arguments as values, never as paths of sub-config files.

    ``LightningCLI`` adds ``model`` with sub-configs enabled, so that an argument whose type
    admits a class (``segmenter: str | nn.Module | None``) is read from the file it names
    when that file is text: ``--model.init_args.segmenter notes.ckpt`` would pass the file's
    content as the segmenter, and a YAML file there could name a class to build.
    """
    for action in parser._actions:  # argparse's list; jsonargparse adds no public accessor
        nested = getattr(action, "sub_add_kwargs", None)  # what jsonargparse adds the class with
        if action.dest == "model" and isinstance(nested, dict):
            nested["sub_configs"] = False


class WBCLightningCLI(LightningCLI):
    """``LightningCLI`` that checks the model against its data before building the trainer."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Make the model's arguments plain values (see :func:`_plain_model_arguments`).

        Args:
            parser: The parser of one subcommand.
        """
        _plain_model_arguments(parser)
        parser.add_argument(
            "--mask_cache", type=bool | str, default=True,
            help="where a model that segments its cells (a segmenter, data without masks) keeps "
                 "the masks, computed once before the first epoch: true: "
                 "TRAINER.DEFAULT_ROOT_DIR/mask_cache; a folder (shared by runs); false: in "
                 "memory for this run",
        )  # fmt: skip

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse ``args`` (the command line, from :func:`~leukemia_wbc.cli.main`).

        Args:
            parser: The main parser.
            args: The arguments.
        """
        self.config = parser.parse_args(args)

    def _set_seed(self) -> None:
        """Seed as ``LightningCLI`` does, but report the seed once the model has been checked.

        ``LightningCLI`` seeds before building the model, printing ``Seed set to N`` (and for
        ``seed_everything: true`` a warning): a model that does not fit its data would fail
        with those lines before its one-line error. The seed is the same (``true``: the
        ``PL_GLOBAL_SEED`` environment variable, else 0).
        """
        config = self.config[self.subcommand] if self.subcommand else self.config
        value = config.get("seed_everything")
        self._seed: int | None = None
        if value is False:
            return
        self._seed = seed_everything(None if value is True else value, workers=True,
                                     verbose=False)  # fmt: skip
        config["seed_everything"] = self._seed

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Check the model against the data, then build the trainer (with ``--mask_cache``).

        Args:
            kwargs: Trainer arguments (as ``LightningCLI.instantiate_trainer``).

        Returns:
            The trainer.

        Raises:
            ValueError: Another class count, names or order than the data's; no nucleus
                masks and no segmenter; a segmentation network of another input size (see
                :meth:`~leukemia_wbc.tasks.ClassificationTask.bind_data`).
        """
        from ..tasks.classifier_base import ClassificationTask

        model, data = getattr(self, "model", None), getattr(self, "datamodule", None)
        if isinstance(model, ClassificationTask) and hasattr(data, "classes"):
            model.bind_data(data, where=MODEL_ARGS)
        if getattr(self, "_seed", None) is not None:
            _SEED_LOG.info("Seed set to %d", self._seed)
        trainer = super().instantiate_trainer(**kwargs)
        config = self.config[self.subcommand] if self.subcommand else self.config
        where = config.get("mask_cache", True)
        if self.subcommand == "fit" and where is not False:
            from ..tasks.segment_once import SegmentOnce

            callbacks: list[Any] = getattr(trainer, "callbacks")  # noqa: B009 (no stub)
            if not any(isinstance(c, SegmentOnce) for c in callbacks):
                callbacks.append(SegmentOnce(None if where is True else where))
        return trainer


def _check_configs(argv: list[str]) -> None:
    """Refuse a cross-validation config given to ``fit`` with one line saying what to run.

    The packaged model configs (``demo``, ``paper_dual_branch``, ...) describe a
    cross-validation: a ``cv:`` section and ``WBCDataModule``'s arguments under ``data:``.
    ``LightningCLI`` would answer ``data: expected null``.

    Args:
        argv: The arguments, ``--config`` values already resolved to files.

    Raises:
        ValueError: A config with a ``cv:`` section.
    """
    import yaml

    for i, arg in enumerate(argv):
        if i > 0 and argv[i - 1] in ("--config", "-c"):
            file = arg
        elif arg.startswith("--config="):
            file = arg.partition("=")[2]
        else:
            continue
        try:
            with open(file, encoding="utf-8") as handle:
                config = yaml.safe_load(handle)
        except (OSError, yaml.YAMLError):
            continue  # LightningCLI names the file and its error
        if isinstance(config, dict) and "cv" in config:
            name = Path(file).stem
            raise ValueError(
                f"--config {name}: a cross-validation config (it has a cv: section), which "
                f"`{argv[0]}` does not read; run `leukemia-wbc cv --config {name}`, or give "
                "`fit` a config whose model: and data: name their class_path (e.g. "
                "segmentation_unet) or --model ... --data WBCDataModule"
            )


def run_lightning(argv: list[str]) -> int:
    """Run ``fit``, ``validate``, ``test`` or ``predict``.

    Args:
        argv: The arguments, the subcommand first.

    Returns:
        The exit status (0: done; errors raise).
    """
    from lightning.pytorch import LightningDataModule

    # Imported so that jsonargparse knows the library's tasks and data modules by short name
    # (``--model DetectionModule --data SmearDataModule``).
    from .. import tasks  # noqa: F401
    from ..data.datamodule import WBCDataModule  # noqa: F401
    from ..smear.datamodule import SmearDataModule  # noqa: F401
    from ..smear.task import DetectionModule  # noqa: F401
    from ..tasks.base import BaseTask

    _check_configs(argv)
    WBCLightningCLI(
        BaseTask,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=argv,
        save_config_kwargs={"overwrite": True},
        # a bad value raises (main prints one line) instead of printing the whole usage
        parser_kwargs={
            "exit_on_error": False,
            **{c: {"exit_on_error": False} for c in _SUBCOMMANDS},
        },
    )
    return 0
