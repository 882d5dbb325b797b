"""Checking that data has the columns a trained model expects."""

from __future__ import annotations

from deepcluster_cli.errors import ModelError
from deepcluster_cli.io._columns import list_names
from deepcluster_cli.io.table import Table


def _quoted(names: list[str]) -> str:
    return list_names([f"'{n}'" for n in names])


def check_schema(table: Table, *, feature_names: list[str] | None, n_features: int) -> None:
    """Raise :class:`ModelError` unless ``table`` has the model's feature columns.

    When both the model and the data have column names, the names must match in order;
    otherwise (headerless data, or a model trained on headerless data) only the count is
    compared.

    Parameters
    ----------
    table
        The data to apply the model to.
    feature_names
        The columns the model was trained on, in order, or ``None``.
    n_features
        How many features the model takes.

    Raises
    ------
    ModelError
        Says which columns are missing, extra or reordered, or how the counts differ.
    """
    source = table.source
    if feature_names is not None and table.feature_names is not None:
        expected, got = list(feature_names), list(table.feature_names)
        if expected == got:
            return
        missing = [n for n in expected if n not in set(got)]
        extra = [n for n in got if n not in set(expected)]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing {_quoted(missing)}")
            if extra:
                parts.append(f"extra {_quoted(extra)}")
            raise ModelError(
                f"{source}: columns differ from the model's: {'; '.join(parts)} "
                f"(the model expects {_quoted(expected)}; choose them with --columns)"
            )
        raise ModelError(
            f"{source}: columns are in a different order than the model's; expected "
            f"{_quoted(expected)}, got {_quoted(got)} (pass --columns in the model's order)"
        )
    if table.n_features != n_features:
        raise ModelError(
            f"{source}: model expects {n_features} features, data has {table.n_features}"
        )
