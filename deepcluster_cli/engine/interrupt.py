"""Graceful stops: SIGINT / SIGTERM ask the training loop to stop after its current step, so a
resumable state can be saved; a second signal aborts at once. Outside a training loop (k-means,
a GMM fit, between stages: nothing there checks the request) the first signal stops at once,
with the finished stages as the resumable state."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

from deepcluster_cli.engine.trainer import RunControl, StopTraining

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


@contextmanager
def graceful_stop(max_time: float | None = None) -> Iterator[RunControl]:
    control = RunControl(deadline=time.monotonic() + max_time if max_time else None)

    def handler(signum, frame):
        if control.stop_signal is not None:
            raise KeyboardInterrupt
        control.stop_signal = signum
        if not control.polling and control.resumable is not None:
            raise StopTraining(control.resumable(), signum)

    previous = {}
    try:
        for sig in EXIT_CODES:
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not in the main thread: no handlers, the loop still honours deadline
        previous = {}
    try:
        yield control
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
