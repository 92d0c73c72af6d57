"""BaseTask: abstract hooks, the public step, and checkpoints saved before OptimConfig."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch import Tensor, nn

from leukemia_wbc.data import SyntheticWBC, WBCDataModule
from leukemia_wbc.tasks import BaseTask, CellClassifier, ClassificationTask, OptimConfig, Stage

SIZE = 32


def test_hooks_a_subclass_must_write_are_abstract() -> None:
    class NoLoss(BaseTask):
        def configure_models(self) -> None:
            self.net = nn.Linear(2, 2)

        def shared_step(self, batch: dict[str, Any], stage: Stage) -> Tensor:
            return torch.zeros(())

    with pytest.raises(TypeError, match=r"abstract method.*configure_losses"):
        NoLoss()  # type: ignore[abstract]

    class NoForward(ClassificationTask):
        def configure_models(self) -> None:
            self.net = nn.Linear(2, 2)

    with pytest.raises(TypeError, match=r"abstract method.*forward_batch"):
        NoForward(num_classes=2)  # type: ignore[abstract]


class _Regression(BaseTask):
    """A task with only the three abstract hooks: the loop, logging and optimiser are inherited."""

    def configure_models(self) -> None:
        self.net = nn.Linear(3, 1)

    def configure_losses(self) -> None:
        self.criterion = nn.MSELoss()

    def shared_step(self, batch: dict[str, Any], stage: Stage) -> Tensor:
        loss: Tensor = self.criterion(self.net(batch["x"]), batch["y"])
        self.log_loss(stage, loss, len(batch["x"]))
        return loss


def _loader() -> torch.utils.data.DataLoader[Any]:
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
    rows = [{"x": x[i], "y": y[i]} for i in range(64)]
    return torch.utils.data.DataLoader(rows, batch_size=16)  # type: ignore[arg-type]


def _fit(task: BaseTask, epochs: int = 3) -> pl.Trainer:
    trainer = pl.Trainer(accelerator="cpu", max_epochs=epochs, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)  # fmt: skip
    trainer.fit(task, _loader(), _loader())
    return trainer


def test_the_public_step_drives_training_and_validation() -> None:
    torch.manual_seed(0)
    task = _Regression(optim=OptimConfig(lr=0.05))

    def loss() -> float:
        with torch.no_grad():
            return sum(float(task.criterion(task.net(b["x"]), b["y"])) for b in _loader()) / 4

    before = loss()
    trainer = _fit(task, epochs=20)
    assert float(trainer.callback_metrics["val_loss"]) == pytest.approx(loss(), rel=1e-4)
    assert loss() < 0.05 * before


def test_old_private_step_still_serves_for_one_release() -> None:
    with pytest.warns(DeprecationWarning, match="overrides _shared_step, which is now the public"):

        class Old(_Regression):
            def _shared_step(self, batch: dict[str, Any], stage: Stage) -> Tensor:
                self.calls = getattr(self, "calls", 0) + 1
                return _Regression.shared_step(self, batch, stage)

    task = Old(optim=OptimConfig(lr=0.05))
    _fit(task, epochs=1)
    assert task.calls == 4 + 4 + 2  # 4 training and 4 validation batches, 2 sanity checks


@pytest.fixture(scope="module")
def legacy_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CellClassifier]:
    """A trained CellClassifier's checkpoint, rewritten as 0.1 wrote it: flat optimiser keys."""
    torch.manual_seed(0)
    dm = WBCDataModule(SyntheticWBC(24, size=SIZE, seed=1), size=SIZE, batch_size=8,
                       split="holdout", augment=False)  # fmt: skip
    task = CellClassifier("resnet10t", head_hidden=(8,), optim=OptimConfig(lr=3e-3))
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=1,
                         limit_val_batches=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(task, datamodule=dm)
    path = tmp_path_factory.mktemp("legacy") / "old.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    hparams = ckpt["hyper_parameters"]
    hparams.update(hparams.pop("optim"))
    hparams.update(lr=2e-3, scheduler="cosine")  # settings the new task must take over
    hparams["_instantiator"] = "lightning.pytorch.cli.instantiate_module"  # as LightningCLI
    hparams["_class_path"] = "leukemia_wbc.tasks.classification.CellClassifier"
    torch.save(ckpt, path)
    return path, task


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_legacy_checkpoint_loads_with_lightning(legacy_checkpoint: tuple[Path, Any]) -> None:
    """An old file (flat settings, LightningCLI's entries) loads, upgraded without a warning.

    The user cannot change a file colleagues sent: its flat settings are read into ``optim``.
    """
    path, trained = legacy_checkpoint
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        task = CellClassifier.load_from_checkpoint(path, map_location="cpu")
    assert task.optim == OptimConfig(lr=2e-3, scheduler="cosine")
    assert task.classes == trained.classes and _same_weights(task.net, trained.net)


def test_legacy_checkpoint_loads_as_trained_model(legacy_checkpoint: tuple[Path, Any]) -> None:
    from leukemia_wbc.inference import TrainedModel

    path, trained = legacy_checkpoint
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        model = TrainedModel.from_checkpoint(path, device="cpu")
    assert isinstance(model.task, CellClassifier)
    assert model.task.optim.scheduler == "cosine" and model.classes == trained.classes
    assert _same_weights(model.task.net, trained.net)
    # rebuilt tasks (the cross-validator's folds) take the upgraded settings, without warning
    from leukemia_wbc.experiments._spec import rebuild

    fresh = rebuild(model.task)()
    assert isinstance(fresh, CellClassifier) and fresh.optim == model.task.optim
