"""One fold of a cross-validation as its own job, or the merge of all folds into a report.

Each fold of :class:`~leukemia_wbc.experiments.CrossValidator` writes only into
``<out>/fold_<k>/``, so folds can run as separate jobs (a SLURM job array, or one ``torchrun``
per fold) on a shared file system; ``--collect`` merges them once all have finished. Inside a
fold, ``--devices`` and ``--nodes`` train with Lightning's DDP (SLURM's ``srun`` or
``torchrun`` starts one process per device; Lightning detects either).

    # C-NMC 2019, fold 3 of 10, on 2 GPUs of one node
    ARGS="--root /data/C-NMC_Leukemia --out runs/cnmc"
    srun python examples/slurm/cv_fold.py $ARGS --fold 3 --devices 2
    torchrun --nproc_per_node=2 examples/slurm/cv_fold.py $ARGS --fold 3 --devices 2
    # after every fold: the table and the report
    python examples/slurm/cv_fold.py $ARGS --collect

Without ``--root`` it runs on :class:`~leukemia_wbc.data.SyntheticWBC` (a dry run).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from leukemia_wbc.data import CNMC2019, SyntheticWBC, WBCDataModule, WBCDataset
from leukemia_wbc.experiments import CrossValidator
from leukemia_wbc.report import write_report
from leukemia_wbc.tasks import DualBranchClassifier


def main(argv: list[str] | None = None) -> None:
    """Run one fold, or collect all folds."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="shared output folder")
    parser.add_argument("--root", type=Path, help="C-NMC 2019 root (default: SyntheticWBC)")
    parser.add_argument("--fold", type=int, help="fold to run (e.g. $SLURM_ARRAY_TASK_ID)")
    parser.add_argument("--collect", action="store_true", help="merge finished folds, report")
    parser.add_argument("--folds", type=int, default=10, help="number of folds")
    parser.add_argument("--devices", type=int, default=1, help="GPUs per node for this fold")
    parser.add_argument("--nodes", type=int, default=1, help="nodes for this fold")
    parser.add_argument("--epochs", type=int, default=30, help="epochs per fold")
    parser.add_argument("--workers", type=int, default=8, help="data loader workers")
    args = parser.parse_args(argv)
    if args.collect:
        result = CrossValidator.collect(args.out)
        print(result.to_markdown())
        print(f"report: {write_report([result], args.out / 'report').html}")
        return
    if args.fold is None:
        parser.error("give --fold K (one job per fold) or --collect")
    dataset: WBCDataset = (
        CNMC2019(args.root, size=224) if args.root else SyntheticWBC(600, size=64, seed=0)
    )
    dm = WBCDataModule(
        dataset,
        size=dataset.size,
        batch_size=64,
        num_workers=args.workers,
        stain_normalization=True,
    )
    # C-NMC has no nucleus masks: the classical segmenter supplies them on the device.
    segmenter = None
    if not dataset.has_masks:
        from leukemia_wbc.models import ClassicalNucleusSegmenter

        segmenter = ClassicalNucleusSegmenter()
    task = DualBranchClassifier(
        num_classes=dataset.num_classes, classes=dataset.classes, segmenter=segmenter
    )
    strategy = "ddp" if args.devices * args.nodes > 1 else "auto"
    cv = CrossValidator(
        task,
        dm,
        args.out,
        n_splits=args.folds,
        devices=args.devices,
        num_nodes=args.nodes,
        strategy=strategy,
        max_epochs=args.epochs,
        precision="bf16-mixed" if args.root else "32-true",
    )
    cv.run(folds=[args.fold])


if __name__ == "__main__":
    main()
