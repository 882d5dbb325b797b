"""Data in and out: readers for every input format, schema checks, scaling, atomic writers.

Everything here raises :class:`~deepcluster_cli.errors.DataError` (or ``UsageError`` /
``ModelError``) with a one-line message naming the file, column and row; nothing prints.
See ``docs/formats.md`` for the user-facing description.
"""

from deepcluster_cli.io.atomic import atomic_path
from deepcluster_cli.io.formats import FORMATS, OUTPUT_FORMATS, detect_format, detect_output_format
from deepcluster_cli.io.readers import (
    LabelColumn,
    count_rows,
    iter_table,
    read_ids_and_labels,
    read_labels,
    read_table,
)
from deepcluster_cli.io.scaling import Scaler
from deepcluster_cli.io.schema import check_schema
from deepcluster_cli.io.table import Table
from deepcluster_cli.io.writers import LabelWriter, write_table

__all__ = [
    "FORMATS",
    "OUTPUT_FORMATS",
    "LabelColumn",
    "LabelWriter",
    "Scaler",
    "Table",
    "atomic_path",
    "check_schema",
    "count_rows",
    "detect_format",
    "detect_output_format",
    "iter_table",
    "read_ids_and_labels",
    "read_labels",
    "read_table",
    "write_table",
]
