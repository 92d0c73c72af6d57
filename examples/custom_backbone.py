"""Extending the library: a new backbone and a new head by subclassing ``CellClassifier``.

:class:`~leukemia_wbc.tasks.CellClassifier` builds its network in one hook,
``configure_models``; loss, metrics, the shared train / val / test step, the optimiser and its
schedule, ``predict_step``, checkpoints and the cross-validator all come from the library. Two
subclasses here override that hook only:

* ``TinyCNNClassifier``: a hand-written torch network (a few conv blocks), with its own
  constructor arguments (``width``, ``blocks``) saved as hyperparameters, so that
  ``TinyCNNClassifier.load_from_checkpoint`` rebuilds it;
* ``CosineHeadClassifier``: any timm backbone by name (``create_backbone``, random
  initialisation here) with a different head: cosine similarity to learned class prototypes
  times a learned temperature, instead of the paper's fully connected head.

Both keep the network in ``self.net`` with a ``backbone`` attribute, so that
:class:`~leukemia_wbc.evaluation.Explainer` (Grad-CAM) finds the last convolution.

Each is trained briefly on :class:`~leukemia_wbc.data.SyntheticWBC` with a Lightning
``Trainer`` through :class:`~leukemia_wbc.data.WBCDataModule` (patient-grouped split), then
tested on the held-out patients; the script prints the accuracy beside chance, checks that a
checkpoint reloads to the same predictions, and writes ``result.json`` into ``--out``.

Run ``python examples/custom_backbone.py`` (several minutes on one CPU thread), or ``--fast``
for a run of about half a minute. ``--timm-backbone`` picks the timm network of the second
model (default ``resnet18``).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leukemia_wbc.data import SyntheticWBC, WBCDataModule
from leukemia_wbc.models import create_backbone, feature_dim
from leukemia_wbc.tasks import CellClassifier

# -- a custom torch network --------------------------------------------------------------------


class TinyCNN(nn.Module):
    """Conv blocks (conv, batch norm, ReLU, max-pool), global average pooling, a linear head.

    Args:
        num_classes: Number of classes.
        width: Channels of the first block (doubled by every further block).
        blocks: Number of conv blocks.
    """

    def __init__(self, num_classes: int, *, width: int = 16, blocks: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for i in range(blocks):
            cout = width * 2**i
            layers += [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            cin = cout
        #: Image to pooled features; ``Explainer`` puts Grad-CAM on its last convolution.
        self.backbone = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(cin, num_classes)

    def forward(self, image: Tensor) -> Tensor:
        """Class logits of a normalised image batch."""
        logits: Tensor = self.head(self.backbone(image))
        return logits


class TinyCNNClassifier(CellClassifier):
    """``CellClassifier`` with :class:`TinyCNN` instead of a timm backbone.

    Args:
        width: Channels of the first conv block.
        blocks: Number of conv blocks.
        **kwargs: Arguments of :class:`~leukemia_wbc.tasks.CellClassifier` (``num_classes``,
            ``classes``, ``loss``, ``lr``, ``optimizer``, ``scheduler``, ...).
    """

    def __init__(self, *, width: int = 16, blocks: int = 4, **kwargs: Any) -> None:
        # Set the new attributes first: super().__init__ calls configure_models, and saves
        # width and blocks with the other hyperparameters.
        self.width = width
        self.blocks = blocks
        kwargs.setdefault("backbone", "tiny_cnn")  # only a name here: configure_models decides
        super().__init__(**kwargs)

    def configure_models(self) -> None:
        """Build :attr:`net` (forward, ``forward_batch`` and the steps use it as it is)."""
        self.net = TinyCNN(self.num_classes, width=self.width, blocks=self.blocks)


# -- a timm backbone with a different head ------------------------------------------------------


class CosineHead(nn.Module):
    """Cosine similarity of the features to one learned prototype per class, times a scale.

    Args:
        in_features: Feature length.
        num_classes: Number of classes.
        scale: Initial temperature (learned, kept positive through its logarithm).
    """

    def __init__(self, in_features: int, num_classes: int, *, scale: float = 10.0) -> None:
        super().__init__()
        self.prototypes = nn.Parameter(torch.randn(num_classes, in_features) * 0.01)
        self.log_scale = nn.Parameter(torch.tensor(float(scale)).log())

    def forward(self, features: Tensor) -> Tensor:
        """Class logits ``(B, num_classes)``."""
        cosine = F.normalize(features, dim=1) @ F.normalize(self.prototypes, dim=1).T
        return cosine * self.log_scale.exp()


class BackboneWithHead(nn.Module):
    """A feature extractor and a head, with the ``backbone`` attribute the library looks for."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, image: Tensor) -> Tensor:
        """Class logits of a normalised image batch."""
        logits: Tensor = self.head(self.backbone(image))
        return logits


class CosineHeadClassifier(CellClassifier):
    """``CellClassifier`` whose timm backbone (any name) feeds a :class:`CosineHead`.

    Args:
        backbone: A timm model name.
        scale: Initial temperature of the cosine head.
        **kwargs: Arguments of :class:`~leukemia_wbc.tasks.CellClassifier`.
    """

    def __init__(self, backbone: str = "resnet18", *, scale: float = 10.0, **kwargs: Any) -> None:
        self.scale = scale
        super().__init__(backbone, **kwargs)

    def configure_models(self) -> None:
        """Build :attr:`net` from the timm name, the weights argument and the cosine head."""
        features = create_backbone(self.backbone_name, weights=self.weights)
        head = CosineHead(feature_dim(features), self.num_classes, scale=self.scale)
        self.net = BackboneWithHead(features, head)


# -- training and evaluation --------------------------------------------------------------------


def train_and_test(
    model: CellClassifier, dm: WBCDataModule, epochs: int, out: Path
) -> tuple[float, pl.Trainer]:
    """Fit ``model`` on the training patients and return its held-out test accuracy."""
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        default_root_dir=out,
    )
    trainer.fit(model, datamodule=dm)
    metrics = trainer.test(model, datamodule=dm, verbose=False)[0]
    return float(metrics["test_accuracy"]), trainer


@torch.no_grad()
def held_out_probabilities(trainer: pl.Trainer, model: CellClassifier, dm: WBCDataModule) -> Tensor:
    """Class probabilities of the test part (through the DataModule's device stage)."""
    model.eval()
    batches = trainer.predict(model, datamodule=dm)
    assert batches is not None
    return torch.cat([torch.as_tensor(b) for b in batches])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments (``--fast`` shrinks the run)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="a short run (about half a minute)")
    parser.add_argument("--out", type=Path, default=Path("outputs/custom_backbone"))
    parser.add_argument("--n", type=int, default=1200, help="synthetic cells")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument(
        "--timm-backbone",
        default=None,
        help="timm name of the second model (resnet18; --fast: resnet10t)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.fast:
        args.n, args.size, args.epochs = 480, 48, 8
    if args.timm_backbone is None:
        args.timm_backbone = "resnet10t" if args.fast else "resnet18"
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Train and test both subclasses; return what ``result.json`` holds."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    dataset = SyntheticWBC(args.n, size=args.size, seed=args.seed, n_patients=10, difficulty=0.2)
    dm = WBCDataModule(dataset, size=args.size, batch_size=32, n_splits=5, fold=0, seed=args.seed)
    dm.setup()
    assert dm.split is not None
    test_labels = torch.as_tensor(dataset.labels[dm.split.test])
    majority = float(test_labels.bincount(minlength=dataset.num_classes).max()) / len(test_labels)
    chance = 1.0 / dataset.num_classes
    print(
        f"{dataset}: {len(dm.split.train)} train / {len(dm.split.val)} val / "
        f"{len(test_labels)} test cells (held-out patients)"
    )

    common: dict[str, Any] = {
        "num_classes": dataset.num_classes,
        "classes": dataset.classes,
        "loss": "ce",
        "lr": 3e-3,
        "weight_decay": 1e-4,
        "optimizer": "adamw",
        "scheduler": "onecycle",
    }
    builders: dict[str, Callable[[], CellClassifier]] = {
        "TinyCNNClassifier": lambda: TinyCNNClassifier(width=16, blocks=4, **common),
        f"CosineHeadClassifier({args.timm_backbone})": lambda: CosineHeadClassifier(
            args.timm_backbone, **common
        ),
    }
    results: dict[str, Any] = {}
    for name, build in builders.items():
        pl.seed_everything(args.seed, verbose=False)
        model = build()
        start = time.perf_counter()
        accuracy, trainer = train_and_test(model, dm, args.epochs, args.out)
        params = sum(p.numel() for p in model.parameters())
        results[name] = {
            "accuracy": accuracy,
            "parameters": params,
            "seconds": time.perf_counter() - start,
        }
        print(
            f"{name}: held-out accuracy {accuracy:.3f} (chance {chance:.3f}, majority class "
            f"{majority:.3f}); {params / 1e6:.2f} M parameters, "
            f"{results[name]['seconds']:.0f} s"
        )
        if isinstance(model, TinyCNNClassifier):
            # The subclass's own arguments travel in the checkpoint: loading rebuilds it.
            path = args.out / "tiny_cnn.ckpt"
            trainer.save_checkpoint(path)
            restored = TinyCNNClassifier.load_from_checkpoint(path, map_location="cpu")
            same = torch.allclose(
                held_out_probabilities(trainer, model, dm),
                held_out_probabilities(trainer, restored, dm),
                atol=1e-5,
            )
            results[name]["checkpoint_reloads"] = bool(same)
            print(
                f"  {path.name} reloads as {type(restored).__name__}(width="
                f"{restored.width}, blocks={restored.blocks}); same held-out "
                f"probabilities: {same}"
            )

    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    summary = {
        "chance": chance,
        "majority": majority,
        "test_cells": len(test_labels),
        "settings": settings,
        "models": results,
    }
    (args.out / "result.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {args.out / 'result.json'}")
    return summary


if __name__ == "__main__":
    main()
