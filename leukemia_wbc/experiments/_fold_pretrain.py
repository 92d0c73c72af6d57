"""Each cross-validation fold's self-supervised pretraining (``CrossValidator(pretrain=...)``).

Private helper of :mod:`leukemia_wbc.experiments.cross_validation`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..data.datamodule import WBCDataModule
from ..data.splits import Split
from ..tasks.pretrain import PretrainModule
from ._spec import rebuild
from .fold_model import FoldModel
from .pretraining import BACKBONE_FILE, pretrain

__all__ = ["FoldPretraining"]

_log = logging.getLogger(__name__)


class FoldPretraining:
    """Pretrain a fold's backbone on its own training cells, then start its model from them.

    Args:
        module: The pretraining template (a fresh copy is built for each fold).
        epochs: Epochs of each fold's pretraining.
        model: The cross-validation's fold model, checked to have a part of the module's
            architecture.

    Raises:
        ValueError: ``epochs`` below 1, or a model without a backbone of that architecture.
    """

    def __init__(self, module: PretrainModule, epochs: int, model: FoldModel) -> None:
        if epochs < 1:
            raise ValueError(f"pretrain_epochs must be >= 1, got {epochs}")
        try:
            model.with_pretrained(None, module.backbone_name)
        except ValueError as err:
            raise ValueError(f"pretrain: {err}") from None
        self.module, self.epochs = module, epochs

    def config(self) -> dict[str, Any]:
        """The settings, for the run's ``config.json`` (a changed setting is a new run)."""
        return {"pretrain": {"epochs": self.epochs, **dict(self.module.hparams)}}

    def model_for(
        self,
        model: FoldModel,
        fold: int,
        folder: Path,
        datamodule: WBCDataModule,
        split: Split,
        trainer_args: dict[str, Any],
        seed: int,
    ) -> FoldModel:
        """``model`` starting from fold ``fold``'s pretrained weights (pretrained now if needed).

        The pretraining goes to ``folder/pretrain`` and sees the fold's training and
        validation cells only; a finished one is reused.

        Args:
            model: The fold model.
            fold: The fold index.
            folder: The fold's folder.
            datamodule: The cross-validation's data.
            split: The fold's split (its test part is left out).
            trainer_args: The cross-validation's Trainer arguments (accelerator, devices,
                precision, progress bar).
            seed: The cross-validation's seed (the fold's pretraining uses ``seed + fold``).

        Returns:
            The fold model to train.

        Raises:
            ValueError: A distributed cross-validation (pretrain its folds separately with
                ``leukemia-wbc pretrain --data.fold K``).
        """
        if (
            trainer_args.get("devices") not in (1, "1", [0])
            or trainer_args.get("num_nodes", 1) != 1
        ):
            raise ValueError(
                "pretrain= runs each fold's pretraining in one process: use devices=1, or "
                "pretrain each fold beforehand (leukemia-wbc pretrain --data.fold K) and pass "
                "its weights to the model"
            )
        done = folder / "pretrain" / BACKBONE_FILE
        if done.is_file():
            _log.info("fold %d starts from the pretrained %s", fold, done)
        else:
            module = rebuild(self.module)()
            assert isinstance(module, PretrainModule)
            pretrain(
                module, datamodule, done.parent, split=split, max_epochs=self.epochs,
                accelerator=str(trainer_args["accelerator"]), devices=trainer_args["devices"],
                precision=trainer_args["precision"], seed=seed + fold,
                progress=bool(trainer_args.get("enable_progress_bar", True)),
            )  # fmt: skip
        return model.with_pretrained(str(done), self.module.backbone_name)
