"""``examples/quickstart.ipynb``: its code cells run in order, in fast mode, without Jupyter.

The notebook is read as nbformat v4 JSON with the standard library (nbformat and nbclient are
not dependencies) and its code cells are executed in one namespace, as a kernel would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "examples" / "quickstart.ipynb"


def _notebook() -> dict[str, Any]:
    notebook: dict[str, Any] = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    return notebook


def test_notebook_is_valid_nbformat_v4_without_outputs() -> None:
    nb = _notebook()
    assert nb["nbformat"] == 4 and nb["nbformat_minor"] >= 4
    assert nb["metadata"]["kernelspec"]["language"] == "python"
    ids = [cell["id"] for cell in nb["cells"]]
    assert len(set(ids)) == len(ids)
    kinds = {cell["cell_type"] for cell in nb["cells"]}
    assert kinds == {"markdown", "code"}
    for cell in nb["cells"]:
        assert isinstance(cell["source"], list) and all(isinstance(s, str) for s in cell["source"])
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None
    first_code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    assert "LEUKEMIA_WBC_FAST" in "".join(first_code["source"])


@pytest.mark.slow  # about 25 s on 2 cores; its steps (data, training, explain) are tested alone
def test_notebook_runs_in_fast_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEUKEMIA_WBC_FAST", "1")
    monkeypatch.setenv("LEUKEMIA_WBC_THREADS", "1")
    monkeypatch.chdir(tmp_path)
    backend = matplotlib.get_backend()
    matplotlib.use("Agg")
    threads = torch.get_num_threads()
    namespace: dict[str, Any] = {"__name__": "__main__"}
    try:
        for i, cell in enumerate(_notebook()["cells"]):
            if cell["cell_type"] == "code":
                source = "".join(cell["source"])
                exec(compile(source, f"{NOTEBOOK.name}[cell {i}]", "exec"), namespace)
    finally:
        import matplotlib.pyplot as plt

        plt.close("all")
        torch.set_num_threads(threads)
        matplotlib.use(backend)
    assert namespace["FAST"] is True and namespace["N_CELLS"] == 480
    # trained on 4 of 5 patient folds, tested on the held-out patients: above chance
    assert namespace["chance"] == 0.25
    assert namespace["accuracy"] > 0.35, namespace["test_metrics"]
    confusion = namespace["confusion"]
    assert confusion.shape == (4, 4) and int(confusion.sum()) == len(namespace["split"].test)
    assert namespace["probs"].shape == (len(namespace["split"].test), 4)
    # the figures were drawn; Grad-CAM maps cover the batch at the image's resolution
    assert len(namespace["fig_samples"].axes) == 20 and len(namespace["fig_cam"].axes) == 12
    heat = namespace["heat"]
    assert heat.shape == (len(namespace["batch"]["image"]), 1, 48, 48)
    assert float(heat.amax()) > 0
    share = namespace["share"]
    assert bool(((share >= 0) & (share <= 1)).all())
