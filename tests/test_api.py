"""DeepClusterer: scikit-learn's own estimator checks, parameter round trips, and that the
estimator runs the same engine as the CLI."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from deepcluster_cli import DeepClusterer
from deepcluster_cli.methods.base import Prediction

TINY_AEKM = {"arch": (16,), "latent": 2, "pretrain_epochs": 2, "n_init": 2}

# scikit-learn's checks set n_clusters=1 in these; deepcluster's engine refuses k < 2 (a usage
# error in the CLI contract), so fit raises "n_clusters must be an integer >= 2" instead.
N_CLUSTERS_1 = "the checks force n_clusters=1; deepcluster needs at least 2 clusters"
EXPECTED_FAILED = {
    name: N_CLUSTERS_1
    for name in (
        "check_dont_overwrite_parameters",
        "check_methods_subset_invariance",
        "check_fit2d_1sample",
        "check_fit2d_1feature",
        "check_fit2d_predict1d",
    )
}


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@parametrize_with_checks(
    [
        DeepClusterer("kmeans", params={"n_init": 2}),
        DeepClusterer("aekm", params=TINY_AEKM),
    ],
    expected_failed_checks=lambda est: EXPECTED_FAILED,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def blobs4():
    x, y = make_blobs(n_samples=240, centers=4, n_features=6, cluster_std=0.5, random_state=3)
    return x.astype(np.float32), y


def test_method_settings_given_as_keywords_round_trip_through_get_params_and_clone():
    est = DeepClusterer("aekm", 4, latent=3, params={"latent": 9, "n_init": 2})
    p = est.get_params()
    assert p["latent"] == 3 and p["params"] == {"latent": 9, "n_init": 2}
    twin = clone(est)
    assert twin.get_params() == p
    twin.set_params(latent=5, n_clusters=6)
    assert twin.get_params()["latent"] == 5 and twin.n_clusters == 6
    assert est.get_params()["latent"] == 3  # the clone is independent


def test_keywords_override_params_dict_in_the_fitted_config(blobs4):
    x, _ = blobs4
    est = DeepClusterer("aekm", 4, params={**TINY_AEKM, "latent": 9}, latent=3, random_state=1).fit(
        x
    )
    assert est.config_.latent == 3 and est.config_.arch == (16,)
    assert est.transform(x).shape == (len(x), 3)


def test_kmeans_estimator_recovers_blobs_and_labels_equal_predict(blobs4):
    x, y = blobs4
    est = DeepClusterer("kmeans", 4).fit(x)
    assert adjusted_rand_score(y, est.labels_) > 0.99
    np.testing.assert_array_equal(est.predict(x), est.labels_)
    proba = est.predict_proba(x)
    assert proba.shape == (len(x), 4)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    assert est.labels_.dtype == np.int64 and est.n_features_in_ == 6


def test_estimator_gives_the_labels_of_the_cli_engine(blobs4):
    from deepcluster_cli.io import Scaler
    from deepcluster_cli.pipeline import fit

    x, _ = blobs4
    est = DeepClusterer("aekm", 4, random_state=7, scale="minmax", params=TINY_AEKM).fit(x)
    cfg = {k: ",".join(map(str, v)) if isinstance(v, tuple) else v for k, v in TINY_AEKM.items()}
    engine = fit(
        Scaler("minmax").fit_transform(x),
        method="aekm",
        n_clusters=4,
        layers=[("test", cfg)],
        seed=7,
    )
    np.testing.assert_array_equal(est.labels_, engine.labels)


def test_dataframe_sets_feature_names_and_pipeline_works(blobs4):
    x, y = blobs4
    df = pd.DataFrame(x, columns=[f"g{i}" for i in range(x.shape[1])])
    est = DeepClusterer("kmeans", 4).fit(df)
    assert list(est.feature_names_in_) == list(df.columns)
    pipe = make_pipeline(StandardScaler(), DeepClusterer("kmeans", 4))
    assert adjusted_rand_score(y, pipe.fit_predict(x)) > 0.99


def test_unknown_method_setting_is_a_value_error_listing_valid_keys(blobs4):
    x, _ = blobs4
    with pytest.raises(ValueError, match="unknown setting 'latnet'.*valid keys"):
        DeepClusterer("aekm", 4, latnet=3).fit(x)
    with pytest.raises(ValueError, match="unknown method"):
        DeepClusterer("nope", 4).fit(x)
    with pytest.raises(ValueError, match="n_samples=3 should be >= n_clusters=4"):
        DeepClusterer("kmeans", 4).fit(x[:3])


def test_predict_proba_is_absent_when_the_method_gives_no_probabilities(blobs4, monkeypatch):
    from deepcluster_cli.methods.kmeans import METHOD

    x, _ = blobs4
    plain = METHOD.predict
    monkeypatch.setattr(
        METHOD, "predict", lambda model, xb: Prediction(labels=plain(model, xb).labels)
    )
    est = DeepClusterer("kmeans", 4).fit(x)
    assert not hasattr(est, "predict_proba")
    assert hasattr(DeepClusterer("kmeans", 4), "predict_proba")  # unknown before fitting


def test_fitted_estimator_pickles_and_predicts_the_same(blobs4):
    x, _ = blobs4
    est = DeepClusterer("aekm", 4, params=TINY_AEKM).fit(x)
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(again.predict(x), est.labels_)
    np.testing.assert_allclose(again.transform(x), est.transform(x))


def test_pretrained_autoencoder_checkpoint_is_used(blobs4, tmp_path):
    from deepcluster_cli.io import Scaler
    from deepcluster_cli.pipeline import PretrainConfig, pretrain, save_autoencoder

    x, _ = blobs4
    scaler = Scaler("standard").fit(x)
    cfg = PretrainConfig(arch=(16,), latent=3, epochs=2, batch_size=64)
    ae, history = pretrain(scaler.transform(x), cfg)
    path = tmp_path / "ae.pt"
    schema = {"feature_names": None, "n_features": x.shape[1]}
    save_autoencoder(str(path), ae, cfg, history=history, schema=schema, scaler=scaler)
    est = DeepClusterer("aekm", 4, pretrained=str(path), n_init=2).fit(x)
    assert est.scaler_.kind == "standard"
    assert est.transform(x).shape == (len(x), 3)
    assert all(row["stage"] != "pretrain" for row in est.history_)
    with pytest.raises(ValueError, match="trained on 6"):
        DeepClusterer("aekm", 4, pretrained=str(path)).fit(x[:, :5])
    with pytest.raises(ValueError, match="drop --pretrained"):
        DeepClusterer("aekm", 4, pretrained=str(path), restarts=2, restart_pretrain=True).fit(x)
    # the network is the file's: a contradicting setting is refused, an agreeing one is fine
    with pytest.raises(ValueError, match="has latent 3"):
        DeepClusterer("aekm", 4, pretrained=str(path), latent=5).fit(x)
    DeepClusterer("aekm", 4, pretrained=str(path), arch=(16,), n_init=2).fit(x)


def test_restart_pretrain_pretrains_in_every_restart(blobs4):
    x, _ = blobs4
    est = DeepClusterer("aekm", 4, restarts=2, restart_pretrain=True, params=TINY_AEKM).fit(x)
    assert {row["restart"] for row in est.history_ if row["stage"] == "pretrain"} == {0, 1}
    assert est.selection_["restart_pretrain"] is True


def test_importing_the_package_does_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys, deepcluster_cli; assert 'torch' not in sys.modules; "
        "deepcluster_cli.DeepClusterer; assert 'torch' not in sys.modules; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"random_state": -1}, "random_state must be from 0 to 4294967295, got -1"),
        ({"random_state": 2**32}, "random_state must be from 0 to 4294967295, got 4294967296"),
        ({"random_state": 2**32 - 1, "restarts": 2}, "from 0 to 4294967294 with restarts=2"),
        ({"restarts": 1.5}, "restarts must be an integer >= 1, got 1.5"),
        ({"restarts": None}, "restarts must be an integer >= 1, got None"),
        ({"restart_pretrain": "yes"}, "restart_pretrain must be True or False, got 'yes'"),
        ({"device": None}, "unknown device None"),
        ({"params": {1: 2}}, "params keys must be setting names"),
    ],
)
def test_bad_parameters_are_value_errors_before_training(blobs4, monkeypatch, kwargs, match):
    import deepcluster_cli.pipeline

    def no_training(*args, **kw):
        raise AssertionError("training started")

    monkeypatch.setattr(deepcluster_cli.pipeline, "fit", no_training)
    with pytest.raises(ValueError, match=match):
        DeepClusterer("kmeans", 4, **kwargs).fit(blobs4[0])


def test_float64_values_beyond_float32_are_refused_not_trained_on(blobs4):
    x, _ = blobs4
    big = x.astype(np.float64)
    big[0, 0] = 1e300  # finite in float64, inf in the float32 the engine computes in
    with pytest.raises(ValueError, match="infinity or a value too large for dtype\\('float32'\\)"):
        DeepClusterer("kmeans", 4).fit(big)
    est = DeepClusterer("kmeans", 4).fit(x)
    for use in (est.predict, est.transform, est.predict_proba):
        with pytest.raises(ValueError, match="too large for dtype\\('float32'\\)"):
            use(big)


def test_failed_refit_keeps_the_earlier_fit_usable(blobs4):
    x, _ = blobs4
    est = DeepClusterer("kmeans", 4).fit(x)
    est.set_params(n_init=0)
    with pytest.raises(ValueError, match="n_init"):
        est.fit(np.c_[x, x])
    assert est.n_features_in_ == 6
    np.testing.assert_array_equal(est.predict(x), est.labels_)
    with pytest.raises(ValueError, match="X has 12 features, but DeepClusterer is expecting 6"):
        est.predict(np.c_[x, x])


def test_random_state_none_draws_a_fresh_seed_and_records_it(blobs4):
    """fit seeds numpy's global generator, so a None seed drawn from it was the same on every
    run of a program after a seeded fit; it comes from the OS now, and seed_ says which."""
    x, _ = blobs4
    DeepClusterer("kmeans", n_clusters=4, random_state=0).fit(x)
    state = np.random.get_state()
    first = DeepClusterer("kmeans", n_clusters=4, random_state=None).fit(x)
    np.random.set_state(state)  # the same global state as before the first
    second = DeepClusterer("kmeans", n_clusters=4, random_state=None).fit(x)
    assert first.seed_ != second.seed_
    again = DeepClusterer("kmeans", n_clusters=4, random_state=first.seed_).fit(x)
    np.testing.assert_array_equal(again.labels_, first.labels_)
    assert DeepClusterer("kmeans", n_clusters=4, random_state=7).fit(x).seed_ == 7


def test_device_may_be_a_torch_device_and_fit_predict_refuses_unknown_arguments(blobs4):
    x, _ = blobs4
    est = DeepClusterer("kmeans", n_clusters=4, random_state=0, device=torch.device("cpu"))
    assert est.fit(x).device_ == torch.device("cpu")
    with pytest.raises(TypeError, match="unexpected arguments: sample_weight"):
        est.fit_predict(x, sample_weight=np.ones(len(x)))


def test_values_beyond_float32_raise_the_value_error_without_a_cast_warning(blobs4):
    import warnings

    x, _ = blobs4
    big = x.astype(np.float64)
    big[0, 0] = 1e300  # finite in float64, inf in float32
    est = DeepClusterer("kmeans", n_clusters=4).fit(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="too large"):
            DeepClusterer("kmeans", n_clusters=4).fit(big)
        with pytest.raises(ValueError, match="too large"):
            est.predict(big)


def test_a_training_warning_is_a_python_warning_not_a_stderr_line(blobs4, monkeypatch, capsys):
    """The CLI prints `deepcluster: warning: ...`; a library caller gets a UserWarning it can
    filter or catch (warnings.catch_warnings could not see the printed line)."""
    import deepcluster_cli.pipeline as pipeline

    real = pipeline.fit

    def fit_that_warns(*args, progress=None, **kwargs):
        progress.warn("initial cluster sizes are uneven")
        return real(*args, progress=progress, **kwargs)

    monkeypatch.setattr(pipeline, "fit", fit_that_warns)
    x, _ = blobs4
    with pytest.warns(UserWarning, match="initial cluster sizes are uneven"):
        DeepClusterer("kmeans", n_clusters=4, random_state=0).fit(x)
    assert "warning" not in capsys.readouterr().err
