"""``leukemia-wbc cv``: a cross-validation from a config, one fold, or ``--collect``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._parser import command_parser, underscored

__all__ = ["CVConfig", "load_cv_config", "run_cv"]


@dataclass
class CVConfig:
    """A cross-validation as configured: the model, the data and the validator's options.

    Attributes:
        model: The task (or feature baseline) template of every fold (see
            :func:`~leukemia_wbc.experiments.as_fold_model`).
        data: The DataModule over the whole dataset.
        options: Keyword arguments of :class:`~leukemia_wbc.experiments.CrossValidator` (the
            config's ``cv`` section).
        namespace: The parsed configuration (for the command's own options).
    """

    model: Any
    data: Any
    options: dict[str, Any] = field(default_factory=dict)
    namespace: Any = None


def _parser() -> Any:
    from ..data.datamodule import WBCDataModule
    from ..experiments import CrossValidator
    from ..experiments.fold_model import ConfigurableFoldModel
    from ..tasks.pretrain import PretrainModule

    parser = command_parser("leukemia-wbc cv", "Cross-validate a model: each fold into "
                            "OUTPUT_DIR/fold_<k>, resumable.")  # fmt: skip
    parser.add_argument("--collect", type=str | None, default=None, metavar="OUTPUT_DIR",
                        help="merge the finished folds of this OUTPUT_DIR and write its report "
                             "(no training; the other options are not read)")  # fmt: skip
    parser.add_argument("--model", type=ConfigurableFoldModel, help="task or SVM")
    parser.add_class_arguments(WBCDataModule, "data")
    parser.add_class_arguments(CrossValidator, "cv",
                               skip={"task", "datamodule", "pretrain", "pretrain_epochs"},
                               instantiate=False)  # fmt: skip
    parser.add_argument("--pretrain_epochs", type=int, default=0,
                        help="pretrain each fold's backbone without labels (on that fold's "
                             "training cells) for this many epochs before it trains; 0: off. "
                             "--pretrain.* sets the method; --pretrain.backbone must be the "
                             "model's")  # fmt: skip
    parser.add_class_arguments(PretrainModule, "pretrain", skip={"optim"},
                               instantiate=False)  # fmt: skip
    parser.add_argument("--folds", type=list[int] | None, default=None,
                        help="run these folds only (one job per fold), e.g. [0,1]")  # fmt: skip
    parser.add_argument("--restart_fold", type=list[int] | int | None, default=None,
                        help="train this fold again from the start (its files move to "
                             "OUTPUT_DIR/restarted/, kept); repeatable, or a list [1,2]",
                        )  # fmt: skip
    parser.add_argument("--report", type=bool, default=True,
                        help="write OUTPUT_DIR/report once every fold is finished")  # fmt: skip
    parser.add_argument("--test_data", type=str | None, default=None,
                        help="a data config (YAML file or packaged name) of another dataset: "
                             "every fold's model is also scored on all of it")  # fmt: skip
    parser.add_argument("--robustness", type=bool, default=False,
                        help="score each fold's model on its held-out images under the "
                             "perturbation suite; adds a section to the report")  # fmt: skip
    parser.add_argument("--robustness_strengths", type=list[float], default=[0.25, 0.5, 1.0],
                        help="perturbation strengths in (0, 1]")  # fmt: skip
    parser.add_argument("--test_class_map", type=dict[str, str | None] | None, default=None,
                        help="{test class: training class or null} where names differ")  # fmt: skip
    return parser


def _robustness(result: Any, cfg: Any, output_dir: Path, data: Any) -> Any:
    """The perturbation suite on every fold's held-out images, printed and saved."""
    import json

    from .._io import atomic_write_text
    from ..evaluation.robustness import cv_robustness

    scores = cv_robustness(result, data.dataset, strengths=cfg.robustness_strengths)
    print(f"\nrobustness (accuracy, change from clean; fold means):\n{scores.table()}")
    atomic_write_text(output_dir / "robustness.json", json.dumps(scores.to_rows(), indent=2))
    return scores


def _test_dataset(config: str) -> Any:
    """The dataset of a data config (the ``data`` section, as ``leukemia-wbc fit`` reads it)."""
    from ..configs import resolve_config
    from ..data.datamodule import WBCDataModule

    parser = command_parser("leukemia-wbc cv --test_data", "The data config of the test set.")
    parser.add_class_arguments(WBCDataModule, "data")
    cfg = parser.parse_args(["--config", resolve_config(config)], defaults=True)
    return parser.instantiate_classes(cfg).data


def _cross_dataset(result: Any, cfg: Any, output_dir: Path) -> Any:
    import json

    from .._io import atomic_write_text
    from ..evaluation.cross_dataset import cross_dataset_test

    test = _test_dataset(cfg.test_data)
    name = Path(cfg.test_data).stem
    scores = cross_dataset_test(result, test.dataset, class_map=cfg.test_class_map,
                                target_name=name)  # fmt: skip
    print(f"\ncross-dataset test on {name} ({scores.n_images} images, {scores.excluded} "
          f"excluded by the class map):\n{scores.to_markdown()}")  # fmt: skip
    atomic_write_text(output_dir / f"cross_dataset_{name}.json",
                      json.dumps(scores.to_dict(), indent=2))  # fmt: skip
    return scores


def _merge_repeated(argv: list[str], option: str) -> list[str]:
    """Arguments with every ``option VALUE`` (a number or a list) merged into one list."""
    values: list[str] = []
    rest: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg == option:
            values.append(next(args, ""))
        elif arg.startswith(option + "="):
            values.append(arg.partition("=")[2])
        else:
            rest.append(arg)
    if len(values) < 2:
        return list(argv)
    items = [v.strip().removeprefix("[").removesuffix("]").strip() for v in values]
    return [*rest, option, "[" + ",".join(i for i in items if i) + "]"]


def _restart_folds(value: int | list[int] | None) -> list[int] | None:
    return [value] if isinstance(value, int) else value


def load_cv_config(argv: Sequence[str]) -> CVConfig:
    """Parse ``leukemia-wbc cv`` arguments (configs by path or packaged name) and build them.

    The demo reads the paper's packaged configs through this, so that the command and the demo
    run the same setup.

    Args:
        argv: Arguments as after ``leukemia-wbc cv``, e.g. ``["--config", "paper_dual_branch",
            "--data.dataset.init_args.n", "400"]``.

    Returns:
        The model, the DataModule and the ``cv`` options.

    Raises:
        ArgumentError: A bad argument, or no ``--model`` (jsonargparse's ``ArgumentError``;
            ``leukemia-wbc`` prints it as one line).
        ValueError: A model that does not fit the data: other classes, no nucleus masks and
            no segmenter, a segmentation network of another input size (checked here, before
            any fold).
    """
    from ..configs import resolve_configs
    from ..experiments import as_fold_model

    parser = _parser()
    cfg = parser.parse_args(_merge_repeated(underscored(resolve_configs(argv), parser),
                                            "--restart_fold"))  # fmt: skip
    if cfg.model is None:
        parser.error("--model is required (a task such as DualBranchClassifier, or HandcraftedSVM)")
    init = parser.instantiate_classes(cfg)
    # classes, nucleus masks, segmenter: fail now, before any fold
    as_fold_model(init.model).check(init.data, where="model.init_args")
    options = dict(vars(cfg.cv))
    if cfg.pretrain_epochs < 0:
        parser.error(f"--pretrain_epochs must be >= 0, got {cfg.pretrain_epochs}")
    if cfg.pretrain_epochs > 0:
        from ..tasks.pretrain import PretrainModule

        options["pretrain"] = PretrainModule(**dict(vars(cfg.pretrain)))
        options["pretrain_epochs"] = cfg.pretrain_epochs
    return CVConfig(init.model, init.data, options, cfg)


def _collect_dir(argv: list[str]) -> str | None:
    """The folder of ``--collect DIR`` (alone), or None when the command trains."""
    if not any(a == "--collect" or a.startswith("--collect=") for a in argv):
        return None
    if len(argv) == 1 and argv[0].startswith("--collect="):
        return argv[0].partition("=")[2]
    if len(argv) != 2 or argv[0] != "--collect":
        raise ValueError("usage: leukemia-wbc cv --collect OUTPUT_DIR (no other option)")
    return argv[1]


def run_cv(argv: list[str]) -> int:
    """Run a cross-validation (``--collect DIR`` merges finished folds instead).

    Args:
        argv: Arguments after ``cv``.

    Returns:
        The exit status.
    """
    from ..experiments import CrossValidator
    from ..report import write_report

    collect = _collect_dir(argv)
    if collect is not None:
        result = CrossValidator.collect(collect)
        print(result.to_markdown())
        print(f"report: {write_report([result], Path(collect) / 'report').html}")
        return 0
    setup = load_cv_config(argv)
    cfg = setup.namespace
    cv = CrossValidator(setup.model, setup.data, **setup.options)
    result = cv.run(folds=cfg.folds, restart_folds=_restart_folds(cfg.restart_fold))
    print(result.to_markdown())
    complete = len(result.folds) == cv.n_splits
    if complete:
        from ..evaluation.compare import comparison_warnings

        for warning in comparison_warnings([result]):
            print(f"\nwarning: {warning}")
    if cv.skipped and not complete:
        print(f"\nfolds {cv.skipped} skipped: other runs are training them (see the messages "
              "above); no merged result or report is written. Run again once they finish, or "
              f"merge with: leukemia-wbc cv --collect {cv.output_dir}")  # fmt: skip
    robustness = None
    if complete and cfg.robustness:
        robustness = {result.name: _robustness(result, cfg, cv.output_dir, setup.data)}
    other = []
    if complete and cfg.test_data:
        other = [_cross_dataset(result, cfg, cv.output_dir)]
    if not complete and (cfg.test_data or cfg.robustness) and not cv.skipped:
        print("robustness / cross-dataset tests: waiting for every fold (run again once done)")
    if complete and cfg.report:
        report = write_report([result], cv.output_dir / "report", robustness=robustness,
                              cross_dataset=other)  # fmt: skip
        print(f"report: {report.html}")
    return 0
