"""check_schema: the data must have the model's columns."""

import numpy as np
import pytest

from deepcluster_cli.errors import ModelError
from deepcluster_cli.io import Table, check_schema


def _table(names, n_features=None):
    width = len(names) if names is not None else n_features
    return Table(np.zeros((2, width), np.float32), names, None, None, "data.csv")


def test_same_names_in_same_order_pass():
    check_schema(_table(["a", "b"]), feature_names=["a", "b"], n_features=2)


def test_missing_and_extra_columns_are_named():
    with pytest.raises(ModelError) as err:
        check_schema(_table(["a", "c", "d"]), feature_names=["a", "b"], n_features=2)
    message = str(err.value)
    assert message.startswith("data.csv: columns differ from the model's: missing 'b'; extra ")
    assert "'c', 'd'" in message and "--columns" in message


def test_reordered_columns_are_reported_as_such():
    with pytest.raises(ModelError, match="different order.*expected 'a', 'b', got 'b', 'a'"):
        check_schema(_table(["b", "a"]), feature_names=["a", "b"], n_features=2)


def test_headerless_data_is_checked_by_count():
    check_schema(_table(None, 3), feature_names=["a", "b", "c"], n_features=3)
    with pytest.raises(ModelError) as err:
        check_schema(_table(None, 60), feature_names=None, n_features=64)
    assert str(err.value) == "data.csv: model expects 64 features, data has 60"


def test_model_without_names_accepts_named_data_of_the_right_width():
    check_schema(_table(["x", "y"]), feature_names=None, n_features=2)
    with pytest.raises(ModelError, match="model expects 3 features, data has 2"):
        check_schema(_table(["x", "y"]), feature_names=None, n_features=3)
