"""Scaler: hand-computed cases, constant columns, inverses, checkpoint state."""

import json

import numpy as np
import pytest

from deepcluster_cli.errors import ModelError, UsageError
from deepcluster_cli.io import Scaler

X = np.array([[0.0, 10.0, -1.0], [5.0, 10.0, 1.0], [10.0, 10.0, 3.0]])


def test_minmax_maps_columns_to_unit_range_and_constant_column_to_zero():
    with np.errstate(all="raise"):  # no division by zero on the constant column
        scaled = Scaler("minmax").fit_transform(X)
    np.testing.assert_allclose(scaled, [[0, 0, 0], [0.5, 0, 0.5], [1, 0, 1]])
    assert scaled.dtype == np.float32 and scaled.flags.c_contiguous


def test_standard_centres_and_divides_by_population_std():
    with np.errstate(all="raise"):
        scaled = Scaler("standard").fit_transform(X)
    s = np.sqrt(2 / 3)  # std of (-1, 0, 1)
    np.testing.assert_allclose(scaled[:, 0], [-1 / s, 0, 1 / s], rtol=1e-6)
    np.testing.assert_array_equal(scaled[:, 1], [0, 0, 0])


def test_l2_makes_rows_unit_length_and_keeps_zero_rows():
    scaled = Scaler("l2").fit_transform(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(scaled, [[0.6, 0.8], [0.0, 0.0]])


def test_none_is_the_identity():
    np.testing.assert_array_equal(Scaler().fit_transform(X), X.astype(np.float32))


@pytest.mark.parametrize("kind", ["none", "minmax", "standard"])
def test_inverse_transform_undoes_transform(kind):
    scaler = Scaler(kind).fit(X)
    np.testing.assert_allclose(scaler.inverse_transform(scaler.transform(X)), X, atol=1e-5)


def test_l2_inverse_is_the_identity():
    scaled = np.array([[0.6, 0.8]], dtype=np.float32)
    np.testing.assert_array_equal(Scaler("l2").fit(scaled).inverse_transform(scaled), scaled)


@pytest.mark.parametrize("kind", Scaler.KINDS)
def test_state_is_plain_types_and_rebuilds_the_same_scaler(kind):
    scaler = Scaler(kind).fit(X)
    state = scaler.to_state()
    assert json.loads(json.dumps(state)) == state  # plain str / float / list / dict only
    assert set(state) == {"kind", "params"} and state["kind"] == kind
    rebuilt = Scaler.from_state(state)
    np.testing.assert_array_equal(rebuilt.transform(X), scaler.transform(X))


def test_partial_fit_over_chunks_equals_fit():
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(100, 4))
    for kind in ("minmax", "standard"):
        whole = Scaler(kind).fit(data)
        chunked = Scaler(kind)
        for start in range(0, 100, 7):
            chunked.partial_fit(data[start : start + 7])
        for name, values in whole.params.items():
            np.testing.assert_allclose(chunked.params[name], values, rtol=1e-12)


def test_unknown_kind_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown --scale 'zscore'; choose one of none, minmax"):
        Scaler("zscore")


@pytest.mark.parametrize(
    "state",
    [
        {"kind": "robust", "params": {}},
        {"kind": "minmax", "params": {"min": [0.0]}},
        {"kind": "standard", "params": {"mean": [0.0], "std": [1.0, 2.0]}},
        {"kind": "standard", "params": {"mean": ["a"], "std": [1.0]}},
        "minmax",
    ],
)
def test_invalid_state_is_a_model_error(state):
    with pytest.raises(ModelError, match="scaler state is invalid"):
        Scaler.from_state(state)


def test_width_mismatch_is_a_model_error():
    scaler = Scaler("standard").fit(X)
    with pytest.raises(ModelError, match="fitted on 3 features, data has 2"):
        scaler.transform(X[:, :2])


def test_transform_before_fit_is_a_programming_error():
    with pytest.raises(RuntimeError, match="must be fitted"):
        Scaler("minmax").transform(X)


def test_rms_gives_rows_of_norm_sqrt_d_which_is_decs_text_scaling():
    x = np.array([[3.0, 4.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    scaled = Scaler("rms").fit_transform(x)
    np.testing.assert_allclose(np.linalg.norm(scaled[[0, 2]], axis=1), [2.0, 2.0], rtol=1e-6)
    np.testing.assert_array_equal(scaled[1], 0.0)  # an all-zero row stays zero
    np.testing.assert_allclose(scaled[2], 1.0, rtol=1e-6)  # unit root mean square
    # DEC's Reuters: tf-idf rows of unit norm, times sqrt(2000)
    tfidf = Scaler("l2").fit_transform(np.abs(np.random.default_rng(0).normal(size=(5, 2000))))
    np.testing.assert_allclose(Scaler("rms").fit_transform(tfidf), tfidf * np.sqrt(2000), rtol=1e-5)
    state = Scaler("rms").fit(x).to_state()
    assert state == {"kind": "rms", "params": {}}
    assert Scaler.from_state(state).transform(x).tolist() == scaled.tolist()
