"""``leukemia-wbc cv``: a cross-validation from a config, one fold, or ``--collect``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["run_cv"]


def _parser() -> Any:
    from jsonargparse import ActionConfigFile, ArgumentParser  # type: ignore[attr-defined]

    from ..data.datamodule import WBCDataModule
    from ..evaluation import CrossValidator
    from ..models.handcrafted import HandcraftedSVM
    from ..tasks.base import BaseTask

    parser = ArgumentParser(prog="leukemia-wbc cv", description="Cross-validate a model: "
                            "each fold into OUTPUT_DIR/fold_<k>, resumable.")  # fmt: skip
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file or packaged name")
    parser.add_argument("--model", type=BaseTask | HandcraftedSVM, help="task or SVM")
    parser.add_class_arguments(WBCDataModule, "data")
    parser.add_class_arguments(CrossValidator, "cv", skip={"task", "datamodule"},
                               instantiate=False)  # fmt: skip
    parser.add_argument("--folds", type=list[int] | None, default=None,
                        help="run these folds only (one job per fold), e.g. [0,1]")  # fmt: skip
    parser.add_argument("--report", type=bool, default=True,
                        help="write OUTPUT_DIR/report once every fold is finished")  # fmt: skip
    return parser


def run_cv(argv: list[str]) -> int:
    """Run a cross-validation (``--collect DIR`` merges finished folds instead).

    Args:
        argv: Arguments after ``cv``.

    Returns:
        The exit status.
    """
    from ..evaluation import CrossValidator, write_report

    if argv[:1] == ["--collect"]:
        if len(argv) != 2:
            raise ValueError("usage: leukemia-wbc cv --collect OUTPUT_DIR")
        result = CrossValidator.collect(argv[1])
        print(result.to_markdown())
        print(f"report: {write_report([result], Path(argv[1]) / 'report').html}")
        return 0
    parser = _parser()
    cfg = parser.parse_args(argv)
    if cfg.model is None:
        parser.error("--model is required (a task such as DualBranchClassifier, or HandcraftedSVM)")
    init = parser.instantiate_classes(cfg)
    options = dict(vars(cfg.cv))
    cv = CrossValidator(init.model, init.data, **options)
    result = cv.run(folds=cfg.folds)
    print(result.to_markdown())
    complete = len(result.folds) == cv.n_splits
    if complete and cfg.report:
        print(f"report: {write_report([result], cv.output_dir / 'report').html}")
    return 0
