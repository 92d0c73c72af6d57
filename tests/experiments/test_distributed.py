"""A fold trained with DDP on two CPU processes (gloo): every held-out sample scored once."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from leukemia_wbc.data import SyntheticWBC, WBCDataModule, collate_samples
from leukemia_wbc.experiments import CrossValidator
from leukemia_wbc.tasks import CellClassifier

SCRIPT = textwrap.dedent(
    """
    import sys

    import torch

    from leukemia_wbc.data import SyntheticWBC, WBCDataModule
    from leukemia_wbc.experiments import CrossValidator
    from leukemia_wbc.tasks import CellClassifier

    torch.set_num_threads(1)
    ds = SyntheticWBC(61, size=32, seed=1, n_patients=9, difficulty=0.2)
    dm = WBCDataModule(ds, size=32, batch_size=8, augment=False)
    task = CellClassifier("resnet10t", num_classes=4, head_hidden=(16,))
    cv = CrossValidator(task, dm, sys.argv[1], n_splits=3, max_epochs=1, accelerator="cpu",
                        devices=2, strategy="ddp",
                        trainer_kwargs={"enable_progress_bar": False,
                                        "enable_model_summary": False})
    result = cv.run(folds=[0])
    print("rows", len(result.predictions))
    """
)


def test_ddp_fold_scores_each_held_out_sample_exactly_once(tmp_path: Path) -> None:
    script = tmp_path / "cv_ddp.py"
    script.write_text(SCRIPT)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(script), str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Starting with 2 processes" in proc.stderr + proc.stdout
    assert proc.stdout.count("rows") == 2  # both ranks return the merged result

    ds = SyntheticWBC(61, size=32, seed=1, n_patients=9, difficulty=0.2)
    dm = WBCDataModule(ds, size=32, batch_size=8, augment=False)
    task = CellClassifier("resnet10t", num_classes=4, head_hidden=(16,))
    split = CrossValidator(task, dm, tmp_path / "unused", n_splits=3).split(0)
    result = CrossValidator.collect(out, allow_partial=True)
    preds = result.predictions
    # Training's distributed sampler pads an odd count by repeating samples; the merged
    # held-out predictions hold each sample exactly once, none dropped.
    assert len(split.test) % 2 == 1, "an odd held-out count exercises the padding case"
    assert preds.index.tolist() == sorted(split.test.tolist())
    assert result.folds[0].n_test == len(split.test)
    acc = float((preds.probs.argmax(1) == preds.label).mean())
    assert result.folds[0].metrics["accuracy"] == pytest.approx(acc)

    # Same probabilities as the best checkpoint predicting the held-out part in one process.
    best = CellClassifier.load_from_checkpoint(out / "fold_0" / "checkpoints" / "best.ckpt")
    best.eval()
    fold_dm = dm.with_split(split)
    fold_dm.setup()
    batch = collate_samples([ds[int(i)] for i in preds.index])
    batch = fold_dm.device_transform(batch, train=False)
    with torch.no_grad():
        probs = best(batch["image"]).softmax(1).numpy()
    np.testing.assert_allclose(preds.probs, probs, atol=1e-5)
