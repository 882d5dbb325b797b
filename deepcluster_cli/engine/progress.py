"""Progress and logs on stderr: a Rich bar on a terminal, one line per epoch otherwise,
or one JSON object per line with ``--log-format json``. Never writes to stdout."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


def _fmt_parts(parts: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in parts.items())


class Progress:
    """Reporter handed to the trainer. ``quiet`` silences epoch lines but not warnings."""

    def __init__(
        self, *, quiet: bool = False, log_format: str = "text", stream: TextIO | None = None
    ):
        self.quiet = quiet
        self.log_format = log_format
        self.stream = stream if stream is not None else sys.stderr
        self.t0 = time.perf_counter()

    @property
    def is_terminal(self) -> bool:
        return hasattr(self.stream, "isatty") and self.stream.isatty()

    def _emit(self, event: str, message: str, **fields: object) -> None:
        if self.log_format == "json":
            rec = {"event": event, "time": round(time.perf_counter() - self.t0, 3), **fields}
            if message:
                rec["message"] = message
            print(json.dumps(rec), file=self.stream, flush=True)
        else:
            print(message, file=self.stream, flush=True)

    def info(self, message: str, **fields: object) -> None:
        if not self.quiet:
            self._emit("info", message, **fields)

    def warn(self, message: str) -> None:
        # text: read as errors are; json: the event already says what it is
        self._emit(
            "warning", message if self.log_format == "json" else f"deepcluster: warning: {message}"
        )

    @contextmanager
    def stage(self, name: str, epochs: int) -> Iterator[StageProgress]:
        sp = StageProgress(self, name, epochs)
        try:
            yield sp
        finally:
            sp.close()


class StageProgress:
    def __init__(self, parent: Progress, name: str, epochs: int):
        self.p = parent
        self.name = name
        self.epochs = epochs
        self._bar = None
        if not parent.quiet and parent.log_format == "text" and parent.is_terminal:
            from rich.console import Console
            from rich.progress import BarColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[parts]}"),
                console=Console(file=parent.stream),
                transient=False,
            )
            self._task = self._bar.add_task(name, total=epochs, parts="")
            self._bar.start()

    def epoch(self, epoch: int, parts: dict[str, float], seconds: float) -> None:
        if self.p.quiet:
            return
        if self._bar is not None:
            self._bar.update(self._task, completed=epoch, parts=_fmt_parts(parts))
            return
        msg = f"[{self.name}] epoch {epoch}/{self.epochs} {_fmt_parts(parts)} ({seconds:.2f}s)"
        self.p._emit(
            "epoch",
            msg if self.p.log_format == "text" else "",
            stage=self.name,
            epoch=epoch,
            epochs=self.epochs,
            seconds=round(seconds, 4),
            **parts,
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
