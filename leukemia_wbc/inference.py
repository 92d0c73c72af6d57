"""The trained model: classifier, segmenter, device pipeline and class names, from one checkpoint.

A :class:`TrainedModel` is what a training run leaves behind and what every command and
evaluation of the library uses: ``classify``, ``explain``, ``analyze-smear``, the robustness and
cross-dataset tests and the attribution gallery all go through it, so a model is applied with
exactly the preprocessing it was trained with (the fitted Macenko target, background removal,
equalisation, colour mode, channel statistics, image size) and the nucleus segmenter it was
trained with.

Loading is safe: the checkpoint is read with ``weights_only=True``; the task class is looked up
by name among the classification tasks defined in the running program (the library's and the
user's own subclasses), rebuilt from hyperparameters that must be plain values (Lightning's
``_instantiator`` / ``_class_path`` entries are ignored), and the pipeline and segmenter are
rebuilt from closed sets of registered kinds. Nothing a file contains chooses a module to import
or a function to call.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ._deprecation import moved_names
from .checkpoint import build_task, legacy_pipeline, read_checkpoint
from .data.base import UNLABELLED, ImageReadError, Record, WBCDataset
from .data.datamodule import worker_init
from .data.loading import FileSamples, collate_file_samples
from .data.scale import check_pixels_per_um
from .explain import Attribution, AttributionMethod, Explainer
from .models.compiled import CompiledForward, CompileMode
from .models.segmenter import SegmenterSpec, resolve_segmenter
from .tasks.classifier_base import ClassificationTask
from .transforms.pipeline import PIPELINE_KEY, DevicePipeline
from .transforms.registry import check_plain

__all__ = ["TrainedModel"]

#: Checkpoint reading moved to :mod:`leukemia_wbc.checkpoint`.
__getattr__ = moved_names(
    __name__, {"TASK_KEY": "leukemia_wbc.checkpoint", "registered_tasks": "leukemia_wbc.checkpoint"}
)

_log = logging.getLogger(__name__)


def _device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class TrainedModel:
    """A trained classifier with its segmenter, its evaluation pipeline and its class names.

    Build it with :meth:`from_checkpoint` (a file a training run wrote) or
    :meth:`from_datamodule` (in the training process); both apply the same pipeline, so the same
    images give the same probabilities in both.

    Args:
        task: The trained classification task (its ``segmenter`` included).
        pipeline: Its evaluation pipeline (augmentation is never applied).
        size: Image side ``(H, W)`` the model was trained at.
        device: Where it runs (``"auto"``: CUDA when available).
        pixels_per_um: The physical scale the training images were resampled to (``None``:
            none); image files given with their own pixel size are resampled to it.
        compile: Compile the network's forward for :meth:`predict_batch` (and so
            :meth:`predict`) with ``torch.compile`` in this mode: ``"reduce-overhead"`` (CUDA
            graphs) for small batches on a GPU, where the dual branch is launch-bound. The first
            batch of each shape compiles (seconds to minutes); attributions stay eager.

    Attributes:
        task: The task (evaluation mode).
        pipeline: The pipeline.
        size: ``(H, W)``.
        classes: Class names, in the order of the probability columns.
        stain_normalised: Per image of the last batch through :meth:`transform` (and so
            :meth:`predict_batch`, :meth:`explain`), ``(B,)`` bool on the CPU: whether the
            pipeline's Macenko normaliser changed it (``False``: too little tissue or a
            degenerate stain estimate, the image went on as it was). ``None`` when the pipeline
            has no stain normalisation or before the first batch.
    """

    def __init__(
        self,
        task: ClassificationTask,
        pipeline: DevicePipeline,
        *,
        size: tuple[int, int] | int,
        device: str | torch.device = "cpu",
        pixels_per_um: float | None = None,
        compile: CompileMode | None = None,
    ) -> None:
        self.task = task.eval()
        self.compiled = CompiledForward(self.task, compile)
        self.pipeline = pipeline.eval()
        self.size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        self.classes: tuple[str, ...] = tuple(task.classes)
        self.pixels_per_um = check_pixels_per_um(pixels_per_um, "TrainedModel pixels_per_um")
        self.task.mean = pipeline.mean.detach().clone().view(1, -1, 1, 1)
        self.task.std = pipeline.std.detach().clone().view(1, -1, 1, 1)
        self.stain_normalised: Tensor | None = None
        self.to(device)

    # -- building ------------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | os.PathLike[str],
        *,
        device: str | torch.device = "auto",
        segmenter: SegmenterSpec = None,
        segmenter_where: str = "segmenter",
        compile: CompileMode | None = None,
    ) -> TrainedModel:
        """Load a classifier checkpoint with its pipeline and segmenter.

        Args:
            checkpoint: A checkpoint written while training a classifier with a
                ``WBCDataModule`` (any subclass).
            device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
            segmenter: Replace the saved segmenter (a method name, a ``SegmentationModule``
                checkpoint or a module); by default the one it was trained with.
            segmenter_where: The argument that gave ``segmenter``, named in its errors (a
                command passes ``"--segmenter"``).
            compile: ``torch.compile`` mode of :meth:`predict_batch` (see the class).

        Returns:
            The trained model.

        Raises:
            FileNotFoundError: No such file.
            ValueError: Not a classifier checkpoint of this library, or a crafted one (see the
                module docstring).
        """
        where = os.fspath(checkpoint)
        ckpt = read_checkpoint(checkpoint)
        task = build_task(ckpt, where=where)
        if segmenter is not None:
            task.segmenter = resolve_segmenter(segmenter, where=segmenter_where)
        record = ckpt.get(PIPELINE_KEY)
        if not isinstance(record, dict):
            record = legacy_pipeline(ckpt)
        pipeline = DevicePipeline.from_config(
            record.get("config"), record.get("state"), where=where
        )
        size = check_plain(record.get("size") or [224, 224], f"{where} pipeline size")
        scale = check_pixels_per_um(record.get("pixels_per_um"), f"{where} pipeline scale")
        model = cls(task, pipeline, size=(int(size[0]), int(size[1])), device=_device(device),
                    pixels_per_um=scale, compile=compile)  # fmt: skip
        check = getattr(task.segmenter, "check_input", None)
        if segmenter is not None and callable(check):  # a U-Net of another size is refused
            check(model.size, where=segmenter_where)
        if task.needs_nucleus and task.segmenter is None:
            from .models.segmentation import ClassicalNucleusSegmenter

            if task.mask_source == "segmenter":
                _log.warning(
                    "%s: trained with mask_source='segmenter' but its segmenter was not saved "
                    "(not a classical method or a U-Net checkpoint); using k-means, pass "
                    "segmenter= to choose", where,
                )  # fmt: skip
            task.segmenter = ClassicalNucleusSegmenter()  # trained on masks: the best classical
        return model

    @classmethod
    def from_datamodule(
        cls, task: ClassificationTask, datamodule: Any, *, device: str | torch.device = "cpu"
    ) -> TrainedModel:
        """The model as a checkpoint of ``task`` trained on ``datamodule`` would load.

        The pipeline is rebuilt from the datamodule's saved form (its config and fitted state),
        the same route a checkpoint takes.

        Args:
            task: A trained task.
            datamodule: The ``WBCDataModule`` it was trained with (set up: its stain target
                fitted).
            device: Where it runs.

        Returns:
            The trained model.
        """
        source: DevicePipeline = datamodule.pipeline
        pipeline = DevicePipeline.from_config(
            source.config(), source.state_dict(), where="datamodule"
        )
        dataset = datamodule.dataset
        return cls(task, pipeline, size=tuple(dataset.size), device=device,
                   pixels_per_um=dataset.target_pixels_per_um)  # fmt: skip

    # -- running -------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where the model runs."""
        return next(self.task.parameters()).device

    def to(self, device: str | torch.device) -> TrainedModel:
        """Move the network, the pipeline and the segmenter to ``device``.

        Args:
            device: The device.

        Returns:
            ``self``.
        """
        dev = _device(device)
        self.task.to(dev)
        self.pipeline.to(dev)
        if self.task.segmenter is not None:
            self.task.segmenter.to(dev)
        return self

    def transform(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The batch moved to the device and through the evaluation pipeline.

        Args:
            batch: A batch dict with a uint8 ``image`` ``(B, 3, H, W)`` (and optional masks).

        Returns:
            The batch with a normalised float ``image`` (and the segmenter's ``mask`` where the
            model takes it from its segmenter; see
            :meth:`~leukemia_wbc.tasks.ClassificationTask.prepare_batch`).
        """
        dev = self.device
        moved = {k: v.to(dev) if isinstance(v, Tensor) else v for k, v in batch.items()}
        moved.pop("skipped", None)
        moved.pop("errors", None)
        # the segmenter sees the images as decoded, as in training (before stain normalisation,
        # equalisation and background removal)
        moved = self.task.prepare_batch(moved)
        out: dict[str, Any] = self.pipeline(moved, train=False)
        stain = self.pipeline.stain
        self.stain_normalised = None if stain is None else ~stain.last_passthrough.cpu()
        return out

    @torch.inference_mode()
    def predict_batch(self, batch: dict[str, Any]) -> Tensor:
        """Class probabilities ``(B, C)`` of an untransformed (uint8) batch, on the CPU.

        Args:
            batch: A batch dict with a uint8 ``image``.

        Returns:
            Float32 probabilities, columns in :attr:`classes` order.
        """
        moved = self.transform(batch)
        with self.compiled.active():
            logits = self.task.forward_batch(moved)
        return logits.float().softmax(1).cpu()

    def batches(
        self,
        paths: Sequence[str],
        *,
        batch_size: int = 32,
        num_workers: int = 0,
        on_error: Literal["raise", "skip"] = "raise",
        pixels_per_um: float | None = None,
    ) -> Iterator[tuple[list[str], dict[str, Any]]]:
        """Decoded (uint8, resized) batches of image files, in order, with their paths.

        Args:
            paths: Image files.
            batch_size: Files per batch.
            num_workers: Decoding processes.
            on_error: What an unreadable file does: ``"raise"`` an
                :class:`~leukemia_wbc.data.ImageReadError` naming it (also from a worker
                process), or ``"skip"`` it: the batch then lists it in ``batch["errors"]`` as
                ``(path, message)`` and leaves it out of ``paths`` and the tensors.
            pixels_per_um: The files' pixel size: for a model trained at a physical scale,
                each image is resampled to it (as in training) before the cut to :attr:`size`.
                Without it, such a model warns and resizes the images as they are.

        Yields:
            ``(paths, batch)`` of the readable files; with ``"skip"``, a batch whose files all
            failed has no paths and only ``errors``.

        Raises:
            ImageReadError: An unreadable file, with ``on_error="raise"``.
            ValueError: An unknown ``on_error``.
        """
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        records = [Record(p, UNLABELLED, "") for p in paths]
        files = WBCDataset(records, self.classes, size=self.size, pixels_per_um=pixels_per_um)
        if self.pixels_per_um is not None and pixels_per_um is None:
            _log.warning(
                "the model was trained on images resampled to %.3g pixels per micrometre; the "
                "files' pixel size was not given (pixels_per_um), so they are resized to %s as "
                "they are", self.pixels_per_um, self.size,
            )  # fmt: skip
        elif self.pixels_per_um is not None:
            files = files.with_scale(self.pixels_per_um)
        loader = DataLoader(
            FileSamples(files),
            batch_size=batch_size,
            num_workers=num_workers,
            collate_fn=collate_file_samples,
            worker_init_fn=worker_init,
        )
        for batch in loader:
            errors: list[tuple[str, str]] = batch.pop("errors")
            if errors and on_error == "raise":
                raise ImageReadError(errors[0][1])
            if errors:
                batch["errors"] = errors
            yield list(batch.get("path", [])), batch

    def predict(
        self,
        inputs: Sequence[str | os.PathLike[str]] | Tensor,
        *,
        batch_size: int = 32,
        num_workers: int = 0,
        progress: bool = False,
        pixels_per_um: float | None = None,
    ) -> Tensor:
        """Class probabilities of image files or of a uint8 image batch.

        Args:
            inputs: Image paths, or a uint8 tensor ``(B, 3, H, W)`` at :attr:`size`.
            batch_size: Images per forward pass.
            num_workers: Decoding processes (files).
            progress: Show a progress bar.
            pixels_per_um: The files' pixel size (see :meth:`batches`).

        Returns:
            ``(N, C)`` float32 probabilities on the CPU, rows in input order.

        Raises:
            ValueError: A tensor that is not uint8 ``(B, 3, H, W)``.
        """
        if isinstance(inputs, Tensor):
            if inputs.dtype != torch.uint8 or inputs.ndim != 4 or inputs.shape[1] != 3:
                raise ValueError(f"predict: expected uint8 images (B, 3, H, W), got "
                                 f"{inputs.dtype} {tuple(inputs.shape)}")  # fmt: skip
            parts = [self.predict_batch({"image": inputs[i : i + batch_size]})
                     for i in range(0, len(inputs), batch_size)]  # fmt: skip
            return torch.cat(parts) if parts else torch.zeros(0, len(self.classes))
        paths = [os.fspath(p) for p in inputs]
        out = []
        batches = self.batches(paths, batch_size=batch_size, num_workers=num_workers,
                               pixels_per_um=pixels_per_um)  # fmt: skip
        total = -(-len(paths) // batch_size)
        for _, batch in tqdm(batches, total=total, desc="predict", disable=not progress):
            out.append(self.predict_batch(batch))
        return torch.cat(out) if out else torch.zeros(0, len(self.classes))

    def explain(
        self,
        batch: dict[str, Any],
        *,
        method: AttributionMethod = "gradcam",
        target: Tensor | Sequence[int] | None = None,
        n_steps: int = 32,
    ) -> Attribution:
        """Attribution maps (one per branch) of an untransformed batch.

        Args:
            batch: A batch dict with a uint8 ``image`` (and ``mask`` when known; else the
                model's segmenter gives it).
            method: ``"gradcam"`` or ``"integrated_gradients"``.
            target: Class per sample to explain (default: the predicted one).
            n_steps: Integration steps of Integrated Gradients.

        Returns:
            The :class:`~leukemia_wbc.explain.Attribution`.
        """
        explainer = Explainer(self.task, method, n_steps=n_steps)
        return explainer.explain(self.transform(batch), target)

    def describe(self) -> dict[str, Any]:
        """What the model is, as plain data (task, classes, size, pipeline, segmenter).

        Returns:
            A JSON-ready dict.
        """
        segmenter = self.task.segmenter
        return {
            "task": type(self.task).__name__,
            "classes": list(self.classes),
            "size": list(self.size),
            "pixels_per_um": self.pixels_per_um,
            "pipeline": self.pipeline.config(),
            "segmenter": None if segmenter is None else repr(segmenter).splitlines()[0],
        }

    def __repr__(self) -> str:
        """One line: task, classes, size and device."""
        return (f"TrainedModel({type(self.task).__name__}, classes={list(self.classes)}, "
                f"size={self.size}, device={self.device})")  # fmt: skip
