"""``TrainedModel(compile=...)``: the network's forward compiled for prediction only."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from leukemia_wbc.data import SyntheticWBC, WBCDataModule
from leukemia_wbc.data.datamodule import collate_samples
from leukemia_wbc.inference import TrainedModel
from leukemia_wbc.models.compiled import CompiledForward
from leukemia_wbc.tasks import DualBranchClassifier


def test_compiled_prediction_matches_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    """Same probabilities; the compiled forward runs in predict only, not in explain."""
    calls: list[str] = []
    real_compile = torch.compile

    def eager_backend(fn: Any, *, mode: str, dynamic: bool) -> Any:
        calls.append(mode)
        compiled = real_compile(fn, backend="eager", dynamic=dynamic)  # tracing, no codegen

        def counted(*args: Any, **kwargs: Any) -> Any:
            calls.append("run")
            return compiled(*args, **kwargs)

        return counted

    monkeypatch.setattr(torch, "compile", eager_backend)
    cells = SyntheticWBC(8, size=32, seed=1, n_patients=2)
    dm = WBCDataModule(cells, size=32, batch_size=4)
    task = DualBranchClassifier("resnet10t", "mobilenetv3_small_050", nucleus_size=32,
                                fusion_features=8, head_hidden=(8,), num_classes=4)  # fmt: skip
    batch = collate_samples([cells[i] for i in range(4)])
    eager = TrainedModel.from_datamodule(task, dm).predict_batch(batch)
    model = TrainedModel(task, dm.pipeline, size=32, compile="reduce-overhead")
    compiled = model.predict_batch(batch)
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-4)
    assert calls == ["reduce-overhead", "run"]
    model.predict_batch(batch)
    assert calls.count("reduce-overhead") == 1 and calls.count("run") == 2  # compiled once
    assert "forward" not in task.__dict__  # eager again outside prediction
    model.explain(batch, method="gradcam")
    assert calls.count("run") == 2


def test_unknown_compile_mode_is_refused() -> None:
    """A typo names the argument and the modes."""
    expected = r"compile: expected one of \('default', 'reduce-overhead'"
    with pytest.raises(ValueError, match=expected):
        CompiledForward(torch.nn.Linear(2, 2), "fast")  # type: ignore[arg-type]
