"""Attribution galleries of a finished cross-validation: held-out cells with their maps."""

from __future__ import annotations

from typing import Any

import torch

from .._deprecation import moved_names
from ..data.datamodule import WBCDataModule, collate_samples
from ..experiments.attributions import GalleryItem, nucleus_masks, select_cells
from ..experiments.result import CVResult
from ..explain import (
    Attribution,
    AttributionMethod,
    Explainer,
    NucleusFocus,
    attribution_share,
    nucleus_focus,
)

__all__ = ["attribution_gallery", "held_out_focus"]

#: The per-fold writing moved below, to the experiments the cross-validator runs.
__getattr__ = moved_names(
    __name__,
    {
        "save_overlays": "leukemia_wbc.experiments",
        "write_fold_attributions": "leukemia_wbc.experiments",
    },
)


def _explain_fold(
    result: CVResult,
    datamodule: WBCDataModule,
    fold: int,
    samples: list[Any],
    method: AttributionMethod,
    load_kwargs: dict[str, Any],
) -> tuple[Attribution, dict[str, Any], Any]:
    """Explain samples with fold ``fold``'s best model, through the pipeline it was trained with.

    Returns the attributions, the transformed batch (on the model's device) and the model.
    """
    model = result.trained_model(fold, segmenter=load_kwargs.get("segmenter"))
    batch = model.transform(collate_samples(samples))
    return Explainer(model.task, method).explain(batch), batch, model


def attribution_gallery(
    result: CVResult,
    datamodule: WBCDataModule,
    *,
    per_class: int = 2,
    method: AttributionMethod = "gradcam",
    **load_kwargs: Any,
) -> list[GalleryItem]:
    """Explain the cells of :func:`select_cells` with the model of the fold that held each out.

    Each fold's best checkpoint is loaded as a :class:`~leukemia_wbc.inference.TrainedModel`
    (see :meth:`CVResult.trained_model`), and the cells go through the pipeline it was trained
    with (its own fitted stain target) before :class:`Explainer`.

    Args:
        result: A Lightning task's cross-validation result (not the SVM's).
        datamodule: The DataModule the cross-validation ran on.
        per_class: Cells of each kind (correct, wrong) per class.
        method: ``"gradcam"`` or ``"integrated_gradients"``.
        **load_kwargs: ``segmenter=`` replaces the models' saved segmenter.

    Returns:
        The explained cells, in the order of :func:`select_cells`, each with the nucleus mask
        the model used (the dataset's, else its segmenter's) where there is one.
    """
    p = result.predictions
    dataset = datamodule.dataset
    rows = select_cells(result, per_class)
    items: dict[int, GalleryItem] = {}
    for fold in sorted({int(p.fold[r]) for r in rows}):
        mine = [r for r in rows if p.fold[r] == fold]
        samples = [dataset[int(p.index[r])] for r in mine]
        kept = [(r, s) for r, s in zip(mine, samples, strict=True) if s is not None]
        raw = torch.stack([s["image"] for _, s in kept])
        attr, batch, model = _explain_fold(
            result, datamodule, fold, [s for _, s in kept], method, load_kwargs
        )
        mask, source = nucleus_masks(model, batch)
        mask = None if mask is None else mask.cpu()
        shares = {
            k: attribution_share(v, mask) if mask is not None else None
            for k, v in attr.maps.items()
        }
        for j, (r, _) in enumerate(kept):
            pred = int(attr.probs[j].argmax())
            items[r] = GalleryItem(
                index=int(p.index[r]),
                path=p.path[r],
                fold=fold,
                label=result.classes[int(p.label[r])],
                pred=result.classes[pred],
                prob=float(attr.probs[j, pred]),
                image=raw[j].permute(1, 2, 0).numpy(),
                maps={k: v[j, 0].numpy() for k, v in attr.maps.items()},
                nucleus_share={
                    k: float(s[j]) if s is not None else float("nan") for k, s in shares.items()
                },
                nucleus_area=float((mask[j] > 0).float().mean())
                if mask is not None
                else float("nan"),
                mask=None if mask is None else mask[j, 0].numpy(),
                method=method,
                nucleus=source,
            )
    return [items[r] for r in rows if r in items]


def held_out_focus(
    result: CVResult,
    datamodule: WBCDataModule,
    *,
    fold: int = 0,
    method: AttributionMethod = "integrated_gradients",
    max_cells: int = 64,
    **load_kwargs: Any,
) -> list[NucleusFocus]:
    """Attribution inside the nucleus on one fold's held-out cells, per class and branch.

    The fold's best model explains up to ``max_cells`` of its held-out cells (the first ones,
    in dataset order, for the predicted class); :func:`nucleus_focus` compares, per true class,
    the share of attribution mass inside the nucleus with the nucleus's share of the image.

    Args:
        result: A Lightning task's cross-validation result.
        datamodule: The DataModule the cross-validation ran on (its dataset needs masks).
        fold: Which fold's model and held-out cells.
        method: ``"integrated_gradients"`` (per pixel) or ``"gradcam"``.
        max_cells: Cells explained.
        **load_kwargs: ``segmenter=`` replaces the model's saved segmenter.

    Returns:
        One :class:`NucleusFocus` per branch.

    Raises:
        ValueError: The dataset has no nucleus masks.
    """
    dataset = datamodule.dataset
    test = result.split(fold).test[:max_cells]
    samples = [s for s in (dataset[int(i)] for i in test) if s is not None]
    if not samples or "mask" not in samples[0]:
        raise ValueError(f"{type(dataset).__name__} has no nucleus masks to measure against")
    attr, batch, _ = _explain_fold(result, datamodule, fold, samples, method, load_kwargs)
    mask, labels = batch["mask"].cpu(), batch["label"].cpu()
    return [nucleus_focus(m, mask, labels, result.classes, branch=k) for k, m in attr.maps.items()]
