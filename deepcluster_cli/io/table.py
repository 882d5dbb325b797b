"""The in-memory result of reading a data file."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Table:
    """Feature rows read from one file (or one chunk of it).

    Attributes
    ----------
    features
        ``(n, d)`` float32, C-contiguous, every value finite.
    feature_names
        Column names in feature order; ``None`` for headerless arrays (NPY, NPZ, IDX).
    ids
        Values of ``--id-column`` (any dtype; text ids from CSV/TSV stay text), else ``None``.
    labels
        Values of ``--label-column`` (any dtype), else ``None``.
    source
        The path, or ``"<stdin>"``, for messages.
    """

    features: np.ndarray
    feature_names: list[str] | None
    ids: np.ndarray | None
    labels: np.ndarray | None
    source: str

    @property
    def n_rows(self) -> int:
        """Number of rows."""
        return int(self.features.shape[0])

    @property
    def n_features(self) -> int:
        """Number of feature columns."""
        return int(self.features.shape[1])

    def take(self, rows: np.ndarray | slice) -> Table:
        """The table of the given rows (a slice, a boolean mask or indices)."""
        return Table(
            features=np.ascontiguousarray(self.features[rows]),
            feature_names=self.feature_names,
            ids=None if self.ids is None else self.ids[rows],
            labels=None if self.labels is None else self.labels[rows],
            source=self.source,
        )


def concat_tables(chunks: list[Table]) -> Table:
    """Join chunks of one file (same columns) into one :class:`Table`."""
    if len(chunks) == 1:
        return chunks[0]
    first = chunks[0]

    def join(parts: list[np.ndarray | None]) -> np.ndarray | None:
        if parts[0] is None:
            return None
        arrays = [p for p in parts if p is not None]
        kinds = {a.dtype.kind for a in arrays}
        if len(kinds) > 1 and not kinds <= set("biuf"):
            # e.g. ints in one chunk and text in another: keep the values, as objects
            arrays = [a.astype(object) for a in arrays]
        return np.concatenate(arrays)

    return Table(
        features=np.concatenate([c.features for c in chunks]),
        feature_names=first.feature_names,
        ids=join([c.ids for c in chunks]),
        labels=join([c.labels for c in chunks]),
        source=first.source,
    )
