"""The file of a fitted handcrafted baseline: plain data and a scikit-learn estimator, no pickle.

Private module behind :meth:`~leukemia_wbc.models.HandcraftedSVM.save` and
:meth:`~leukemia_wbc.models.HandcraftedSVM.load`. A file is what ``torch.save`` writes of a
dict of plain values and tensors::

    {"format": "leukemia_wbc.handcrafted", "version": 1,
     "class": "<module>.<qualname>",  # looked up among the classes the program defines
     "init": {...},                   # constructor arguments: plain values
     "segmenter": {...} | None,       # segmenter_state(): plain values and tensors
     "segmenter_class": str | None,   # the segmenter's class, also when it cannot be saved
     "segmenter_spec": str | None,    # the method name or file it was given as
     "classes": [int, ...] | None, "fallbacks": [str, ...],
     "estimator": uint8 tensor | None}  # the fitted Pipeline in skops' format

It is read with ``torch.load(..., weights_only=True)``; the estimator with
``skops.io.loads`` and an explicit list of the scikit-learn types the baseline's pipeline is
made of, checked before anything is built. Nothing a file contains chooses a class to import
or a function to call. Files older versions wrote with joblib (pickles, which run code when
read) are refused unless the caller says it trusts them.
"""

from __future__ import annotations

import inspect
import io
import os
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from .._io import atomic_write_bytes
from ..transforms.registry import check_plain
from .segmenter import resolve_segmenter, segmenter_from_state, segmenter_state

__all__ = ["FORMAT", "VERSION", "read_baseline", "write_baseline"]

#: The ``format`` entry of a saved baseline.
FORMAT = "leukemia_wbc.handcrafted"
#: The newest format version this module writes and reads.
VERSION = 1
#: The scikit-learn types of the fitted pipeline that skops does not trust by default (the
#: estimators themselves, ``Pipeline``, ``StandardScaler``, ``SVC`` and
#: ``CalibratedClassifierCV``, and numpy arrays are trusted by skops); nothing else is loaded.
TRUSTED_TYPES: tuple[str, ...] = (
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.model_selection._split.StratifiedKFold",
)
_EXPECTED = "expected a file written by HandcraftedSVM.save"
#: How the compressors joblib may use start a file (gzip, bz2, xz, lzma).
_COMPRESSED = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"\x5d\x00\x00")

T = TypeVar("T")


def write_baseline(model: Any, path: str | os.PathLike[str]) -> None:
    """Write a (fitted or not) baseline in the format above, atomically.

    Args:
        model: A ``HandcraftedSVM`` or subclass whose constructor arguments are kept as
            attributes of the same names.
        path: Output file.

    Raises:
        ValueError: A constructor argument that is not kept as an attribute, or is not plain
            data (the message names it).
    """
    import skops.io as sio  # type: ignore[import-untyped]  # imported when a model is saved

    kind = type(model)
    segmenter = getattr(model, "segmenter", None)
    pipeline = getattr(model, "pipeline_", None)
    classes = getattr(model, "classes_", None)
    record: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "class": f"{kind.__module__}.{kind.__qualname__}",
        "init": _init_args(model),
        "segmenter": segmenter_state(segmenter),
        "segmenter_class": None if segmenter is None else type(segmenter).__name__,
        "segmenter_spec": check_plain(getattr(model, "segmenter_spec", None), "segmenter_spec"),
        "classes": None if classes is None else [int(c) for c in classes],
        "fallbacks": [str(n) for n in getattr(model, "fallbacks_", [])],
        "estimator": None
        if pipeline is None
        else torch.frombuffer(bytearray(sio.dumps(pipeline)), dtype=torch.uint8),
    }
    buffer = io.BytesIO()
    torch.save(record, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def read_baseline(
    path: str | os.PathLike[str],
    expected: type[T],
    *,
    root: type,
    segmenter: Any = None,
    trust_pickle: bool = False,
) -> T:
    """Read a baseline :func:`write_baseline` wrote (or, if trusted, an older pickle).

    Args:
        path: The file.
        expected: The class asked for (``HandcraftedSVM`` or a subclass): the file's class must
            be it or one of its subclasses defined in the running program.
        root: The library's base class (``HandcraftedSVM``): the classes a file may name are
            it and its subclasses.
        segmenter: Replaces the saved segmenter (anything the class's ``segmenter`` argument
            takes); needed when the saved one could not be stored (a user's callable).
        trust_pickle: Unpickle a file an older version wrote with joblib (runs any code the
            file holds: only for files the user wrote).

    Returns:
        The model.

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not a file of this library, a pickle without ``trust_pickle``, a newer
            format, an unknown class, untrusted estimator types or settings that do not fit.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"model file {file} not found ({_EXPECTED})")
    if not zipfile.is_zipfile(file):
        if not _looks_pickled(file):
            raise ValueError(f"{file} is not a HandcraftedSVM file of this library ({_EXPECTED})")
        if not trust_pickle:
            raise ValueError(
                f"{file} is a pickle (joblib) written by an older version of leukemia_wbc, and "
                "unpickling a file can run any code it holds: refused. Retrain the model and "
                "save it again, or, only if you wrote this file yourself, load it with "
                "HandcraftedSVM.load(path, trust_pickle=True) and save it in the new format"
            )
        return _read_pickle(file, expected, segmenter)
    try:
        record = torch.load(file, map_location="cpu", weights_only=True)
    except Exception:  # torch's message advises weights_only=False: not shown
        raise ValueError(
            f"{file} is not a HandcraftedSVM file of this library (a zip archive that does not "
            f"hold plain data and tensors only; {_EXPECTED})"
        ) from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ValueError(f"{file} is not a HandcraftedSVM file of this library ({_EXPECTED})")
    version = record.get("version")
    if not isinstance(version, int) or version < 1 or version > VERSION:
        raise ValueError(
            f"{file} has format version {version!r}, this leukemia_wbc reads up to {VERSION}: "
            "it was written by a newer version; update leukemia_wbc"
        )
    return _build(file, record, expected, root, segmenter)


def _init_args(model: Any) -> dict[str, Any]:
    """The constructor arguments of ``model`` (but its segmenter) as plain values."""
    init: dict[str, Any] = {}
    for name in _parameters(type(model)):
        if name == "segmenter":
            continue
        if not hasattr(model, name):
            raise ValueError(
                f"cannot save {type(model).__name__}: its constructor argument {name!r} is not "
                "kept as an attribute of the same name (needed to rebuild it from the file)"
            )
        value = getattr(model, name)
        value = value.item() if isinstance(value, np.generic) else value
        init[name] = check_plain(value, f"{type(model).__name__}.{name}")
    return init


def _parameters(kind: type) -> list[str]:
    """The keyword-passable constructor arguments of ``kind``."""
    passable = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    params = inspect.signature(kind).parameters.values()
    return [p.name for p in params if p.kind in passable]


def _defined(root: type) -> dict[str, type]:
    """``root`` and every subclass defined in the running program, by ``module.qualname``."""
    known: dict[str, type] = {}
    todo = [root]
    while todo:
        kind = todo.pop()
        known.setdefault(f"{kind.__module__}.{kind.__qualname__}", kind)
        todo += kind.__subclasses__()
    return known


def _lookup(file: Path, name: Any, expected: type, root: type) -> type:
    """The class a file names, among ``root`` and its subclasses (nothing is imported)."""
    known = _defined(root)
    kind = known.get(name) if isinstance(name, str) else None
    if kind is None and isinstance(name, str):  # a class moved to another module
        same = [
            k for path, k in known.items() if path.rpartition(".")[2] == name.rpartition(".")[2]
        ]
        kind = same[0] if len(same) == 1 else None
    if kind is None:
        raise ValueError(
            f"{file} names the class {name!r}, which is not a HandcraftedSVM class of this "
            f"program (known: {', '.join(sorted(k.rpartition('.')[2] for k in known))}); nothing "
            "was imported: import the module that defines it first"
        )
    if not issubclass(kind, expected):
        raise ValueError(f"{file} holds a {kind.__name__}, expected a {expected.__name__}")
    return kind


def _build(
    file: Path, record: Mapping[str, Any], expected: type[T], root: type, segmenter: Any
) -> T:
    """The model a checked record describes."""
    kind = _lookup(file, record.get("class"), expected, root)
    init = check_plain(record.get("init") or {}, f"{file} init")
    params = _parameters(kind)
    if not isinstance(init, dict) or any(k not in params or k == "segmenter" for k in init):
        extra = sorted(set(init) - set(params)) if isinstance(init, dict) else init
        raise ValueError(f"{file}: the saved arguments {extra} are not {kind.__name__}'s")
    spec = check_plain(record.get("segmenter_spec"), f"{file} segmenter_spec")
    if segmenter is None:
        state, saved_class = record.get("segmenter"), record.get("segmenter_class")
        if state is None and saved_class is not None:
            raise ValueError(
                f"{file}: the model's segmenter (a {saved_class}) could not be stored in the "
                "file; give it again: HandcraftedSVM.load(path, segmenter=...)"
            )
        rebuilt = segmenter_from_state(state, where=str(file))
    else:  # a method name or a checkpoint path is resolved as the constructor resolves it
        spec = segmenter if isinstance(segmenter, str) else None
        rebuilt = resolve_segmenter(spec) if spec else segmenter
    if "segmenter" in params:
        init["segmenter"] = rebuilt
    try:
        model: Any = kind(**init)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{file}: the saved settings do not fit {kind.__name__} ({err})") from None
    if "segmenter" not in params and rebuilt is not None:
        model.segmenter = rebuilt
    model.segmenter_spec = spec if isinstance(spec, str) else None
    fallbacks = record.get("fallbacks") or []
    model.fallbacks_ = [str(n) for n in check_plain(fallbacks, f"{file} fallbacks")]
    classes = check_plain(record.get("classes"), f"{file} classes")
    estimator = record.get("estimator")
    if (classes is None) != (estimator is None):
        raise ValueError(f"{file}: a fitted model needs both its classes and its estimator")
    if classes is not None:
        model.classes_ = np.asarray(classes, dtype=np.int64)
        model.pipeline_ = _estimator(file, estimator, model.classes_)
    result: T = model
    return result


def _estimator(file: Path, payload: Any, classes: np.ndarray) -> Any:
    """The fitted scikit-learn pipeline, loaded by skops with the explicit trusted types."""
    import skops.io as sio
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    if not (
        isinstance(payload, torch.Tensor) and payload.dtype == torch.uint8 and payload.ndim == 1
    ):
        raise ValueError(f"{file}: the saved estimator is not a byte string")
    data = payload.numpy().tobytes()
    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as err:  # skops' errors on damaged data are many
        raise ValueError(f"{file}: the saved estimator cannot be read ({err})") from None
    refused = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if refused:
        raise ValueError(
            f"{file}: the saved estimator holds types this library does not load "
            f"({', '.join(refused)}); refused, nothing was built or run ({_EXPECTED})"
        )
    try:
        pipeline = sio.loads(data, trusted=list(TRUSTED_TYPES))
    except Exception as err:  # e.g. an estimator of an incompatible scikit-learn
        raise ValueError(f"{file}: the saved estimator cannot be rebuilt ({err})") from None
    steps = getattr(pipeline, "steps", None)
    shape_ok = (
        isinstance(pipeline, Pipeline)
        and [name for name, _ in steps or []] == ["scale", "svm"]
        and isinstance(pipeline.steps[0][1], StandardScaler)
        # an SVC alone when calibration was off (a class had fewer than 3 training samples)
        and isinstance(pipeline.steps[1][1], CalibratedClassifierCV | SVC)
    )
    if not shape_ok or not np.array_equal(np.asarray(pipeline.classes_), classes):
        raise ValueError(
            f"{file}: the saved estimator is not the baseline's scaler and calibrated SVM for "
            f"classes {classes.tolist()}"
        )
    return pipeline


def _looks_pickled(file: Path) -> bool:
    """Whether a file starts as a pickle (protocol 2 to 5) or a compressed joblib dump does."""
    with open(file, "rb") as fh:
        head = fh.read(8)
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return True
    zlib = len(head) >= 2 and head[0] == 0x78 and (head[0] * 256 + head[1]) % 31 == 0
    return zlib or head.startswith(_COMPRESSED)


def _read_pickle(file: Path, expected: type[T], segmenter: Any) -> T:
    """An older version's joblib pickle, unpickled because the caller trusts it."""
    import joblib  # type: ignore[import-untyped]

    warnings.warn(
        f"{file}: unpickling a joblib file written by an older version of leukemia_wbc "
        "(trust_pickle=True); save the model again to store it in the safe format",
        UserWarning,
        stacklevel=4,
    )
    try:
        model = joblib.load(file)
    except Exception as err:  # unpickling raises anything
        raise ValueError(
            f"{file}: the pickle cannot be read ({type(err).__name__}: {err})"
        ) from None
    if not isinstance(model, expected):
        raise ValueError(f"{file} holds a {type(model).__name__}, expected a {expected.__name__}")
    if segmenter is not None:
        spec = segmenter if isinstance(segmenter, str) else None
        model.segmenter = resolve_segmenter(spec) if spec else segmenter  # type: ignore[attr-defined]
        model.segmenter_spec = spec  # type: ignore[attr-defined]
    return model
