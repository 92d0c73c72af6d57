"""``Predictions``: the out-of-fold class probabilities of a cross-validation, as a table."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .._io import atomic_write_text

__all__ = ["Predictions"]


@dataclass
class Predictions:
    """Out-of-fold predictions: one row per held-out sample.

    Attributes:
        index: Dataset positions.
        path: Image paths.
        group: Groups (patients, subjects, smears).
        label: True class indices.
        fold: Fold that held the sample out.
        probs: ``(N, C)`` class probabilities.
        classes: The ``C`` class names.
    """

    index: np.ndarray
    path: list[str]
    group: list[str]
    label: np.ndarray
    fold: np.ndarray
    probs: np.ndarray
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.index)

    @property
    def pred(self) -> np.ndarray:
        """Predicted class indices (arg-max of :attr:`probs`)."""
        pred: np.ndarray = self.probs.argmax(axis=1)
        return pred

    @staticmethod
    def concat(parts: Sequence[Predictions]) -> Predictions:
        """Rows of several parts, sorted by dataset position.

        Args:
            parts: Predictions of the same classes.

        Returns:
            The merged predictions.

        Raises:
            ValueError: No parts, parts with other classes, or a sample predicted twice.
        """
        if not parts:
            raise ValueError("no predictions to merge")
        classes = parts[0].classes
        if any(p.classes != classes for p in parts):
            raise ValueError("cannot merge predictions of different classes")
        index = np.concatenate([p.index for p in parts])
        if len(np.unique(index)) != len(index):
            raise ValueError("a sample is predicted in more than one fold; the folds overlap")
        order = np.argsort(index, kind="stable")
        paths = [x for p in parts for x in p.path]
        groups = [x for p in parts for x in p.group]
        return Predictions(
            index=index[order],
            path=[paths[i] for i in order],
            group=[groups[i] for i in order],
            label=np.concatenate([p.label for p in parts])[order],
            fold=np.concatenate([p.fold for p in parts])[order],
            probs=np.concatenate([p.probs for p in parts])[order],
            classes=classes,
        )

    def to_csv(self, path: str | os.PathLike[str]) -> None:
        """Write ``index, path, group, label, fold, prob_<class>...`` (atomically).

        Args:
            path: Output CSV file.
        """
        header = ["index", "path", "group", "label", "fold"] + [f"prob_{c}" for c in self.classes]
        rows = [header]
        for i in range(len(self)):
            rows.append(
                [
                    str(int(self.index[i])),
                    self.path[i],
                    self.group[i],
                    str(int(self.label[i])),
                    str(int(self.fold[i])),
                ]
                + [repr(float(v)) for v in self.probs[i]]
            )
        atomic_write_text(path, _csv_text(rows))

    @classmethod
    def from_csv(cls, path: str | os.PathLike[str]) -> Predictions:
        """Read a file written by :meth:`to_csv`.

        Args:
            path: The CSV file.

        Returns:
            The predictions.

        Raises:
            ValueError: The file does not have the expected columns.
        """
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
        head = rows[0] if rows else []
        if head[:5] != ["index", "path", "group", "label", "fold"] or len(head) < 7:
            raise ValueError(
                f"{path}: expected columns index, path, group, label, fold, "
                f"prob_<class>..., got {head}"
            )
        body = rows[1:]
        n_cls = len(head) - 5
        return cls(
            index=np.array([int(r[0]) for r in body], dtype=np.int64),
            path=[r[1] for r in body],
            group=[r[2] for r in body],
            label=np.array([int(r[3]) for r in body], dtype=np.int64),
            fold=np.array([int(r[4]) for r in body], dtype=np.int64),
            probs=np.array([[float(v) for v in r[5:]] for r in body]).reshape(len(body), n_cls),
            classes=tuple(h.removeprefix("prob_") for h in head[5:]),
        )


def _csv_text(rows: list[list[str]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()
