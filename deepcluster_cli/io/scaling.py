"""Feature scaling fitted at training time and stored in the checkpoint."""

from __future__ import annotations

import numpy as np

from deepcluster_cli.errors import ModelError, UsageError

# The parameters each kind stores (names in its state's "params").
_PARAMS = {
    "none": (),
    "minmax": ("min", "range"),
    "standard": ("mean", "std"),
    "l2": (),
    "rms": (),
}


class Scaler:
    """Column-wise (or row-wise, for ``l2``) scaling of float32 features.

    Kinds
    -----
    ``none``
        Identity.
    ``minmax``
        ``(x - min) / (max - min)`` per column, so training data lies in [0, 1]. A constant
        column has range 0; it is divided by 1 instead, so it maps to 0.
    ``standard``
        ``(x - mean) / std`` per column (population std); a constant column has std 0 and is
        divided by 1 instead.
    ``l2``
        Each row divided by its Euclidean norm (all-zero rows stay zero). Nothing is fitted,
        and the norms are not kept, so :meth:`inverse_transform` is the identity.
    ``rms``
        Each row divided by its root mean square, ``x * sqrt(d) / ||x||``: rows of norm
        ``sqrt(d)``, values of order 1. On tf-idf rows this is DEC's Reuters scaling (rows of
        unit norm times ``sqrt(d)``), which the text settings of DEC and VaDE assume. Like
        ``l2``, nothing is fitted and the inverse is the identity.

    Parameters are computed in float64 and may be accumulated over chunks with
    :meth:`partial_fit` (Chan et al.'s pairwise update for mean and variance); a scaler
    rebuilt by :meth:`from_state` transforms, and a :meth:`partial_fit` on it starts afresh.
    """

    KINDS = ("none", "minmax", "standard", "l2", "rms")

    def __init__(self, kind: str = "none") -> None:
        if kind not in self.KINDS:
            raise UsageError(f"unknown --scale '{kind}'; choose one of {', '.join(self.KINDS)}")
        self.kind = kind
        self.params: dict[str, np.ndarray] = {}
        self._count = 0
        self._m2: np.ndarray | None = None  # running sum of squared deviations (standard)
        self._max: np.ndarray | None = None

    @property
    def fitted(self) -> bool:
        """Whether :meth:`transform` can be called."""
        return not _PARAMS[self.kind] or bool(self.params)

    @property
    def n_features(self) -> int | None:
        """How many columns the scaler was fitted on (``None`` if it does not depend on it)."""
        first = next(iter(self.params.values()), None)
        return None if first is None else len(first)

    def fit(self, x: np.ndarray) -> Scaler:
        """Fit on ``x`` ``(n, d)``, forgetting any earlier fit."""
        self.params, self._count, self._m2, self._max = {}, 0, None, None
        return self.partial_fit(x)

    def partial_fit(self, x: np.ndarray) -> Scaler:
        """Update the fit with one more chunk of rows ``x`` ``(n, d)``."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"expected a 2-D array, got shape {x.shape}")
        n = x.shape[0]
        if not _PARAMS[self.kind] or n == 0:
            return self
        if self.params:
            self._check_width(x.shape[1])
        if self.kind == "minmax":
            low, high = x.min(axis=0), x.max(axis=0)
            if self._max is not None:
                low = np.minimum(low, self.params["min"])
                high = np.maximum(high, self._max)
            self._max = high
            self.params = {"min": low, "range": _nonzero(high - low)}
        else:  # standard
            mean = x.mean(axis=0)
            m2 = ((x - mean) ** 2).sum(axis=0)
            if self._m2 is not None:
                total = self._count + n
                delta = mean - self.params["mean"]
                mean = self.params["mean"] + delta * n / total
                m2 = self._m2 + m2 + delta**2 * self._count * n / total
            self._count += n
            self._m2 = m2
            self.params = {"mean": mean, "std": _nonzero(np.sqrt(m2 / self._count))}
        return self

    def _check_width(self, d: int) -> None:
        if self.n_features is not None and d != self.n_features:
            raise ModelError(f"the scaler was fitted on {self.n_features} features, data has {d}")

    def _require_fit(self) -> None:
        if not self.fitted:
            raise RuntimeError(f"Scaler('{self.kind}') must be fitted before transform")

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Scale ``x`` ``(n, d)``; returns a new C-contiguous float32 array."""
        self._require_fit()
        out = np.array(x, dtype=np.float32, order="C")  # (n, d), a copy we scale in place
        self._check_width(out.shape[1])
        if self.kind == "minmax":
            out -= self.params["min"].astype(np.float32)
            out /= self.params["range"].astype(np.float32)
        elif self.kind == "standard":
            out -= self.params["mean"].astype(np.float32)
            out /= self.params["std"].astype(np.float32)
        elif self.kind in ("l2", "rms"):
            norms = np.linalg.norm(out, axis=1, keepdims=True)  # (n, 1)
            if self.kind == "rms":  # ||x|| / sqrt(d): the root mean square of the row
                norms /= np.sqrt(out.shape[1])
            out /= np.where(norms > 0, norms, 1.0).astype(np.float32)
        return out

    def inverse_transform(self, x: np.ndarray) -> np.ndarray:
        """Map scaled values back to data units (``l2``, ``rms``: identity, the norms are not
        kept)."""
        self._require_fit()
        out = np.array(x, dtype=np.float32, order="C")
        self._check_width(out.shape[1])
        if self.kind == "minmax":
            out *= self.params["range"].astype(np.float32)
            out += self.params["min"].astype(np.float32)
        elif self.kind == "standard":
            out *= self.params["std"].astype(np.float32)
            out += self.params["mean"].astype(np.float32)
        return out

    def fit_transform(self, x: np.ndarray) -> np.ndarray:
        """:meth:`fit` then :meth:`transform`."""
        return self.fit(x).transform(x)

    def to_state(self) -> dict:
        """Plain-type state for a checkpoint: ``{"kind": str, "params": {name: list[float]}}``."""
        self._require_fit()
        return {
            "kind": self.kind,
            "params": {name: [float(v) for v in values] for name, values in self.params.items()},
        }

    @classmethod
    def from_state(cls, state: dict) -> Scaler:
        """Rebuild a fitted scaler from :meth:`to_state`'s output.

        Raises
        ------
        ModelError
            The state is not one :meth:`to_state` writes.
        """
        if not isinstance(state, dict) or state.get("kind") not in cls.KINDS:
            raise ModelError("the checkpoint's scaler state is invalid (unknown kind)")
        scaler = cls(state["kind"])
        params = state.get("params", {})
        names = _PARAMS[scaler.kind]
        if not isinstance(params, dict) or set(params) != set(names):
            raise ModelError(
                f"the checkpoint's '{scaler.kind}' scaler state is invalid "
                f"(expected parameters {', '.join(names) or 'none'})"
            )
        try:
            arrays = {name: np.asarray(params[name], dtype=np.float64) for name in names}
        except (TypeError, ValueError) as exc:
            raise ModelError(f"the checkpoint's scaler state is invalid ({exc})") from exc
        widths = {a.shape for a in arrays.values()}
        if (
            any(a.ndim != 1 or not np.all(np.isfinite(a)) for a in arrays.values())
            or len(widths) > 1
        ):
            raise ModelError("the checkpoint's scaler state is invalid (bad parameter values)")
        scaler.params = arrays
        return scaler

    def __repr__(self) -> str:
        return f"Scaler({self.kind!r})"


def _nonzero(scale: np.ndarray) -> np.ndarray:
    # a constant column would divide by zero; dividing by 1 maps it to 0 instead
    return np.where(scale > 0, scale, 1.0)
