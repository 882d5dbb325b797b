"""Atomic writes: a temporary file in the target's folder, renamed over it on success."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from deepcluster_cli.errors import DataError


def _default_mode() -> int:
    # mkstemp creates files 0600; give the result the mode a plain open() would have.
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def resolve_output(path: str | Path) -> tuple[Path, bool]:
    """The file an output named ``path`` lands in, and whether it is (or will be) a regular
    file. A symbolic link is followed (its target is replaced; the link stays a link); a
    device, FIFO or socket (``/dev/null``, ``/dev/stdout``, a named pipe) is written
    through, never replaced by a regular file."""
    target = Path(path)
    real = Path(os.path.realpath(target)) if target.is_symlink() else target
    try:
        mode = os.stat(target).st_mode  # follows links
    except OSError:  # not there yet (or a dangling link: its target is created)
        return real, True
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return real, True
    return target, False


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` when the block succeeds.

    The temporary file lives in the same folder, so the final :func:`os.replace` is atomic:
    readers see either the old file or the complete new one. If the block raises (including
    ``KeyboardInterrupt``), the temporary file is removed and ``path`` is left untouched.
    The temporary file exists (empty) when the block starts and ends with the same suffix as
    ``path``, so writers that pick a format by extension behave the same. A symbolic link's
    target is replaced, not the link; a device or a pipe (``-o /dev/null``) receives the
    finished file's bytes, written through it (:func:`resolve_output`).

    Raises
    ------
    DataError
        The output folder does not exist, ``path`` is a folder, or the folder is not writable.
    """
    given = Path(path)
    if given.is_dir():
        raise DataError(f"{given}: is a folder; give a file name for the output")
    target, regular = resolve_output(given)
    suffix = f".tmp{given.suffix}"
    if not regular:  # made in the temporary folder, its bytes copied through at the end
        with _temporary(None, "deepcluster.", suffix, given) as tmp:
            yield tmp
            try:
                with tmp.open("rb") as src, given.open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            except OSError as exc:
                raise DataError(f"{given}: cannot write ({exc.strerror})") from exc
        return
    folder = target.parent
    if not folder.is_dir():
        raise DataError(f"output folder {folder} does not exist")
    with _temporary(folder, f".{target.name}.", suffix, given) as tmp:
        yield tmp
        try:
            mode = target.stat().st_mode & 0o777 if target.exists() else _default_mode()
            os.chmod(tmp, mode)
            os.replace(tmp, target)
        except OSError as exc:
            raise DataError(f"{given}: cannot write ({exc.strerror})") from exc


@contextlib.contextmanager
def _temporary(folder: Path | None, prefix: str, suffix: str, output: Path) -> Iterator[Path]:
    """An empty temporary file in ``folder`` (None: the system's temporary folder), removed
    when the block ends (after a rename, there is nothing left to remove)."""
    try:
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=suffix)
    except OSError as exc:
        where = folder if folder is not None else "the temporary folder"
        raise DataError(f"cannot write to {where} (for {output}): {exc.strerror}") from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
