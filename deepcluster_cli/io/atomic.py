"""Atomic writes: a temporary file in the target's folder, renamed over it on success."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from deepcluster_cli.errors import DataError


def _default_mode() -> int:
    # mkstemp creates files 0600; give the result the mode a plain open() would have.
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` when the block succeeds.

    The temporary file lives in the same folder, so the final :func:`os.replace` is atomic:
    readers see either the old file or the complete new one. If the block raises (including
    ``KeyboardInterrupt``), the temporary file is removed and ``path`` is left untouched.
    The temporary file exists (empty) when the block starts and ends with the same suffix as
    ``path``, so writers that pick a format by extension behave the same.

    Raises
    ------
    DataError
        The output folder does not exist, ``path`` is a folder, or the folder is not writable.
    """
    target = Path(path)
    folder = target.parent
    if not folder.is_dir():
        raise DataError(f"output folder {folder} does not exist")
    if target.is_dir():
        raise DataError(f"{target}: is a folder; give a file name for the output")
    try:
        fd, tmp_name = tempfile.mkstemp(
            dir=folder, prefix=f".{target.name}.", suffix=f".tmp{target.suffix}"
        )
    except OSError as exc:
        raise DataError(f"cannot write to {folder}: {exc.strerror}") from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        try:
            mode = target.stat().st_mode & 0o777 if target.exists() else _default_mode()
            os.chmod(tmp, mode)
            os.replace(tmp, target)
        except OSError as exc:
            raise DataError(f"{target}: cannot write ({exc.strerror})") from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
