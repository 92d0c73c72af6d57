"""The device stage: every per-pixel transform of a batch, in the library's fixed order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .checks import check_batch
from .registry import build_module, check_plain, module_config
from .stain import MacenkoNormalizer

__all__ = [
    "PIPELINE_KEY",
    "ColourMode",
    "DevicePipeline",
    "EqualizeMode",
    "colour_input",
    "make_equalizer",
]

#: Checkpoint key of a trained model's evaluation pipeline (config, state, image size).
PIPELINE_KEY = "leukemia_wbc_pipeline"

#: The steps of a pipeline that a checkpoint records as registered modules.
_STEPS = ("stain", "background", "equalize")

#: Histogram equalisation choices of :class:`DevicePipeline`.
EqualizeMode = Literal["none", "hist", "clahe"]

#: What the model sees of the colour: ``"rgb"`` (all of it), ``"grayscale"`` (luminance) or
#: ``"hematoxylin"`` (the hematoxylin concentration alone, as a gray image).
ColourMode = Literal["rgb", "grayscale", "hematoxylin"]


def colour_input(x: Tensor, mode: ColourMode) -> Tensor:
    """Reduce a float batch to what ``mode`` lets the model see, still three channels.

    ``"grayscale"`` keeps luminance (ITU-R BT.601); ``"hematoxylin"`` keeps each image's
    Macenko hematoxylin concentration, scaled by its 99th percentile and inverted, so nuclei are
    dark on a white background whatever the stain's hue and strength. Both remove the colour
    cues a model can use as a shortcut; the second also removes eosin (red cells, plasma).

    Args:
        x: ``(B, 3, H, W)`` float in ``[0, 1]``.
        mode: ``"rgb"``, ``"grayscale"`` or ``"hematoxylin"``.

    Returns:
        ``(B, 3, H, W)`` float in ``[0, 1]``.

    Raises:
        ValueError: An unknown mode.
    """
    if mode == "rgb":
        return x
    if mode == "grayscale":
        from .enhance import Grayscale

        gray: Tensor = Grayscale(keep_channels=True)(x)
        return gray
    if mode == "hematoxylin":
        from .macenko import estimate_stains

        conc = estimate_stains(x.clamp(0, 1)).concentrations[:, 0].to(x.dtype)  # (B, H * W)
        top = torch.quantile(conc, 0.99, dim=1, keepdim=True).clamp_min(1e-6)
        gray = 1.0 - (conc / top).clamp(0, 1)
        return gray.view(x.shape[0], 1, *x.shape[2:]).expand(-1, 3, -1, -1).contiguous()
    raise ValueError(f"colour must be 'rgb', 'grayscale' or 'hematoxylin', got {mode!r}")


def make_equalizer(mode: EqualizeMode) -> nn.Module | None:
    """The equalisation module for ``mode``.

    Args:
        mode: ``"none"``, ``"hist"`` (global histogram equalisation of luminance) or
            ``"clahe"`` (contrast-limited adaptive equalisation of luminance).

    Returns:
        The module, or ``None`` for ``"none"``.

    Raises:
        ValueError: An unknown mode.
    """
    if mode == "none":
        return None
    from .enhance import CLAHE, HistogramEqualization

    if mode == "hist":
        return HistogramEqualization()
    if mode == "clahe":
        return CLAHE()
    raise ValueError(f"equalize must be 'none', 'hist' or 'clahe', got {mode!r}")


class DevicePipeline(nn.Module):
    """Per-pixel transforms of a batch dict on its device, in a fixed order.

    1. stain normalisation (uint8 in, uint8 out);
    2. conversion to float in ``[0, 1]``;
    3. background removal;
    4. histogram equalisation;
    5. augmentation (training only; masks follow the geometry);
    6. normalisation to the model's channel mean and standard deviation.

    Every step but the last is optional. The stain normaliser's target travels in this
    module's ``state_dict``.

    Args:
        stain: A (fitted) :class:`~leukemia_wbc.transforms.stain.MacenkoNormalizer`, or ``None``.
        background: Background removal module (float batch in, float batch out), or ``None``.
        equalize: Equalisation module (float batch in, float batch out), or ``None``.
        augment: Module mapping a batch dict with a float ``image`` to a batch dict, or ``None``.
        mean: Three channel means for the final normalisation.
        std: Three channel standard deviations.
        colour: What the model sees of the colour, applied after augmentation (see
            :func:`colour_input`).

    Raises:
        ValueError: ``mean`` / ``std`` not three values, or a non-positive ``std``.
    """

    mean: Tensor
    std: Tensor

    def __init__(
        self,
        *,
        stain: MacenkoNormalizer | None = None,
        background: nn.Module | None = None,
        equalize: nn.Module | None = None,
        augment: nn.Module | None = None,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        colour: ColourMode = "rgb",
    ) -> None:
        super().__init__()
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std must be 3 values each (std > 0), got {mean}, {std}")
        if colour not in ("rgb", "grayscale", "hematoxylin"):
            raise ValueError(f"colour must be 'rgb', 'grayscale' or 'hematoxylin', got {colour!r}")
        self.colour: ColourMode = colour
        self.stain = stain
        self.background = background
        self.equalize = equalize
        self.augment = augment
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1))

    def prepare(self, image: Tensor) -> Tensor:
        """Steps 1-4 (no augmentation, no normalisation) on a uint8 batch.

        Args:
            image: ``(B, 3, H, W)`` uint8.

        Returns:
            Float32 ``(B, 3, H, W)`` in ``[0, 1]``.

        Raises:
            TypeError: ``image`` is not uint8.
        """
        check_batch(image, "device stage input")
        if image.dtype != torch.uint8:
            raise TypeError(
                f"device stage input: expected uint8 images (B, 3, H, W), got {image.dtype}"
            )
        if self.stain is not None:
            image = self.stain(image)
        x = image.float().div_(255.0)
        if self.background is not None:
            x = self.background(x)
        if self.equalize is not None:
            x = self.equalize(x)
        return x

    def forward(self, batch: dict[str, Any], *, train: bool = False) -> dict[str, Any]:
        """Run the whole device stage on a batch dict.

        Args:
            batch: Batch dict with a uint8 ``image`` ``(B, 3, H, W)`` and optional masks.
            train: Whether to augment.

        Returns:
            A new dict whose ``image`` is normalised float32.
        """
        out = dict(batch)
        out["image"] = self.prepare(batch["image"])
        if train and self.augment is not None:
            out = self.augment(out)
        out["image"] = colour_input(out["image"], self.colour)
        out["image"] = (out["image"] - self.mean) / self.std
        return out

    # -- saving --------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """What rebuilds this pipeline for evaluation, as plain data (no augmentation).

        Each of stain normalisation, background removal and equalisation is recorded as its
        registered class name and constructor arguments (see
        :func:`~leukemia_wbc.transforms.register_pipeline_module`); the fitted tensors travel
        separately in :meth:`state_dict`.

        Returns:
            ``{"stain": ..., "background": ..., "equalize": ..., "mean": [...], "std": [...],
            "colour": ...}``.

        Raises:
            ValueError: A step whose class is not registered or whose arguments are not plain.
        """
        out: dict[str, Any] = {
            step: None if getattr(self, step) is None else module_config(getattr(self, step), step)
            for step in _STEPS
        }
        out["mean"] = [float(v) for v in self.mean.flatten().tolist()]
        out["std"] = [float(v) for v in self.std.flatten().tolist()]
        out["colour"] = self.colour
        return out

    @classmethod
    def from_config(
        cls, config: Any, state: dict[str, Tensor] | None = None, *, where: str = "pipeline"
    ) -> DevicePipeline:
        """Rebuild an evaluation pipeline from :meth:`config` (and its ``state_dict``).

        Only registered module names are looked up; nothing in ``config`` is imported or called.

        Args:
            config: What :meth:`config` returned (read from a file).
            state: What :meth:`state_dict` returned, e.g. the fitted Macenko target.
            where: The file or object it came from (for messages).

        Returns:
            The pipeline, in evaluation order, without augmentation.

        Raises:
            ValueError: A malformed config, an unregistered module or a state that does not fit.
        """
        if not isinstance(config, dict):
            raise ValueError(f"{where}: the saved pipeline is not a mapping")
        plain = {k: v for k, v in config.items() if k not in _STEPS}
        plain = check_plain(plain, f"{where} pipeline")
        steps = {
            step: None if config.get(step) is None else build_module(config[step], step)
            for step in _STEPS
        }
        try:
            pipeline = cls(
                stain=steps["stain"],  # type: ignore[arg-type]
                background=steps["background"],
                equalize=steps["equalize"],
                mean=plain.get("mean", (0.485, 0.456, 0.406)),
                std=plain.get("std", (0.229, 0.224, 0.225)),
                colour=plain.get("colour", "rgb"),
            )
            if state:  # augmentation is training only: its buffers are not rebuilt
                pipeline.load_state_dict(
                    {k: v for k, v in state.items() if not k.startswith("augment.")}
                )
        except (TypeError, RuntimeError) as err:
            raise ValueError(f"{where}: the saved pipeline does not rebuild ({err})") from None
        return pipeline
