"""Pictures for reports and ``generate --grid``: PNG bytes drawn with matplotlib's Agg canvas.

matplotlib is an optional extra (``pip install 'deepcluster-cli[plots]'``); every function here
raises a one-line :class:`~deepcluster_cli.errors.UsageError` saying so when it is missing.
Figures are built with ``matplotlib.figure.Figure`` on an Agg canvas, never through pyplot, so
nothing depends on (or changes) the user's backend or global state.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from deepcluster_cli.errors import UsageError

MISSING = "install the plots extra: pip install 'deepcluster-cli[plots]'"
MAX_POINTS = 5000  # points drawn in a 2-D map; more only hide each other


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _figure(width: float, height: float) -> Any:
    if not have_matplotlib():
        raise UsageError(MISSING)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def project_2d(z: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """The first two principal components of ``z`` (n, d); ``z`` itself when d <= 2
    (a single column gets a zero second coordinate)."""
    z = np.asarray(z, dtype=np.float64)
    if z.shape[1] > 2:
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(z)
    if z.shape[1] == 1:
        return np.hstack([z, np.zeros_like(z)])
    return z


def embedding_map(
    z: np.ndarray, clusters: np.ndarray, *, title: str = "embedding (PCA)", seed: int = 0
) -> bytes:
    """Scatter of the rows in 2-D (PCA of ``z``), coloured by cluster; at most
    ``MAX_POINTS`` rows, drawn at random (seeded)."""
    clusters = np.asarray(clusters).reshape(-1)
    if len(z) != len(clusters):
        raise ValueError(f"{len(z)} embedding rows but {len(clusters)} labels")
    fig = _figure(6.0, 5.0)
    xy = project_2d(z, seed=seed)
    if len(xy) > MAX_POINTS:
        keep = np.sort(np.random.default_rng(seed).choice(len(xy), MAX_POINTS, replace=False))
        xy, clusters = xy[keep], clusters[keep]
    ax = fig.add_subplot()
    names, codes = np.unique(clusters, return_inverse=True)
    cmap = "tab10" if len(names) <= 10 else "tab20"
    points = ax.scatter(xy[:, 0], xy[:, 1], c=codes, cmap=cmap, s=6, alpha=0.7, linewidths=0)
    if len(names) <= 20:
        handles, _ = points.legend_elements(num=len(names))
        ax.legend(handles, [str(n) for n in names], title="cluster", fontsize=7, markerscale=0.8,
                  loc="center left", bbox_to_anchor=(1.0, 0.5))  # fmt: skip
    ax.set_title(title)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    return _png(fig)


_NOT_LOSS = {"stage", "epoch", "seconds", "restart"}


def training_curves(history: Sequence[dict]) -> bytes | None:
    """One panel per training stage: every loss part against the epoch (log scale when the
    loss stays positive). ``None`` when there is no history."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for row in history:
        groups.setdefault((str(row.get("stage", "train")), int(row.get("restart", 0))), []).append(
            row
        )
    if not groups:
        return None
    n = len(groups)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig = _figure(4.2 * ncols, 3.0 * nrows)
    restarts = len({r for _, r in groups}) > 1
    for i, ((stage, restart), rows) in enumerate(groups.items()):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        epochs = [r["epoch"] for r in rows]
        parts = [k for k in rows[0] if k not in _NOT_LOSS and isinstance(rows[0][k], float | int)]
        positive = True
        for part in parts:
            values = [float(r.get(part, math.nan)) for r in rows]
            positive &= all(v > 0 for v in values)
            ax.plot(epochs, values, marker="." if len(rows) < 30 else None, lw=1.2, label=part)
        if positive and parts:
            ax.set_yscale("log")
        ax.set_title(f"{stage} (restart {restart})" if restarts else stage, fontsize=10)
        ax.set_xlabel("epoch")
        if parts:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def parse_image_shape(text: str) -> tuple[int, ...]:
    """``"28x28"`` -> (28, 28); ``"32x32x3"`` -> (32, 32, 3) (RGB or RGBA)."""
    try:
        shape = tuple(int(v) for v in text.lower().replace("*", "x").split("x"))
    except ValueError:
        shape = ()
    if (
        len(shape) not in (2, 3)
        or any(v < 1 for v in shape)
        or (len(shape) == 3 and shape[2] not in (1, 3, 4))
    ):
        raise UsageError(
            f"--image-shape {text!r}: expected HxW (e.g. 28x28) or HxWxC with C = 1, 3 or 4"
        )
    return shape


def image_grid(
    rows: np.ndarray,
    shape: tuple[int, ...],
    *,
    clusters: np.ndarray | None = None,
    ncols: int | None = None,
) -> bytes:
    """Draw each row of ``rows`` (n, H*W[*C]) as an H x W image in a grid, titled with its
    cluster. Grey values share one scale, the min..max of all rows; colours are clipped to
    [0, 1]."""
    rows = np.asarray(rows, dtype=np.float64)
    size = int(np.prod(shape))
    if rows.ndim != 2 or rows.shape[1] != size:
        raise UsageError(
            f"--image-shape {'x'.join(map(str, shape))}: needs {size} features per row, "
            f"the model generates {rows.shape[1] if rows.ndim == 2 else rows.shape}"
        )
    n = len(rows)
    ncols = ncols or min(n, 10)
    nrows = math.ceil(n / ncols)
    fig = _figure(1.1 * ncols, 1.25 * nrows)
    colour = len(shape) == 3 and shape[2] in (3, 4)
    low, high = float(rows.min()), float(rows.max())  # one grey scale for the whole grid
    for i, row in enumerate(rows):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        img = row.reshape(shape)
        if colour:
            ax.imshow(np.clip(img, 0.0, 1.0))
        else:
            ax.imshow(
                img.reshape(shape[:2]), cmap="gray", vmin=low, vmax=high, interpolation="nearest"
            )
        if clusters is not None:
            ax.set_title(str(clusters[i]), fontsize=7, pad=2)
        ax.set_axis_off()
    return _png(fig)
