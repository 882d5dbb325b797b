"""Shared helpers for the io tests: files from bytes, and a fake stdin."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, bytes | str], str]:
    """``write(name, content)`` -> path of a new file in ``tmp_path``."""

    def _write(name: str, content: bytes | str) -> str:
        path = tmp_path / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return str(path)

    return _write


@pytest.fixture
def stdin(monkeypatch: pytest.MonkeyPatch) -> Callable[[bytes], None]:
    """``stdin(data)`` makes ``sys.stdin.buffer`` read ``data``."""

    def _set(data: bytes) -> None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))

    return _set
