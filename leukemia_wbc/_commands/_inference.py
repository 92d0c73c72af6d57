"""Loading a classifier checkpoint with its evaluation pipeline, and running it on image files."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ..data.base import IMAGE_EXTENSIONS, UNLABELLED, Record, WBCDataset
from ..data.datamodule import IMAGENET_MEAN, IMAGENET_STD, collate_samples, worker_init
from ..tasks.classifier_base import ClassificationTask
from ..transforms.pipeline import DevicePipeline, make_equalizer
from ..transforms.stain import MacenkoNormalizer

__all__ = ["Classifier", "image_paths", "load_classifier"]


def image_paths(inputs: Sequence[str]) -> list[str]:
    """Image files from files, folders (searched recursively) and ``.txt`` / ``.csv`` lists.

    Raises:
        FileNotFoundError: An input that does not exist, or no image found at all.
    """
    out: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            out += sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        elif path.is_file() and path.suffix.lower() in (".txt", ".csv"):
            lines = [x.split(",")[0].strip() for x in path.read_text().splitlines()]
            out += [x for x in lines if x and not x.startswith("#") and x.lower() != "path"]
        elif path.is_file():
            out.append(str(path))
        else:
            raise FileNotFoundError(f"{item} not found (expected an image, a folder or a list)")
    if not out:
        raise FileNotFoundError(f"no images in {list(inputs)} (extensions {IMAGE_EXTENSIONS})")
    return out


def _read(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint {path} not found") from None
    except Exception as err:
        raise ValueError(f"{path} is not a readable PyTorch checkpoint ({err})") from None
    if not isinstance(ckpt, dict) or "leukemia_wbc_task" not in ckpt:
        raise ValueError(
            f"{path} is not a leukemia_wbc classifier checkpoint (no task recorded;"
            " expected a file saved by CellClassifier or DualBranchClassifier)"
        )
    return ckpt


class Classifier:
    """A trained classifier with the device pipeline it was evaluated with.

    Attributes:
        task: The classification task (evaluation mode, on ``device``).
        pipeline: Stain normalisation, enhancement and channel normalisation, as in training.
        size: Image side the model was trained at (``(height, width)``).
        device: Where it runs.
    """

    def __init__(
        self,
        task: ClassificationTask,
        pipeline: DevicePipeline,
        size: tuple[int, int],
        device: torch.device,
    ) -> None:
        self.task, self.pipeline, self.size, self.device = task, pipeline, size, device

    def batches(
        self, paths: Sequence[str], *, batch_size: int = 32, num_workers: int = 0
    ) -> Iterator[tuple[list[str], dict[str, Any]]]:
        """Decoded, device-transformed batches of image files (in order)."""
        records = [Record(p, UNLABELLED, "") for p in paths]
        dataset = WBCDataset(records, self.task.classes, size=self.size)
        loader = DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=num_workers,
            collate_fn=collate_samples,
            worker_init_fn=worker_init,
        )
        for batch in loader:
            batch.pop("skipped", None)
            names = list(batch["path"])
            moved = {k: v.to(self.device) if isinstance(v, Tensor) else v for k, v in batch.items()}
            yield names, self.pipeline(moved, train=False)

    @torch.inference_mode()
    def probabilities(self, batch: dict[str, Any]) -> Tensor:
        """Class probabilities ``(B, C)`` of a transformed batch."""
        return self.task.forward_batch(batch).softmax(dim=1)


def load_classifier(
    checkpoint: str | os.PathLike[str], *, device: str = "auto", segmenter: nn.Module | None = None
) -> Classifier:
    """Load a classifier checkpoint and rebuild its evaluation pipeline from the saved settings.

    Args:
        checkpoint: A checkpoint written while training a CellClassifier or DualBranchClassifier
            with a ``WBCDataModule``.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        segmenter: Nucleus segmenter for a dual-branch model (default: the classical one).

    Returns:
        The :class:`Classifier`.

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not one of this library's classifier checkpoints.
    """
    from .. import tasks

    ckpt = _read(checkpoint)
    name = str(ckpt["leukemia_wbc_task"])
    cls = getattr(tasks, name, None)
    if not (isinstance(cls, type) and issubclass(cls, ClassificationTask)):
        raise ValueError(f"{checkpoint} holds a {name}, not a classifier")
    dev = torch.device(
        "cuda"
        if device == "auto" and torch.cuda.is_available()
        else "cpu"
        if device == "auto"
        else device
    )
    extra: dict[str, Any] = {}
    if name == "DualBranchClassifier":
        if segmenter is None:
            from ..models.segmentation import ClassicalNucleusSegmenter

            segmenter = ClassicalNucleusSegmenter()
        extra["segmenter"] = segmenter
    task = cls.load_from_checkpoint(checkpoint, map_location=dev, **extra).eval()
    hp: dict[str, Any] = dict(ckpt.get("datamodule_hyper_parameters") or {})
    state: dict[str, Tensor] = dict((ckpt.get("WBCDataModule") or {}).get("pipeline", {}))
    stain = MacenkoNormalizer() if any(k.startswith("stain.") for k in state) else None
    background = None
    if hp.get("background_removal"):
        from ..transforms.enhance import BackgroundRemoval

        background = BackgroundRemoval()
    pipeline = DevicePipeline(
        stain=stain,
        background=background,
        equalize=make_equalizer(hp.get("equalize", "none")),
        mean=hp.get("mean", IMAGENET_MEAN),
        std=hp.get("std", IMAGENET_STD),
        colour=hp.get("colour", "rgb"),
    )
    own = pipeline.state_dict()
    pipeline.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    size = hp.get("size") or 224
    side = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    return Classifier(task, pipeline.to(dev), side, dev)
