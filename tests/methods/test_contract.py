"""The contract every registered method keeps: fit, assign reproduces the training labels,
the same seed gives the same labels, the checkpoint round-trips, generation where offered."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepcluster_cli.io import Scaler
from deepcluster_cli.methods import REGISTRY, get_method
from deepcluster_cli.pipeline import fit, load_model, predict, save_model

METHODS = list(REGISTRY)


def small_fit(name, x, seed=0, k=3):
    m = get_method(name)
    return fit(x, method=name, n_clusters=k, layers=[("test", dict(m.test_settings))], seed=seed)


@pytest.fixture(scope="module")
def data(blobs):
    x, y = blobs
    return Scaler("minmax").fit(x).transform(x), y


@pytest.mark.parametrize("name", METHODS)
def test_fit_gives_one_label_per_row_in_range(name, data):
    x, _ = data
    res = small_fit(name, x)
    assert res.labels.shape == (len(x),)
    assert res.labels.min() >= 0 and res.labels.max() < 3


@pytest.mark.parametrize("name", METHODS)
def test_same_seed_same_labels(name, data):
    x, _ = data
    a = small_fit(name, x, seed=3).labels
    b = small_fit(name, x, seed=3).labels
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", METHODS)
def test_saved_model_assigns_the_training_labels(name, data, tmp_path):
    x, _ = data
    res = small_fit(name, x)
    path = tmp_path / "m.pt"
    scaler = Scaler("none").fit(x)
    save_model(
        str(path), res, schema={"feature_names": None, "n_features": x.shape[1]}, scaler=scaler
    )
    loaded = load_model(str(path))
    labels, proba, emb = predict(loaded, x, embedding=True)
    np.testing.assert_array_equal(labels, res.labels)
    assert emb.shape[0] == len(x)
    if proba is not None:
        assert proba.shape == (len(x), 3)
        np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-4)


@pytest.mark.parametrize("name", METHODS)
def test_generate_modes_give_rows_in_input_space(name, data):
    x, _ = data
    m = get_method(name)
    res = small_fit(name, x)
    if not m.generate_modes:  # a method that generates nothing says so (generate exits 2)
        from deepcluster_cli.errors import UsageError

        with pytest.raises(UsageError, match="cannot generate"):
            m.generate(res.model, mode="centroids", n=4, cluster=None, between=None)
    for mode in m.generate_modes:
        out = m.generate(res.model, mode=mode, n=4, cluster=None, between=(0, 1))
        assert out.x.shape[1] == x.shape[1]
        assert len(out.clusters) == len(out.x)
        assert torch.isfinite(out.x).all()


@pytest.mark.parametrize("name", METHODS)
def test_clusters_well_separated_blobs(name, data):
    """Three well-separated blobs: every method should find them (ARI > 0.9)."""
    from sklearn.metrics import adjusted_rand_score

    x, y = data
    res = small_fit(name, x)
    assert adjusted_rand_score(y, res.labels) > 0.9


def _bad_values(field: str) -> list:
    """Values the common rules (config._COMMON_RULES) refuse for a setting of this name."""
    from deepcluster_cli.config import _COMMON_RULES

    candidates = [-1, 0, 1, 1.5]
    return [
        v for applies, ok, _ in _COMMON_RULES if applies(field) for v in candidates if not ok(v)
    ]


def _common_cases():
    import dataclasses

    for name in METHODS:
        for f in dataclasses.fields(get_method(name).Config):
            for v in _bad_values(f.name):
                yield name, f.name, v


@pytest.mark.parametrize("name", METHODS)
def test_defaults_test_settings_and_presets_pass_the_common_checks(name):
    from deepcluster_cli.config import build_config

    m = get_method(name)
    build_config(m.Config, [])
    build_config(m.Config, [("test", dict(m.test_settings))])
    for preset, values in m.presets.items():
        build_config(m.Config, [(preset, dict(values))])


@pytest.mark.parametrize("name, field, value", list(_common_cases()))
def test_an_optimiser_or_schedule_setting_out_of_range_is_refused(name, field, value):
    """A fuzz of every method's settings found torch or scikit-learn refusing these only when
    used, after the pretraining (cm beta1=1, cnet eps=-1, dgg weight_decay=-1, dgg
    kmeans_n_init=0, dgg siamese_lr=-1, repnet momentum=-1: internal errors, exit 1), or
    taking them silently (ckm lr_decay_every=-1 decayed every epoch; vade lr_decay=-1 flipped
    the learning rate's sign)."""
    from deepcluster_cli.config import build_config
    from deepcluster_cli.errors import UsageError

    with pytest.raises(UsageError, match=field):
        build_config(get_method(name).Config, [("--set", {field: value})])


DIGITS_PRESET_METHODS = [name for name in METHODS if "digits" in get_method(name).presets]


def test_the_digits_presets_are_the_four_baselines_with_one_small_input_network():
    from deepcluster_cli.methods.base import SMALL_INPUT_AE

    assert sorted(DIGITS_PRESET_METHODS) == ["dcn", "dec", "idec", "repnet"]
    for name in DIGITS_PRESET_METHODS:
        preset = get_method(name).presets["digits"]
        assert {k: preset[k] for k in SMALL_INPUT_AE} == {
            "arch": (500, 500),
            "pretrain_epochs": 200,
        }


@pytest.mark.parametrize("name", DIGITS_PRESET_METHODS)
@pytest.mark.parametrize("arch, expected", [(None, (500, 500)), ((16,), (16,))])
def test_the_digits_preset_pretrains_the_narrow_network_unless_arch_is_set(
    name, arch, expected, data
):
    """Without --pretrained, ``--preset digits`` pretrains 64-500-500-10 on digits (no
    2000-unit layer: docs/results/repnet_dec_dcn.md); a --set arch still wins over it."""
    x, _ = data
    m = get_method(name)
    short = {"pretrain_epochs": 1, "epochs": 1, "n_init": 1}
    if arch is not None:
        short["arch"] = arch
    layers = [("--preset digits", dict(m.presets["digits"])), ("--set", short)]
    res = fit(x, method=name, n_clusters=3, layers=layers, seed=0)
    widths = [
        layer.out_features for layer in res.model.ae.encoder if hasattr(layer, "out_features")
    ]
    assert tuple(widths[:-1]) == expected
    assert widths[-1] == 10
