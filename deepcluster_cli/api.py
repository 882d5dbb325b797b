"""``DeepClusterer``: every deepcluster method as a scikit-learn estimator.

The estimator runs the engine the CLI runs (:func:`deepcluster_cli.pipeline.fit`,
:func:`~deepcluster_cli.pipeline.predict_tensor`, :class:`~deepcluster_cli.io.Scaler`), so
``DeepClusterer("dec", 10, epochs=50).fit(X)`` trains exactly what
``deepcluster train X.csv -m dec -k 10 --epochs 50`` trains with the same seed.

Method settings (the ``--set`` keys of ``deepcluster train``) are given either as extra keyword
arguments or as one ``params`` dict; the keywords win. Both round-trip through
``get_params``/``set_params``/``clone``, so ``GridSearchCV`` can tune them::

    DeepClusterer("aekm", 10, latent=8, pretrain_epochs=20)
    DeepClusterer("aekm", 10, params={"latent": 8, "pretrain_epochs": 20})

Use ``params`` when you need the estimator's parameter list to be fixed by its signature (what
scikit-learn's ``check_estimator`` assumes); the keywords are shorthand for the same thing.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils._available_if import available_if
from sklearn.utils.validation import check_is_fitted, validate_data

from deepcluster_cli.errors import DeepclusterError

_SEED_BOUND = 2**31 - 1
_INPUT_ATTRS = ("n_features_in_", "feature_names_in_")


def _warning_progress(quiet: bool = True):
    """The trainer's reporter for the API: silent, and a training warning (a cluster emptied
    at the start, say) is a Python ``UserWarning`` the caller can filter or catch, not a line
    on stderr."""
    import warnings

    from deepcluster_cli.engine.progress import Progress

    class WarningProgress(Progress):
        def warn(self, message: str) -> None:
            warnings.warn(message, UserWarning, stacklevel=2)

    return WarningProgress(quiet=quiet)


def _has_proba(est: DeepClusterer) -> bool:
    # unknown until fitted: scikit-learn's convention is that the method exists then
    return getattr(est, "_gives_proba", True)


class DeepClusterer(ClusterMixin, TransformerMixin, BaseEstimator):
    """A deepcluster method as a scikit-learn clusterer and transformer.

    Parameters
    ----------
    method : str, default="aekm"
        A name from ``deepcluster methods`` (``kmeans``, ``aekm``, ``dec``, ``vade`` ...).
    n_clusters : int, default=8
        Number of clusters k.
    random_state : int, RandomState instance or None, default=0
        Seed of the run (restart r uses seed + r). ``None`` draws a fresh seed at each fit.
        Fitting seeds torch's, numpy's and Python's global generators, as the CLI does.
    device : str, default="cpu"
        ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or ``auto``.
    scale : str, default="none"
        Feature scaling fitted on the training rows: ``none``, ``minmax``, ``standard``, ``l2``,
        ``rms`` (see ``deepcluster pretrain --scale``).
        Ignored when ``pretrained`` is given (the autoencoder's stored scaling is used).
    pretrained : str or None, default=None
        Path of an autoencoder checkpoint from ``deepcluster pretrain``.
    restarts : int, default=1
        Train this many times (seeds ``seed .. seed+restarts-1``), keep the best by ``select``.
    select : str or None, default=None
        Criterion for the kept restart (the method's first by default; ``lsp`` for cm/cnet).
    restart_pretrain : bool, default=False
        Each restart pretrains its own autoencoder (seed + r) instead of sharing one
        (``--restart-pretrain``); not with ``pretrained``.
    preset : str or None, default=None
        The method's settings for a named data set from the paper (``mnist``, ...).
    params : dict or None, default=None
        Method settings (``--set`` keys: ``epochs``, ``lr``, ``latent``, ``alpha`` ...).
    **method_params
        The same settings as keywords; they override ``params``.

    Attributes
    ----------
    labels_ : ndarray of shape (n_samples,)
        Cluster of each training row.
    n_features_in_ : int
    feature_names_in_ : ndarray of str, only when ``X`` had string column names
    model_ : torch.nn.Module
        The trained model (its ``spec`` and ``state_dict`` are what a checkpoint stores).
    config_ : the method's frozen ``Config``
    scaler_ : deepcluster_cli.io.Scaler
    history_ : list of dict
        One row per epoch: stage, epoch, loss parts, seconds.
    selection_ : dict
        Restarts, criterion, scores and the kept restart.
    """

    def __init__(
        self,
        method: str = "aekm",
        n_clusters: int = 8,
        *,
        random_state: int | np.random.RandomState | None = 0,
        device: str = "cpu",
        scale: str = "none",
        pretrained: str | None = None,
        restarts: int = 1,
        select: str | None = None,
        restart_pretrain: bool = False,
        preset: str | None = None,
        params: dict | None = None,
        **method_params: Any,
    ):
        self.method = method
        self.n_clusters = n_clusters
        self.random_state = random_state
        self.device = device
        self.scale = scale
        self.pretrained = pretrained
        self.restarts = restarts
        self.select = select
        self.restart_pretrain = restart_pretrain
        self.preset = preset
        self.params = params
        self._method_params = method_params

    # -- parameters: the signature's, plus the method settings given as keywords ------------

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        out = super().get_params(deep=deep)
        out.update(self._method_params)
        return out

    def set_params(self, **params: Any) -> DeepClusterer:
        own = set(self._get_param_names())
        for key in [k for k in params if k not in own]:
            # a method setting; its name and value are checked by the method's Config at fit
            self._method_params[key] = params.pop(key)
        return super().set_params(**params)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # the engine computes in float32 whatever the input dtype
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags

    # -- fitting ----------------------------------------------------------------------------

    def _settings(self) -> dict[str, Any]:
        if self.params is not None and not isinstance(self.params, dict):
            raise ValueError(f"params must be a dict of method settings, got {self.params!r}")
        bad = [key for key in self.params or {} if not isinstance(key, str)]
        if bad:
            raise ValueError(f"params keys must be setting names (str), got {bad[0]!r}")
        return {**(self.params or {}), **self._method_params}

    def _seed(self) -> int:
        from deepcluster_cli.config import max_seed

        if isinstance(self.random_state, numbers.Integral):
            seed = int(self.random_state)
            # the CLI's --seed rule: every restart's seed (seed + r) must suit numpy and torch
            top = max_seed(self.restarts)
            if not 0 <= seed <= top:
                with_restarts = f" with restarts={self.restarts}" if self.restarts > 1 else ""
                raise ValueError(f"random_state must be from 0 to {top}{with_restarts}, got {seed}")
            return seed
        if self.random_state is None:
            # fresh from the OS: numpy's global generator is the one the last fit seeded, so a
            # draw from it repeated that fit's successor on every run of a program
            return int(np.random.SeedSequence().entropy % (max_seed(self.restarts) + 1))
        return int(check_random_state(self.random_state).randint(_SEED_BOUND))

    def fit(self, X, y=None) -> DeepClusterer:
        """Train the method on ``X`` (n_samples, n_features); ``y`` is ignored."""
        # a failed fit leaves an earlier fit's n_features_in_ (and names) to its model
        before = {a: v for a, v in vars(self).items() if a in _INPUT_ATTRS}
        try:
            return self._fit(X)
        except BaseException:
            for a in _INPUT_ATTRS:
                vars(self).pop(a, None)
            vars(self).update(before)
            raise

    def _fit(self, X) -> DeepClusterer:
        import torch

        from deepcluster_cli.config import build_config
        from deepcluster_cli.engine.checkpoint import load_checkpoint
        from deepcluster_cli.engine.device import denormals_flushed_during, resolve_device
        from deepcluster_cli.io import Scaler
        from deepcluster_cli.methods import get_method
        from deepcluster_cli.pipeline import check_pretrained_network, fit, predict_tensor

        # float32, as the CLI reads its files: a float64 value beyond float32's range is refused
        with np.errstate(over="ignore"):  # the cast's overflow is the ValueError below
            X = validate_data(self, X, dtype=np.float32)
        n = X.shape[0]
        k = self.n_clusters
        if not isinstance(k, numbers.Integral) or isinstance(k, bool) or k < 2:
            raise ValueError(f"n_clusters must be an integer >= 2, got {k!r}")
        if n < k:
            raise ValueError(f"n_samples={n} should be >= n_clusters={k}")
        r = self.restarts
        if not isinstance(r, numbers.Integral) or isinstance(r, bool) or r < 1:
            raise ValueError(f"restarts must be an integer >= 1, got {r!r}")
        if not isinstance(self.restart_pretrain, bool | np.bool_):
            raise ValueError(
                f"restart_pretrain must be True or False, got {self.restart_pretrain!r}"
            )
        try:
            m = get_method(self.method)
            layers: list[tuple[str, dict]] = []
            if self.preset is not None:
                if self.preset not in m.presets:
                    names = ", ".join(m.presets) or "none"
                    raise ValueError(f"preset {self.preset!r}: {m.name} has presets: {names}")
                layers.append((f"preset {self.preset}", dict(m.presets[self.preset])))
            layers.append(("DeepClusterer", self._settings()))
            cfg = build_config(m.Config, layers)
            ae_ckpt = None
            if self.pretrained is not None:
                ae_ckpt = load_checkpoint(str(self.pretrained), kinds=("autoencoder",))
                check_pretrained_network(cfg, layers, ae_ckpt.extra["spec"]["autoencoder"])
                scaler = Scaler.from_state(ae_ckpt.scaler)
                if ae_ckpt.schema.get("n_features") != X.shape[1]:
                    raise ValueError(
                        f"X has {X.shape[1]} features, but the autoencoder {self.pretrained} "
                        f"was trained on {ae_ckpt.schema.get('n_features')}"
                    )
            else:
                scaler = Scaler(self.scale).fit(X)
            device = resolve_device(
                str(self.device) if isinstance(self.device, torch.device) else self.device
            )
            seed = self._seed()
            with denormals_flushed_during():  # the caller's thread gets its mode back after
                result = fit(
                    scaler.transform(X),
                    method=m.name,
                    n_clusters=int(k),
                    config=cfg,
                    seed=seed,
                    progress=_warning_progress(quiet=True),
                    device=device,
                    pretrained=ae_ckpt,
                    restarts=self.restarts,
                    select=self.select,
                    restart_pretrain=bool(self.restart_pretrain),
                )
        except DeepclusterError as exc:
            # scikit-learn's convention: a bad parameter or input is a ValueError
            raise ValueError(str(exc)) from None
        self.method_ = m
        self.config_ = result.config
        self.model_ = result.model
        self.scaler_ = scaler
        self.device_ = torch.device(device)
        self.history_ = result.history
        self.selection_ = result.selection
        self.seed_ = seed
        self.labels_ = result.labels.astype(np.int64)
        first = torch.as_tensor(scaler.transform(X[:1]), device=self.device_)
        self._gives_proba = predict_tensor(m, self.model_, first).proba is not None
        return self

    # -- using a fitted estimator -----------------------------------------------------------

    def _tensor(self, X):
        import torch

        with np.errstate(over="ignore"):  # the cast's overflow is validate_data's ValueError
            X = validate_data(self, X, dtype=np.float32, reset=False)
        return torch.as_tensor(self.scaler_.transform(X), device=self.device_)

    def _predict(self, X):
        from deepcluster_cli.pipeline import predict_tensor

        p = predict_tensor(self.method_, self.model_, self._tensor(X))
        proba = None if p.proba is None else p.proba.cpu().numpy()
        return p.labels.cpu().numpy().astype(np.int64), proba

    def predict(self, X) -> np.ndarray:
        """Cluster of each row of ``X``."""
        check_is_fitted(self)
        return self._predict(X)[0]

    def fit_predict(self, X, y=None, **kwargs) -> np.ndarray:
        """Fit on ``X`` and return the training rows' clusters (``labels_``)."""
        if kwargs:  # fit takes none: refused rather than silently dropped
            raise TypeError(f"fit_predict() got unexpected arguments: {', '.join(kwargs)}")
        return self.fit(X).labels_

    @available_if(_has_proba)
    def predict_proba(self, X) -> np.ndarray:
        """Per-cluster probabilities, shape (n_samples, n_clusters); rows sum to 1.

        Only for methods whose model gives probabilities (not, e.g., ``kdae``)."""
        check_is_fitted(self)
        proba = self._predict(X)[1]
        if proba is None:
            raise AttributeError(f"method {self.method_.name} gives no probabilities")
        return proba

    def transform(self, X) -> np.ndarray:
        """The embedding the clusters live in (the codes of deep methods, the scaled input
        for ``kmeans``/``cm``), float32 of shape (n_samples, dim)."""
        import torch

        check_is_fitted(self)
        with torch.no_grad():
            z = self.method_.embed(self.model_, self._tensor(X))
        return z.detach().cpu().numpy().astype(np.float32, copy=False)
