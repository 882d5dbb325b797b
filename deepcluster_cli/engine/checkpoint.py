"""Versioned checkpoints: one file, tensors and plain types only.

Written atomically (temporary file, then rename) and read with
``torch.load(weights_only=True)``, so loading never runs code from the file: a pickle that
names any class or function outside PyTorch's tensor allow-list is refused.
"""

from __future__ import annotations

import io
import platform
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from deepcluster_cli import __version__
from deepcluster_cli.errors import DataError, ModelError

FORMAT = "deepcluster-checkpoint"
FORMAT_VERSION = 1
KINDS = ("model", "autoencoder", "resume")


@dataclass
class Checkpoint:
    kind: str  # model | autoencoder | resume
    method: str
    config: dict
    schema: dict  # {"feature_names": [...] | None, "n_features": int}
    scaler: dict
    state: dict  # name -> tensor (the model's state_dict)
    history: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_payload(self) -> dict:
        return {
            "format": FORMAT,
            "format_version": self.format_version,
            "kind": self.kind,
            "method": self.method,
            "config": self.config,
            "schema": self.schema,
            "scaler": self.scaler,
            "history": self.history,
            "extra": self.extra,
            "versions": self.versions or library_versions(),
            "state": {k: v.detach().cpu().contiguous() for k, v in self.state.items()},
        }


def library_versions() -> dict:
    import numpy
    import sklearn

    return {
        "deepcluster": __version__,
        "torch": str(torch.__version__),
        "numpy": numpy.__version__,
        "scikit-learn": sklearn.__version__,
        "python": platform.python_version(),
    }


def save_checkpoint(path: str | Path, ckpt: Checkpoint) -> None:
    """Atomically write ``ckpt`` to ``path``; an existing file is replaced only on success."""
    from deepcluster_cli.io import atomic_path

    buf = io.BytesIO()
    torch.save(ckpt.to_payload(), buf)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(buf.getvalue())


#: What each kind of checkpoint is, in the words of the command that writes it.
KIND_NAMES = {
    "model": "a clustering model (from deepcluster train)",
    "autoencoder": "an autoencoder (from deepcluster pretrain)",
    "resume": "a resumable state (MODEL.pt.resume, for --resume)",
}


def load_checkpoint(path: str | Path, *, kinds: tuple[str, ...] = KINDS) -> Checkpoint:
    """Read and validate a checkpoint. Every failure is a one-line ModelError/DataError."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{path}: no such file")
    if p.is_dir():
        raise DataError(f"{path}: is a directory, expected a checkpoint file")
    raw = p.read_bytes()
    if not zipfile.is_zipfile(io.BytesIO(raw)):
        raise ModelError(f"{path}: not a deepcluster checkpoint (not a PyTorch zip file)")
    # torch.load does not check the zip's CRC-32s: a flipped byte inside a tensor loads as a
    # silently different model (a few ms for a 20 MB file)
    try:
        bad = zipfile.ZipFile(io.BytesIO(raw)).testzip()
    except Exception as exc:  # noqa: BLE001 - any failure of an untrusted file is a ModelError
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(f"{path}: corrupt or truncated checkpoint ({first})") from None
    if bad is not None:
        raise ModelError(
            f"{path}: corrupt checkpoint: its part {bad!r} fails its checksum (the file changed "
            "after it was written)"
        )
    try:
        payload = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure of an untrusted file is a ModelError
        text = str(exc)
        if "Weights only load failed" in text or "Unsupported global" in text:
            raise ModelError(
                f"{path}: refused: the file contains Python objects or code, which a "
                "deepcluster checkpoint never does; it was not loaded"
            ) from None
        raise ModelError(
            f"{path}: corrupt or truncated checkpoint ({text.splitlines()[0]})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelError(f"{path}: not a deepcluster checkpoint")
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelError(
            f"{path}: checkpoint format version {version} is newer than this deepcluster "
            f"({__version__}) reads (up to {FORMAT_VERSION}); upgrade deepcluster"
        )
    kind = payload.get("kind")
    if kind not in kinds:
        want = " or ".join(KIND_NAMES.get(k, f"a '{k}' checkpoint") for k in kinds)
        have = KIND_NAMES.get(kind, f"a checkpoint of kind '{kind}'")
        raise ModelError(f"{path}: is {have}; this needs {want}")
    try:
        ckpt = Checkpoint(
            kind=kind,
            method=str(payload["method"]),
            config=dict(payload["config"]),
            schema=dict(payload["schema"]),
            scaler=dict(payload["scaler"]),
            state=dict(payload["state"]),
            history=list(payload.get("history", [])),
            extra=dict(payload.get("extra", {})),
            versions=dict(payload.get("versions", {})),
            format_version=version,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{path}: checkpoint is missing a field ({exc})") from None
    problem = _damaged_field(ckpt)
    if problem is not None:
        raise ModelError(f"{path}: damaged checkpoint: {problem}")
    return ckpt


def _count(value) -> bool:
    """A whole number of at least 1 (not a bool, which is an int to Python)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _damaged_field(ckpt: Checkpoint) -> str | None:
    """What is wrong with a checkpoint's fields, by the types the commands rely on (a file
    edited by hand or by another tool may still load), or None."""
    n = ckpt.schema.get("n_features")
    if not _count(n):
        return f"schema n_features is {n!r}, not a number of columns"
    names = ckpt.schema.get("feature_names")
    if names is not None and (
        not isinstance(names, list) or len(names) != n or not all(isinstance(c, str) for c in names)
    ):
        return f"schema feature_names is not a list of {n} column names"
    if not all(isinstance(row, dict) for row in ckpt.history):
        return "the training history is not a list of epoch records"
    if not all(isinstance(t, torch.Tensor) for t in ckpt.state.values()):
        return "the state holds values other than tensors"
    if ckpt.kind == "model" and not _count(ckpt.extra.get("n_clusters")):
        return f"n_clusters is {ckpt.extra.get('n_clusters')!r}, not a number of clusters"
    from deepcluster_cli.io.scaling import Scaler

    try:
        Scaler.from_state(ckpt.scaler)
    except ModelError as exc:
        return str(exc).removeprefix("the checkpoint's ")
    return None
