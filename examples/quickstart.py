"""Quickstart: the data layer end to end on the embedded SyntheticWBC data.

1. renders synthetic blood-smear cells of the four classes (ALL, AML, CLL, normal) with
   nucleus masks, and saves a contact sheet with the nucleus outlines;
2. splits them by synthetic patient (stratified group k-fold: no patient on both sides);
3. trains a small CNN through ``WBCDataModule`` (workers decode, the device stage augments and
   normalises) and evaluates it on the held-out patients;
4. puts the result beside a colour-only baseline (logistic regression on mean RGB), which
   should sit near chance because the stain varies by patient, not by class.

Run ``python examples/quickstart.py`` (about a minute and a half on 2 CPU cores), or ``--fast``
for a seconds-long smoke run. Outputs go to ``outputs/quickstart/``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import lightning.pytorch as pl
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix
from torch import nn

from leukemia_wbc.data import SyntheticWBC, WBCDataModule


class SmallCNN(pl.LightningModule):
    """A deliberately small CNN (the library's classifiers come with the models issue)."""

    def __init__(self, num_classes: int, lr: float = 3e-3) -> None:
        super().__init__()
        self.lr = lr

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)
            )

        self.net = nn.Sequential(
            block(3, 16), block(16, 32), block(32, 64), block(64, 64),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(64, num_classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _shared_step(self, batch: dict, stage: str) -> torch.Tensor:
        logits = self(batch["image"])
        loss = nn.functional.cross_entropy(logits, batch["label"])
        acc = (logits.argmax(1) == batch["label"]).float().mean()
        self.log_dict(
            {f"{stage}_loss": loss, f"{stage}_accuracy": acc}, prog_bar=True, batch_size=len(logits)
        )
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def predict_step(self, batch: dict, batch_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self(batch["image"]).argmax(1), batch["label"]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def contact_sheet(ds: SyntheticWBC, path: Path, per_class: int = 6) -> None:
    """Save a grid of examples per class with the nucleus mask outlined."""
    fig, axes = plt.subplots(
        ds.num_classes, per_class, figsize=(1.6 * per_class, 1.7 * ds.num_classes)
    )
    for k, name in enumerate(ds.classes):
        for j, idx in enumerate(np.flatnonzero(ds.labels == k)[:per_class]):
            image, nucleus, _ = ds.render(int(idx))
            ax = axes[k, j]
            ax.imshow(image)
            ax.contour(nucleus, levels=[0.5], colors="yellow", linewidths=0.6)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(name)
    fig.suptitle("SyntheticWBC: one row per class, nucleus mask outlined")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="tiny smoke run (seconds)")
    parser.add_argument("--out", type=Path, default=Path("outputs/quickstart"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    n, size, epochs = (160, 48, 2) if args.fast else (1600, 64, 25)
    args.out.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(args.seed, workers=True)

    dataset = SyntheticWBC(n, size=size, seed=args.seed, n_patients=20)
    print(f"dataset: {dataset}")
    contact_sheet(dataset, args.out / "samples.png")

    dm = WBCDataModule(
        dataset, size=size, batch_size=32, num_workers=2, n_splits=5, fold=0, seed=args.seed
    )
    dm.setup()
    assert dm.split is not None
    dm.split.check(len(dataset), dataset.groups)  # no patient on two sides
    held_out = sorted({dataset.groups[i] for i in dm.split.test})
    sizes = f"{len(dm.split.train)} train / {len(dm.split.val)} val / {len(dm.split.test)} test"
    print(f"split: {sizes}; held-out patients: {', '.join(held_out)}")

    model = SmallCNN(dataset.num_classes)
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="auto",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        default_root_dir=args.out,
        log_every_n_steps=5,
    )
    trainer.fit(model, datamodule=dm)
    preds = trainer.predict(model, datamodule=dm)  # the test part, through the device stage
    assert preds is not None
    y_pred = torch.cat([p for p, _ in preds]).numpy()
    y_true = torch.cat([t for _, t in preds]).numpy()
    cnn_acc = float((y_pred == y_true).mean())

    # colour-only baseline on the same split
    def mean_rgb(idx: np.ndarray) -> np.ndarray:
        return np.array([dataset.render(int(i))[0].reshape(-1, 3).mean(0) for i in idx])

    train_idx = np.concatenate([dm.split.train, dm.split.val])
    colour = LogisticRegression(max_iter=2000).fit(mean_rgb(train_idx), dataset.labels[train_idx])
    colour_acc = float(colour.score(mean_rgb(dm.split.test), dataset.labels[dm.split.test]))

    cm = confusion_matrix(y_true, y_pred, labels=range(dataset.num_classes))
    print("\nheld-out patients, confusion matrix (rows true, columns predicted):")
    print("        " + " ".join(f"{c:>7}" for c in dataset.classes))
    for name, row in zip(dataset.classes, cm, strict=True):
        print(f"{name:>7} " + " ".join(f"{v:>7}" for v in row))
    chance = 1 / dataset.num_classes
    print(
        f"\naccuracy on held-out patients: small CNN {cnn_acc:.3f} | "
        f"mean-colour baseline {colour_acc:.3f} | chance {chance:.3f}"
    )
    result = {
        "cnn_accuracy": cnn_acc,
        "colour_accuracy": colour_acc,
        "n": n,
        "size": size,
        "epochs": epochs,
        "confusion": cm.tolist(),
    }
    (args.out / "result.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out / 'samples.png'} and {args.out / 'result.json'}")


if __name__ == "__main__":
    main()
