"""Helpers shared by the command modules: error mapping, data loading, run options."""

from __future__ import annotations

import functools
import re
import sys
import traceback
import warnings
from collections.abc import Callable
from typing import Any

import typer

from deepcluster_cli.errors import DeepclusterError, UsageError

#: ``debug``: --debug given; ``progress``: the running command's reporter, once made (library
#: warnings go through it, so --log-format json stays one object per line).
STATE: dict[str, Any] = {"debug": False, "progress": None}


def fail(message: str, code: int) -> typer.Exit:
    """The error line and the exit to raise. Under ``--log-format json`` the line is a JSON
    object too (``{"event": "error", "time", "message", "exit_code"}``), so a log read with
    ``jq`` stays parseable when the run fails. A line break inside the message (a column or
    file name holding one) is shown as ``\\n``, so the error stays one line."""
    message = message.replace("\r", "\\r").replace("\n", "\\n")
    if _json_log():
        import json
        import time

        progress = STATE["progress"]
        since = time.perf_counter() - progress.t0 if progress is not None else 0.0
        rec = {"event": "error", "time": round(since, 3), "message": message, "exit_code": code}
        print(json.dumps(rec), file=sys.stderr, flush=True)
    else:
        typer.echo(f"deepcluster: error: {message}", err=True)
    return typer.Exit(code)


def _json_log() -> bool:
    """Whether this command logs JSON: its reporter says so, or (an error before the reporter
    exists) the command line asks for it."""
    progress = STATE["progress"]
    if progress is not None:
        return progress.log_format == "json"
    argv = sys.argv[1:]
    return "--log-format=json" in argv or any(
        a == "--log-format" and b == "json" for a, b in zip(argv, argv[1:])
    )


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A library's warning (scikit-learn, torch) as one line on stderr, like ours, instead
    of Python's two-line form with the library's file and source line (``--debug`` keeps
    that form)."""
    text = str(message).strip().splitlines()
    first = text[0] if text else category.__name__
    progress = STATE["progress"]
    if progress is not None:
        progress.warn(first)
    else:
        print(f"deepcluster: warning: {first}", file=sys.stderr)


_OUT_OF_MEMORY = (
    "out of memory; use a smaller --batch-size, a smaller network (--arch) or fewer rows"
)


def _is_out_of_memory(exc: BaseException) -> bool:
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "can't allocate memory" in text or "out of memory" in text.lower()
    )


def _bytes_asked(exc: BaseException) -> str:
    found = re.search(r"allocate (\d+) bytes", str(exc))
    return f" (one allocation asked for {int(found.group(1)) / 2**30:.1f} GiB)" if found else ""


def handle_errors(fn: Callable) -> Callable:
    """Map our exceptions to one line on stderr and the documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        STATE["progress"] = None
        try:
            with warnings.catch_warnings():
                if not STATE["debug"]:
                    warnings.showwarning = _one_line_warning
                return fn(*args, **kwargs)
        except DeepclusterError as exc:
            if STATE["debug"]:
                traceback.print_exc()
            raise fail(_rank_prefix() + str(exc), exc.exit_code) from None
        except KeyboardInterrupt as exc:
            raise interrupted(exc) from None
        except BrokenPipeError:
            # the reader of our stdout went away (`| head`): stop quietly
            _silence_stdout()
            raise typer.Exit(0) from None
        except MemoryError:
            raise fail(_OUT_OF_MEMORY, 1) from None
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except OSError as exc:  # the system refused a read or write: a full disk, /dev/full,
            if STATE["debug"]:  # a closed stdout, an I/O error; outputs stay as they were
                traceback.print_exc()
            raise fail(_rank_prefix() + _os_error(exc), 1) from None
        except Exception as exc:  # noqa: BLE001 - last line of defence: no traceback
            if STATE["debug"]:
                traceback.print_exc()
            if _is_out_of_memory(exc):  # PyTorch's allocators raise RuntimeError, not MemoryError
                raise fail(_OUT_OF_MEMORY + _bytes_asked(exc), 1) from None
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise fail(
                f"{_rank_prefix()}internal error: {type(exc).__name__}: {first} (run with --debug for details)",
                1,
            ) from None

    return wrapper


def _os_error(exc: OSError) -> str:
    """``No space left on device (labels.csv)``: the system's reason, and the file where it
    named one (an output's temporary file is named as the output it was to become)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is None:
        return reason
    name = re.sub(r"^(.*/)?\.(.+)\.[^./]+\.tmp(\.[^./]*)?$", r"\1\2", str(exc.filename))
    return f"{reason} ({name})"


def interrupted(exc: KeyboardInterrupt) -> typer.Exit:
    """Ctrl-C (exit 130) or SIGTERM (143, :class:`Terminated`) outside training, where no
    state is saved: the one-line message, and the exit to raise."""
    from deepcluster_cli.errors import Terminated

    if isinstance(exc, Terminated):
        return fail("terminated (SIGTERM)", 143)
    return fail("interrupted", 130)


def _rank_prefix() -> str:
    """Under torchrun, ranks other than 0 name themselves in their error line."""
    from deepcluster_cli.engine.launch import launch_rank

    try:
        rank = launch_rank()
    except DeepclusterError:
        return ""
    return "" if rank == 0 else f"rank {rank}: "


def _silence_stdout() -> None:
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def complete_method(incomplete: str) -> list[str]:
    """Shell completion of a method name (the registry only: no torch import)."""
    from deepcluster_cli.methods import REGISTRY

    return [name for name in REGISTRY if name.startswith(incomplete)]


def split_list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise UsageError("--columns: no column names given")
    return items


def pick(cli_value: Any, toml: dict, key: str, default: Any, kind: Any = str) -> Any:
    """The command line wins over the TOML file, which wins over the default. A value from
    the file is converted to ``kind`` (``int``, ``int | None``...) like a ``--set`` value, so
    ``seed = "abc"`` in the file is a usage error, not a failure later on."""
    from deepcluster_cli.config import coerce

    if key not in toml:
        return default if cli_value is None else cli_value
    from_file = coerce(kind, toml.pop(key), f"--config {key}")  # taken out of the file's
    return from_file if cli_value is None else cli_value  # keys either way: not a setting


def pick_run_options(
    quiet: bool, log_format: str | None, max_time: float | None, toml: dict
) -> tuple[bool, str, float | None]:
    """``--quiet``, ``--log-format`` and ``--max-time``, or the file's ``quiet``,
    ``log_format`` and ``max_time`` (the command line wins; a flag given is True)."""
    return (
        pick(quiet or None, toml, "quiet", False, bool),
        pick(log_format, toml, "log_format", "text"),
        pick(max_time, toml, "max_time", None, float | None),
    )


def pick_threads(cli_value: str | None, toml: dict) -> int | str | None:
    """``--threads`` or the file's ``threads``: a count, ``auto`` or None (the default)."""
    from deepcluster_cli.engine.device import parse_threads

    from_file = parse_threads(toml.pop("threads", None), "--config threads")
    return from_file if cli_value is None else parse_threads(cli_value)


def make_progress(quiet: bool, log_format: str):
    from deepcluster_cli.engine.progress import Progress

    if log_format not in ("text", "json"):
        raise UsageError(f"--log-format {log_format!r}: choose text or json")
    if not is_main_process():  # torchrun: rank 0 speaks for all (errors still name a rank)
        import os

        STATE["progress"] = Progress(
            quiet=True, log_format=log_format, stream=open(os.devnull, "w")
        )
    else:
        STATE["progress"] = Progress(quiet=quiet, log_format=log_format)
    return STATE["progress"]


def read_features(path: str, *, fmt, columns, label_column, id_column, progress):
    """The training rows of ``pretrain`` and ``train``; without ``--columns``, warns of a
    feature that looks like a row id (:func:`warn_id_like_features`)."""
    from deepcluster_cli.io import read_table

    table = read_table(
        path, fmt=fmt, columns=split_list(columns), label_column=label_column, id_column=id_column
    )
    if columns is None:
        warn_id_like_features(table, progress)
    return table


_ID_NAME = re.compile(
    r"(?i)^(id|ids|index|idx|row|rowid|row_id|row_number|key|uuid|unnamed: \d+)$"
    r"|[_\- ]id$|^id[_\- ]"
)
_CAMEL_ID = re.compile(r"[a-z0-9]I[Dd]$")  # userId, imageID


def warn_id_like_features(table, progress) -> None:
    """Warn of a feature column that looks like a row identifier: named like one, or holding
    0..n-1 / 1..n. Taken for a feature it silently ruins the clustering (digits with an
    'id' column: k-means ACC .90 -> .21). Call only when every numeric column became a
    feature (no --columns): :func:`read_features` does."""
    import numpy as np

    x = table.features
    n = len(x)
    names = table.feature_names or [str(j) for j in range(x.shape[1])]
    counting = (np.arange(n, dtype=x.dtype), np.arange(1, n + 1, dtype=x.dtype))
    for j, name in enumerate(names):
        counts = (
            n > 2
            and x[0, j] in (0, 1)  # cheap tests first: nearly every column ends here
            and x[1, j] == x[0, j] + 1
            and x[-1, j] == x[0, j] + n - 1
            and any(np.array_equal(x[:, j], c) for c in counting)
        )
        if counts or _ID_NAME.search(name) or _CAMEL_ID.search(name):
            why = "counts the rows (0, 1, 2, ...)" if counts else "is named like a row identifier"
            progress.warn(
                f"{table.source}: feature column '{name}' {why}; if it is one, pass "
                f"--id-column {name} (or choose the features with --columns)"
            )


def warn_empty_clusters(labels, n_clusters: int, progress, lr: float | None = None) -> None:
    """Warn when the training rows' labels leave some of the ``n_clusters`` clusters empty
    (dgg can drain one into its neighbour, a DEC-like target can starve one): a user who asked
    for k clusters and pipes the labels on would otherwise not know. scikit-learn's KMeans
    warns likewise. When half or more are empty and the method has a learning rate ``lr``,
    the advice names it too: too high a rate merges clusters (dec at lr 0.05 on digits kept
    2 of 10)."""
    import numpy as np

    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_clusters)
    empty = np.flatnonzero(counts[:n_clusters] == 0).tolist()
    if not empty:
        return
    which = ", ".join(map(str, empty))
    progress.warn(
        f"{len(empty)} of the {n_clusters} clusters ended with no rows (cluster"
        f"{'s' if len(empty) > 1 else ''} {which}): the labels use {n_clusters - len(empty)}; "
        + (
            f"another --seed or a lower --lr (this run had {lr:g}) may keep them all"
            if lr and 2 * len(empty) >= n_clusters
            else "another --seed may keep them all"
        )
    )


def schema_of(table) -> dict:
    return {"feature_names": table.feature_names, "n_features": int(table.features.shape[1])}


def row_ids(table, start: int = 0):
    import numpy as np

    if table.ids is not None:
        return table.ids
    return np.arange(start, start + len(table.features), dtype=np.int64)


def setup_torch(
    seed: int,
    device: str,
    threads: int | str | None,
    *,
    one_process: tuple[str, str] | None = None,
):
    """Threads, seed and device. Under torchrun, ``pretrain``/``train`` join the process
    group here; a command that runs in one process passes ``one_process`` (its name and a hint) and is
    refused there instead of N copies racing on one output. ``threads``: a count, ``auto``
    or None (PyTorch's default; warned about when other processes keep the CPUs busy)."""
    from deepcluster_cli.engine import distributed
    from deepcluster_cli.engine.device import flush_denormals, resolve_device, set_threads
    from deepcluster_cli.engine.launch import refuse
    from deepcluster_cli.engine.seed import seed_everything

    if one_process is not None:
        refuse(*one_process)
    dev = resolve_device(device)
    flush_denormals()  # before any parallel operation, so the thread pool inherits it
    _, note = set_threads(threads)
    progress = STATE["progress"]
    if note is not None and progress is not None:
        if threads == "auto" or "passively" in note:
            progress.info(note)
        elif dev.type == "cpu":  # on a GPU the CPU threads do little of the work
            progress.warn(note)
    seed_everything(seed)
    if one_process is None:
        dev = distributed.init_from_env(dev)
    return dev


def where(dev) -> str:
    """The device for a log line, with the thread count on a CPU: ``cpu, 2 threads``."""
    import torch

    from deepcluster_cli.engine.device import threads_text

    if dev.type != "cpu":
        return str(dev)
    return f"{dev}, {threads_text(torch.get_num_threads())}"


def is_main_process() -> bool:
    """False on torchrun's ranks 1..N-1: only rank 0 writes files and logs."""
    from deepcluster_cli.engine.launch import launch_rank

    return launch_rank() == 0


def check_output(path: str | None) -> None:
    """Fail before any work when an output can never be written: a missing folder, a folder
    this process cannot create files in (permissions, a read-only file system; found by
    creating and removing a temporary file there, as the atomic write will)."""
    import os
    import tempfile
    from pathlib import Path

    from deepcluster_cli.io.atomic import resolve_output

    if path is None or path == "-":
        return
    if Path(path).is_dir():
        raise UsageError(f"{path}: is a directory; give a file name")
    p, regular = resolve_output(path)  # a link's target; a device or pipe is written through
    if not regular:
        if not os.access(p, os.W_OK):
            raise UsageError(f"{path}: cannot write to it (permission denied)")
        return
    if not p.parent.exists():
        raise UsageError(f"{path}: output folder {p.parent} does not exist")
    try:
        fd, probe = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".probe")
    except OSError as exc:
        raise UsageError(f"{path}: cannot write to {p.parent} ({exc.strerror})") from None
    os.close(fd)
    os.remove(probe)


def _same_file(a: str, b: str) -> bool:
    import os
    from pathlib import Path

    if os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)

    def resolved(path: str) -> Path:
        try:
            return Path(path).resolve()
        except (RuntimeError, OSError):  # Python < 3.13 raises RuntimeError on a loop
            raise UsageError(f"{path}: a loop of symbolic links; name another file") from None

    return resolved(a) == resolved(b)


def check_outputs(
    outputs: dict[str, str | None],
    inputs: dict[str, str | None],
    *,
    files_only: tuple[str, ...] = (),
    tables: tuple[str, ...] = (),
) -> None:
    """:func:`check_output` for each output, and refuse an output that is one of the
    command's inputs or another of its outputs: the run would replace a file the user
    has (the data, the model) or write two results to one file. Keys name the options
    (``{"-o": "model.pt"}``), values are paths; ``None`` is skipped, ``-`` is stdout: one
    output at most may take it, and none of the ``files_only`` options (checkpoints). The
    ``tables`` options are written as tables, in the format their extension names: an
    extension no writer knows fails here, not after the work. An input ``-`` is stdin,
    which can be read once: one input at most may take it."""
    from deepcluster_cli.io.formats import detect_output_format

    from_stdin = [what for what, path in inputs.items() if path == "-"]
    if len(from_stdin) > 1:
        raise UsageError(
            f"the {' and the '.join(from_stdin)} both read stdin (-), which can be read once; "
            "save one of them to a file"
        )
    to_stdout = [opt for opt, path in outputs.items() if path == "-"]
    for opt in to_stdout:
        if opt in files_only:
            raise UsageError(
                f"{opt} -: a checkpoint is a binary file, not for stdout; give a file name"
            )
    if len(to_stdout) > 1:
        raise UsageError(
            f"{' and '.join(to_stdout)} both write to stdout, where one table can go; "
            "send one of them to a file"
        )
    given = [(opt, path) for opt, path in outputs.items() if path not in (None, "-")]
    for i, (opt, path) in enumerate(given):
        check_output(path)
        for what, source in inputs.items():
            if source not in (None, "-") and _same_file(path, source):
                raise UsageError(
                    f"{path}: {opt} names the {what} this command reads; write to another file"
                )
        for other, other_path in given[:i]:
            if _same_file(path, other_path):
                raise UsageError(f"{path}: given to both {other} and {opt}; use two files")
    for opt, path in given:
        if opt in tables:
            try:
                detect_output_format(path)
            except UsageError as exc:
                raise UsageError(f"{opt}: {exc}") from None


def check_seed(seed: int, restarts: int = 1) -> None:
    """Refuse a --seed (or the last of --restarts N: seed .. seed+N-1) the libraries reject."""
    from deepcluster_cli.config import max_seed

    top = max_seed(restarts)
    if not 0 <= seed <= top:
        with_restarts = f" with --restarts {restarts}" if restarts > 1 else ""
        raise UsageError(f"--seed {seed}: give a number from 0 to {top}{with_restarts}")


def check_max_time(max_time: float | None) -> None:
    if max_time is not None and not max_time > 0:
        raise UsageError("--max-time must be a positive number of seconds")


def run_resumable(
    body,
    *,
    output: str,
    run: dict,
    schema: dict,
    scaler,
    resume: bool,
    max_time: float | None,
    progress,
    start: str = "",
):
    """Run ``body(control, state)`` so that SIGINT/SIGTERM or ``--max-time`` save a resumable
    state beside ``output`` (exit 130/143, or 0 for the time budget) and ``--resume``
    continues from it. Returns body's result, or None when stopped by the time budget.
    ``start`` ("training dec on ...") is shown once the resumable state is found good, so a
    refused --resume is the run's only line."""
    from pathlib import Path

    from deepcluster_cli.engine.interrupt import EXIT_CODES, graceful_stop
    from deepcluster_cli.engine.trainer import StopTraining, TrainingDiverged
    from deepcluster_cli.errors import Interrupted, TrainingError
    from deepcluster_cli.pipeline import load_resume, resume_path, save_resume

    check_max_time(max_time)
    where = Path(resume_path(output))
    if where.exists() and not where.is_file():  # before any work: found only at the end, the
        raise UsageError(  # model would be written and the run still fail
            f"{where}: is not a file; it is where this run would keep an interrupted state: "
            "move it away"
        )
    state = None
    if resume:
        state = load_resume(output, run=run, schema=schema, warn=progress.warn)[0]
    if start:
        progress.info(start)
    if not resume and Path(resume_path(output)).exists():
        progress.warn(
            f"{resume_path(output)} holds an interrupted run; this run starts over and removes it "
            "when it succeeds (stop now and repeat with --resume to continue that run)"
        )
    with graceful_stop(max_time) as control:
        try:
            result = body(control, state)
            if control.stop_signal is not None:  # torchrun: came after the last stage's loop
                raise Interrupted(
                    f"interrupted; {output} was not written", EXIT_CODES[control.stop_signal]
                )
            return result
        except StopTraining as stop:
            path = resume_path(output)
            if stop.signum is not None and not (
                stop.state.get("finished") or stop.state.get("current")
            ):  # stopped in the first stage's k-means or set-up: nothing to continue from
                raise Interrupted(
                    f"interrupted before any training stage ended; {output} was not written "
                    "and there is nothing to resume",
                    EXIT_CODES[stop.signum],
                ) from None
            if is_main_process():
                save_resume(output, run=run, schema=schema, scaler=scaler, state=stop.state)
            hint = f"saved a resumable state to {path}; repeat the command with --resume"
            if stop.signum is not None:
                raise Interrupted(f"interrupted: {hint}", EXIT_CODES[stop.signum]) from None
            progress.warn(f"--max-time reached before the end of training: {hint}")
            return None
        except TrainingDiverged as err:
            # the spec's "keep the last good checkpoint": the state before the failing epoch
            path = resume_path(output)
            if is_main_process():
                save_resume(output, run=run, schema=schema, scaler=scaler, state=err.state)
            raise TrainingError(
                f"{err.head}; the state before that epoch is saved to {path}: repeat the "
                f"command with a lower learning rate ({err.lr_option}) and --resume to "
                "continue from it, or scale the data (--scale standard) and start over"
            ) from None


def remove_resume_state(output: str, warn) -> None:
    """Remove the interrupted run's state once the run has succeeded (its outputs are in
    place); one that cannot be removed is a warning, not a failure of that run."""
    import os

    if not is_main_process():
        return
    from deepcluster_cli.pipeline import resume_path

    try:
        os.remove(resume_path(output))
    except FileNotFoundError:
        pass
    except OSError as exc:
        warn(f"{resume_path(output)}: could not remove the old resumable state ({exc.strerror})")
