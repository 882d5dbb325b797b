"""Choosing feature / label / id columns, and validating the values read."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from deepcluster_cli.errors import DataError, UsageError

_MAX_LISTED = 8


def list_names(names: Sequence[object], limit: int = _MAX_LISTED) -> str:
    """``a, b, c`` (and ``... and 12 more`` past ``limit``)."""
    shown = ", ".join(str(n) for n in names[:limit])
    if len(names) > limit:
        shown += f" ... and {len(names) - limit} more"
    return shown


def describe_column(column: str | int) -> str:
    """``column 'f3'`` for a name, ``column 3`` for an index."""
    return f"column '{column}'" if isinstance(column, str) else f"column {column}"


@dataclass(frozen=True)
class NamedPlan:
    """Which named columns are features, label and id (tables: CSV, TSV, Parquet)."""

    features: list[str]
    label: str | None
    id: str | None
    explicit: bool  # features came from --columns


@dataclass(frozen=True)
class IndexPlan:
    """Which column indices are features, label and id (headerless arrays)."""

    features: list[int]
    label: int | None
    id: int | None
    all_columns: bool  # features are every column, in order


def _check_unique_option(columns: Sequence[object]) -> None:
    seen: set[str] = set()
    for c in columns:
        if str(c) in seen:
            raise UsageError(f"--columns names '{c}' twice")
        seen.add(str(c))


def resolve_named(
    source: str,
    names: list[str],
    *,
    numeric: dict[str, bool] | None,
    columns: Sequence[str | int] | None,
    label_column: str | None,
    id_column: str | None,
) -> NamedPlan:
    """Resolve the column options against a header.

    ``numeric`` maps a name to whether its type is numeric when that is known from the schema
    (Parquet); CSV passes ``None`` and checks each chunk's values instead.
    """
    present = set(names)
    for option, name in (("--label-column", label_column), ("--id-column", id_column)):
        if name is not None and str(name) not in present:
            raise DataError(
                f"{source}: no column '{name}' for {option} (columns: {list_names(names)})"
            )
    label = None if label_column is None else str(label_column)
    ident = None if id_column is None else str(id_column)
    check_two_columns(label, ident)
    reserved = {label: "--label-column", ident: "--id-column"}
    if columns is not None:
        _check_unique_option(columns)
        features = [str(c) for c in columns]
        missing = [c for c in features if c not in present]
        if missing:
            raise DataError(
                f"{source}: no column {list_names([repr(m) for m in missing])} for --columns "
                f"(columns: {list_names(names)})"
            )
        for c in features:
            if c in reserved:
                raise UsageError(f"column '{c}' is the {reserved[c]}; it cannot also be a feature")
    else:
        features = [n for n in names if n not in reserved]
    if not features:
        raise DataError(f"{source}: no feature columns (columns: {list_names(names)})")
    if numeric is not None:
        for c in features:
            if not numeric[c]:
                raise not_numeric_error(source, c, explicit=columns is not None)
    return NamedPlan(features=features, label=label, id=ident, explicit=columns is not None)


def check_two_columns(label: str | int | None, ident: str | int | None) -> None:
    """Refuse one column (a name, an index, an NPZ array) for both the labels and the ids."""
    if label is not None and str(label) == str(ident):
        raise UsageError(f"--label-column and --id-column both name '{label}'; give two columns")


def _clip(text: str, width: int = 60) -> str:
    """Keep a one-line message readable when a name or value is a whole line of text."""
    return text if len(text) <= width else text[: width - 3] + "..."


def not_numeric_error(
    source: str, column: str, *, explicit: bool, row: int | None = None, value: object = None
) -> DataError:
    """The message for a feature column that holds non-numbers."""
    where = f" (row {row}: {_clip(repr(value))})" if row is not None else ""
    column = _clip(column)
    if explicit:
        return DataError(f"{source}: column '{column}' is not numeric{where}")
    return DataError(
        f"{source}: column '{column}' is not numeric{where}; choose the features with "
        "--columns, or name it with --label-column or --id-column"
    )


def as_index(value: str | int) -> int | None:
    """``value`` as a column index (``"3"``, ``3``, ``"-1"``), or None if it is not one."""
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def parse_index(source: str, value: str | int, n_columns: int, option: str, kind: str) -> int:
    """A column index given for headerless data: ``"3"``, ``3`` or ``"-1"`` (the last)."""
    index = as_index(value)
    if index is None:
        raise DataError(
            f"{source}: {kind} data has no column names; {option} takes a column index "
            f"such as 0, got '{value}'"
        )
    if n_columns == 0:
        raise DataError(f"{source}: {option} {index}: the data has no columns")
    if not -n_columns <= index < n_columns:
        raise DataError(
            f"{source}: {option} {index} is out of range; the data has {n_columns} "
            f"column{'s' if n_columns != 1 else ''} (0 to {n_columns - 1})"
        )
    return index % n_columns


def resolve_indexed(
    source: str,
    n_columns: int,
    *,
    kind: str,
    columns: Sequence[str | int] | None,
    label_column: str | int | None,
    id_column: str | int | None,
) -> IndexPlan:
    """Resolve the column options as indices into a headerless ``(n, n_columns)`` array."""
    label = (
        None
        if label_column is None
        else parse_index(source, label_column, n_columns, "--label-column", kind)
    )
    ident = (
        None
        if id_column is None
        else parse_index(source, id_column, n_columns, "--id-column", kind)
    )
    check_two_columns(label, ident)  # as indices: `63` and `-1` of 64 columns are one
    reserved = {label: "--label-column", ident: "--id-column"}
    if columns is not None:
        features = [parse_index(source, c, n_columns, "--columns", kind) for c in columns]
        _check_unique_option(features)
        for c in features:
            if c in reserved:
                raise UsageError(f"column {c} is the {reserved[c]}; it cannot also be a feature")
    else:
        features = [c for c in range(n_columns) if c not in reserved]
    if not features:
        raise DataError(f"{source}: no feature columns left (the data has {n_columns} column(s))")
    return IndexPlan(
        features=features, label=label, id=ident, all_columns=features == list(range(n_columns))
    )


def is_numeric_dtype(dtype: np.dtype) -> bool:
    """Real numbers and booleans (not complex, dates, text or objects)."""
    return dtype.kind in "biuf"


def check_finite(
    source: str,
    features: np.ndarray,
    names: Sequence[str | int],
    *,
    row0: int,
    original: Callable[[int, int], float] | None = None,
    nan_text: str = "NaN",
) -> None:
    """Raise :class:`DataError` naming the first non-finite value (row-major order).

    ``features`` is the float32 block, ``names`` its column names or indices, ``row0`` the
    number of rows before this block (messages count data rows from 1). ``original``, when
    given, looks up a value before the float32 cast by (row, column), to tell overflow
    from inf.
    """
    finite = np.isfinite(features)
    if finite.all():
        return
    rows, cols = np.nonzero(~finite)
    r, c = int(rows[0]), int(cols[0])
    value = float(original(r, c)) if original is not None else float(features[r, c])
    if np.isnan(value):
        what = nan_text
    elif np.isinf(value):
        what = "inf" if value > 0 else "-inf"
    else:
        what = f"{value!r}, too large for float32,"
    raise DataError(f"{source}: {describe_column(names[c])} has {what} in row {row0 + r + 1}")


def check_complete(
    source: str, values: np.ndarray, column: str | int | None, role: str, *, row0: int
) -> None:
    """Raise :class:`DataError` if a label / id column has a missing value (None or NaN)."""
    if values.dtype.kind == "f":
        missing = np.isnan(values)
    elif values.dtype.kind == "O":
        missing = np.fromiter(
            (v is None or (isinstance(v, float) and math.isnan(v)) for v in values),
            dtype=bool,
            count=len(values),
        )
    else:
        return
    if missing.any():
        row = row0 + int(np.argmax(missing)) + 1
        where = f" ({describe_column(column)})" if column is not None else ""
        raise DataError(f"{source}: missing {role} in row {row}{where}")


def integral_if_whole(values: np.ndarray) -> np.ndarray:
    """Float labels / ids that are all whole numbers become int64 (headerless arrays store
    labels in the same float matrix as the features)."""
    whole = (
        values.dtype.kind == "f"
        and bool(np.all(np.isfinite(values)))
        and bool(np.all(values == np.round(values)))
    )
    if whole and (values.size == 0 or np.abs(values).max() < 2**53):
        return values.astype(np.int64)
    return values


#: Column / array names taken as the labels when ``--label-column`` is not given.
LABEL_NAMES = ("cluster", "label", "labels", "y", "target", "class")


def choose_label_column(
    source: str,
    names: list[str],
    *,
    column: str | None,
    id_column: str | None,
    option: str = "--label-column",
) -> str:
    """The labels column of a table: ``column`` if given, else 'cluster' (our own label
    files), else the only column besides the id column. ``option`` is the option that
    names the column, for messages (``evaluate`` reads its LABELS with --cluster-column)."""
    present = set(names)
    for opt, name in ((option, column), ("--id-column", id_column)):
        if name is not None and name not in present:
            raise DataError(
                f"{source}: no column '{name}' for {opt} (columns: {list_names(names)})"
            )
    if column is not None:
        return column
    if "cluster" in present:
        return "cluster"
    others = [n for n in names if n != id_column]
    if len(others) == 1:
        return others[0]
    raise DataError(
        f"{source}: has columns {list_names(names)}; pass {option} to say which holds the labels"
    )
