"""Batched Macenko stain normalisation, stain separation and stain augmentation.

Macenko et al., "A method for normalizing histology slides for quantitative analysis", ISBI
2009. Per image: optical density ``OD = -log((I + 1) / Io)``; pixels whose OD is below ``beta``
in any channel are dropped from the estimate; the OD of the rest is projected onto the plane of
the two leading eigenvectors of its covariance; the stain vectors are the directions at the
``alpha`` and ``100 - alpha`` percentiles of the angle in that plane (the one with the larger
red component is hematoxylin); concentrations follow by least squares, and their 99th
percentile is the maximum concentration. Normalisation rescales the concentrations to the
target's maxima and recomposes the image with the target's stain vectors.

Here every step runs on a whole batch (or a chunk of it) at once, with no Python loop over
images. By default the angles' percentiles and the maximum concentrations are taken on seeded,
stratified samples of each image's pixels (:mod:`~leukemia_wbc.transforms.macenko_sample`; the
covariance still sums every tissue pixel), and the normalised image is one per-image 3x3 matrix
applied to the optical density followed by one exponential
(:mod:`~leukemia_wbc.transforms.macenko_fast`). ``sample=None`` estimates on every pixel:
masked covariances, batched ``eigh`` of 3x3 matrices and exact nearest-rank percentiles (the
convention of torchstain's ``kthvalue``) from one ``topk`` per batch
(:mod:`~leukemia_wbc.transforms.macenko`).

Two kinds of background are left out of the estimate and left as they are in the output: pure
black (C-NMC cells are cut out on black, whose OD of about 5.5 in every channel would wreck the
eigenvectors) and bright plasma (OD below ``beta`` in every channel). An image with too little
tissue, or whose estimate degenerates (one flat colour), passes through unchanged and is
flagged, never NaN.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from .checks import check_batch
from .macenko import (
    DEFAULT_MAX_CONCENTRATIONS,
    DEFAULT_STAIN_MATRIX,
    StainEstimate,
    estimate_stains,
    like_input,
)
from .macenko_fast import normalize_batch, sampled_estimate

__all__ = ["MacenkoNormalizer"]


class MacenkoNormalizer(nn.Module):
    """Batched Macenko stain normalisation to a target fitted on reference image(s).

    The target stain matrix, maximum concentrations and the ``fitted`` flag are buffers: they
    travel in ``state_dict`` and Lightning checkpoints. Before :meth:`fit`, the target is the
    reference of the original implementation (:data:`DEFAULT_STAIN_MATRIX`). On the CPU the
    normaliser keeps its scratch tensors from call to call (about 20 MB for chunks of eight
    224x224 images): fresh memory costs page faults on every call. They are neither state nor
    copied, so one normaliser should not run in two threads at once.

    Args:
        io: Transmitted light intensity ``Io``.
        alpha: Percentile of the extreme stain angles.
        beta: OD threshold below which a channel counts as transparent.
        black_level: Intensity at or below which (in every channel) a pixel is black background.
        min_tissue_fraction: Images with a smaller share of tissue pixels pass through. The
            maximum concentration is the 99th percentile over all non-black pixels (as in
            torchstain), so an image with less than about 1 % tissue on a bright background
            passes through whatever this is.
        preserve_background: Leave black and bright (plasma) pixels as they are. ``False``
            recomposes them like every other pixel, as torchstain and staintools do.
        backend: ``"torch"`` (batched, any device) or ``"staintools"`` (staintools' own
            Macenko, CPU, one image at a time; needs the ``staintools`` extra). With
            ``"staintools"``, the buffers hold staintools' target in float64
            (``stain_matrix`` is the transpose of its ``stain_matrix_target``,
            ``max_concentrations`` its ``maxC_target``), from which its normaliser is rebuilt
            at each call: a deep copy, or a fresh normaliser given the ``state_dict``,
            transforms bit-identically.
        cpu_chunk: On the CPU, batches are processed this many images at a time, so that the
            intermediate tensors stay in cache (see ``benchmarks/stain.py``); on other devices
            the whole batch runs at once. The results do not depend on it.
        sample: Take the percentiles of each image's estimate (its stain angles, its maximum
            concentrations) on this many of its tissue pixels and this many of its non-black
            pixels (stratified, seeded samples; every pixel when there are fewer) instead of on
            all of them; the covariance still sums every tissue pixel. ``None`` estimates on
            every pixel (exact, slower). :meth:`fit` always uses every pixel. See
            ``docs/pipeline.md`` for the agreement and speed of each size.
        seed: Seed of the samples: the same image gives the same result, alone or in a
            batch, on every call.

    Raises:
        ValueError: Parameters out of range or an unknown backend.
        ImportError: ``backend="staintools"`` without staintools installed.
    """

    stain_matrix: Tensor
    max_concentrations: Tensor
    fitted: Tensor

    def __init__(
        self,
        *,
        io: float = 240.0,
        alpha: float = 1.0,
        beta: float = 0.15,
        black_level: float = 10.0,
        min_tissue_fraction: float = 0.01,
        preserve_background: bool = True,
        backend: Literal["torch", "staintools"] = "torch",
        cpu_chunk: int = 8,
        sample: int | None = 4096,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not 0 < io <= 255:
            raise ValueError(f"io must lie in (0, 255], got {io}")
        if not 0 <= alpha < 50:
            raise ValueError(f"alpha must lie in [0, 50), got {alpha}")
        if beta <= 0:
            raise ValueError(f"beta must be positive, got {beta}")
        if not 0 <= min_tissue_fraction < 1:
            raise ValueError(f"min_tissue_fraction must lie in [0, 1), got {min_tissue_fraction}")
        if cpu_chunk < 1:
            raise ValueError(f"cpu_chunk must be at least 1, got {cpu_chunk}")
        if sample is not None and sample < 100:
            raise ValueError(f"sample must be None or at least 100 pixels, got {sample}")
        if backend not in ("torch", "staintools"):
            raise ValueError(f"backend must be 'torch' or 'staintools', got {backend!r}")
        self.io, self.alpha, self.beta = float(io), float(alpha), float(beta)
        self.black_level = float(black_level)
        self.min_tissue_fraction = float(min_tissue_fraction)
        self.preserve_background = preserve_background
        self.backend = backend
        self.cpu_chunk = cpu_chunk
        self.sample, self.seed = sample, int(seed)
        if backend == "staintools":
            _import_staintools()  # fail here, not at the first batch; not kept (deep copies)
        # staintools' target is float64 numpy: kept exactly, so that a copy transforms the same
        dtype = torch.float64 if backend == "staintools" else torch.float32
        self.register_buffer("stain_matrix", torch.tensor(DEFAULT_STAIN_MATRIX, dtype=dtype))
        self.register_buffer(
            "max_concentrations", torch.tensor(DEFAULT_MAX_CONCENTRATIONS, dtype=dtype)
        )
        self.register_buffer("fitted", torch.tensor(False))
        self.last_passthrough: Tensor = torch.zeros(0, dtype=torch.bool)
        self.passthrough_count = 0

    def estimate(self, batch: Tensor) -> StainEstimate:
        """Per-image stain estimate with this normaliser's parameters (``sample`` included).

        Args:
            batch: ``(B, 3, H, W)`` uint8, or float in ``[0, 1]``.

        Returns:
            The :class:`StainEstimate`, with every pixel's concentrations.

        Raises:
            TypeError: See :meth:`normalize`.
            ValueError: See :meth:`normalize`.
        """
        if self.sample is None:
            return estimate_stains(batch, **self._options())
        check_batch(batch, "MacenkoNormalizer.estimate input")
        return sampled_estimate(batch, **self._options(), sample=self.sample, seed=self.seed)

    def _options(self) -> dict[str, float]:
        return {
            "io": self.io, "alpha": self.alpha, "beta": self.beta,
            "black_level": self.black_level, "min_tissue_fraction": self.min_tissue_fraction,
        }  # fmt: skip

    @torch.no_grad()
    def fit(self, reference: Tensor) -> MacenkoNormalizer:
        """Set the target from one reference image or a batch (median of per-image estimates).

        The estimates use every pixel of the references, whatever ``sample`` is (a one-off
        cost, for an exact target). With ``backend="staintools"``, the per-image estimates are
        staintools' own fits of the images the torch estimate finds valid (images staintools
        fails on are skipped); for one image the target is staintools' fit of it, bit-exact.

        Args:
            reference: ``(3, H, W)`` or ``(B, 3, H, W)``, uint8 or float in ``[0, 1]``.

        Returns:
            ``self``.

        Raises:
            ValueError: No reference image has enough tissue for an estimate, or float
                images outside ``[0, 1]``.
        """
        batch = reference.unsqueeze(0) if reference.ndim == 3 else reference
        est = estimate_stains(batch, **self._options())
        if not bool(est.valid.any()):
            raise ValueError(
                "MacenkoNormalizer.fit: no reference image has enough tissue "
                f"(min_tissue_fraction={self.min_tissue_fraction}); pass stained cell images"
            )
        if self.backend == "staintools":
            stains, max_c = _fit_staintools(batch[est.valid])
        else:
            stains = est.stains[est.valid].median(dim=0).values
            stains = stains / stains.norm(dim=0, keepdim=True)
            max_c = est.max_concentrations[est.valid].median(dim=0).values
        self.stain_matrix.copy_(stains.to(self.stain_matrix))
        self.max_concentrations.copy_(max_c.to(self.max_concentrations))
        self.fitted.fill_(True)
        return self

    @torch.no_grad()
    def normalize(self, batch: Tensor) -> tuple[Tensor, Tensor]:
        """Normalise a batch and say which images passed through unchanged.

        Args:
            batch: ``(B, 3, H, W)`` uint8, or float in ``[0, 1]``.

        Returns:
            ``(images, passthrough)``: images of the input's dtype and range, and a ``(B,)``
            bool tensor marking images left unchanged (too little tissue or a degenerate
            estimate).

        Raises:
            TypeError: ``batch`` is not a tensor, or has an integer dtype other than uint8.
            ValueError: Wrong shape, non-finite values, or float values outside ``[0, 1]``
                (float images in 0-255 are refused, not passed through unchanged).
        """
        check_batch(batch, "MacenkoNormalizer input")
        if self.backend == "staintools":
            return self._normalize_staintools(batch)
        chunk = self.cpu_chunk if batch.device.type == "cpu" else batch.shape[0]
        work = self.__dict__.setdefault("_work", {}) if batch.device.type == "cpu" else {}
        out, passthrough = normalize_batch(
            batch, self.stain_matrix, self.max_concentrations, **self._options(),
            sample=self.sample, seed=self.seed, keep_background=self.preserve_background,
            chunk=chunk, work=work,
        )  # fmt: skip
        return out, passthrough

    def __getstate__(self) -> dict[str, Any]:
        """The module's state for pickling and deep copies, without its scratch memory."""
        state = dict(self.__dict__)
        state.pop("_work", None)
        return state

    def _chunks(self, batch: Tensor) -> tuple[Tensor, ...]:
        if batch.device.type != "cpu" or batch.shape[0] <= self.cpu_chunk:
            return (batch,)
        step = self.cpu_chunk
        return tuple(batch[i : i + step] for i in range(0, batch.shape[0], step))

    def forward(self, batch: Tensor) -> Tensor:
        """Normalise a batch; pass-through images are recorded in :attr:`last_passthrough`.

        Args:
            batch: ``(B, 3, H, W)`` uint8, or float in ``[0, 1]``.

        Returns:
            The normalised batch, same dtype and range as the input.

        Raises:
            TypeError: See :meth:`normalize`.
            ValueError: See :meth:`normalize` (e.g. float images in 0-255).
        """
        out, passthrough = self.normalize(batch)
        self.last_passthrough = passthrough
        self.passthrough_count += int(passthrough.sum())
        return out

    @torch.no_grad()
    def separate(self, batch: Tensor, *, rescale: bool = True) -> Tensor:
        """Hematoxylin and eosin concentration maps of each image (its own stain vectors).

        Args:
            batch: ``(B, 3, H, W)`` uint8, or float in ``[0, 1]``.
            rescale: Scale each image's concentrations so that its 99th percentile matches the
                target's maximum concentration (comparable across images).

        Returns:
            ``(B, 2, H, W)`` float concentrations, channel 0 hematoxylin, 1 eosin; black
            background pixels are 0.
        """
        check_batch(batch, "MacenkoNormalizer.separate input")
        return torch.cat([self._separate_part(part, rescale) for part in self._chunks(batch)])

    def _separate_part(self, batch: Tensor, rescale: bool) -> Tensor:
        est = self.estimate(batch)
        conc = est.concentrations
        if rescale:
            scale = self.max_concentrations.to(conc) / est.max_concentrations.clamp(min=1e-6)
            conc = conc * scale.unsqueeze(2)
        black = (est.intensity <= self.black_level).all(dim=1, keepdim=True)
        conc = conc.masked_fill(black, 0.0)
        return conc.view(batch.shape[0], 2, *batch.shape[2:])

    def _normalize_staintools(self, batch: Tensor) -> tuple[Tensor, Tensor]:
        if not bool(self.fitted):
            raise RuntimeError("MacenkoNormalizer(backend='staintools'): call fit() first")
        normalizer = self._staintools_normalizer()
        outs, failed = [], []
        for image in batch:
            try:
                arr = normalizer.transform(_to_numpy_image(image))
                outs.append(torch.from_numpy(arr).permute(2, 0, 1).float())
                failed.append(False)
            except Exception:  # staintools raises on images without tissue: pass through
                outs.append(torch.zeros(image.shape, dtype=torch.float32))
                failed.append(True)
        out = like_input(torch.stack(outs).to(batch.device), batch)
        passthrough = torch.tensor(failed, device=batch.device)
        return torch.where(passthrough.view(-1, 1, 1, 1), batch, out), passthrough

    def _staintools_normalizer(self) -> Any:
        """A staintools Macenko ``StainNormalizer`` holding this normaliser's target.

        staintools' ``transform`` reads only ``stain_matrix_target`` (``(2, 3)``, rows
        hematoxylin and eosin) and ``maxC_target`` (``(1, 2)``); both are rebuilt from the
        float64 buffers, bit-exact, for every batch (a few numbers), so that nothing but the
        buffers holds the target: a deep copy or a loaded ``state_dict`` transforms the same.
        """
        staintools = _import_staintools()
        normalizer = staintools.StainNormalizer(method="macenko")
        matrix = self.stain_matrix.detach().to("cpu", torch.float64).T.numpy()
        normalizer.stain_matrix_target = np.ascontiguousarray(matrix)
        normalizer.maxC_target = (
            self.max_concentrations.detach().to("cpu", torch.float64).numpy().reshape(1, 2).copy()
        )
        return normalizer


def _to_numpy_image(image: Tensor) -> Any:
    arr = (
        image
        if image.dtype == torch.uint8
        else (image * 255.0).round().clamp(0, 255).to(torch.uint8)
    )
    # a copy: staintools writes into its input (zeros become ones)
    return arr.permute(1, 2, 0).cpu().numpy().copy()


def _fit_staintools(images: Tensor) -> tuple[Tensor, Tensor]:
    """The Macenko target staintools fits on each image, and their median (as in :meth:`fit`).

    Args:
        images: ``(B, 3, H, W)`` reference images (uint8, or float in ``[0, 1]``).

    Returns:
        ``(stain_matrix, max_concentrations)``: float64 ``(3, 2)`` (columns hematoxylin and
        eosin, the transpose of staintools' ``stain_matrix_target``) and ``(2,)`` (its
        ``maxC_target``). For one image, staintools' own fit, bit-exact.

    Raises:
        ValueError: staintools fails on every image.
    """
    staintools = _import_staintools()
    matrices, maxima, errors = [], [], []
    for image in images:
        normalizer = staintools.StainNormalizer(method="macenko")
        try:
            normalizer.fit(_to_numpy_image(image))
        except Exception as err:  # staintools raises on images without tissue: skip them
            errors.append(f"{type(err).__name__}: {err}")
            continue
        matrix = torch.from_numpy(np.asarray(normalizer.stain_matrix_target, dtype=np.float64))
        max_c = torch.from_numpy(np.asarray(normalizer.maxC_target, dtype=np.float64))
        finite = bool(torch.isfinite(matrix).all()) and bool(torch.isfinite(max_c).all())
        if finite and matrix.shape == (2, 3) and max_c.numel() == 2:
            matrices.append(matrix.T)
            maxima.append(max_c.reshape(2))
    if not matrices:
        raise ValueError(
            "MacenkoNormalizer.fit: staintools found no stain estimate on any reference image"
            + (f" ({errors[0]})" if errors else "")
        )
    if len(matrices) == 1:
        return matrices[0], maxima[0]
    stains = torch.stack(matrices).median(dim=0).values
    return stains / stains.norm(dim=0, keepdim=True), torch.stack(maxima).median(dim=0).values


def _import_staintools() -> Any:
    try:
        import staintools
    except ImportError as err:
        raise ImportError(
            "MacenkoNormalizer(backend='staintools') needs staintools: "
            "pip install 'leukemia-wbc[staintools]' (on a machine without a display, then "
            "pip uninstall -y opencv-python && pip install --force-reinstall --no-deps "
            f"opencv-python-headless; see docs/installation.md). Import failed with: {err}"
        ) from err
    return staintools
