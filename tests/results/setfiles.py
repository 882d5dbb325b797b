"""Write a data set as ``fetch.py`` does: ``NAME.npy`` (features, float32), ``NAME.labels.npy``
(int64) and ``NAME.parquet`` (columns ``f0..``, ``label``), plus any extra files given. Each
file is written beside its final name and moved there, so none is ever half-written."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd


def save_set(
    out: Path,
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    extra: dict[str, Callable[[BinaryIO], object]] | None = None,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])])
    frame["label"] = y
    writers = {
        f"{name}.npy": lambda f: np.save(f, x),
        f"{name}.labels.npy": lambda f: np.save(f, y),
        f"{name}.parquet": lambda f: frame.to_parquet(f, index=False),
        **(extra or {}),
    }
    for file, write in writers.items():
        tmp = out / f".{file}.tmp"
        with tmp.open("wb") as f:
            write(f)
        os.replace(tmp, out / file)
