"""Faults a batch job meets: time budgets, signals, resumption, and determinism."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

COLS = ["--id-column", "image_id", "--label-column", "label"]
TINY = ["--arch", "32", "--latent", "4", "--batch-size", "64"]


def tiny_train(data, method, out, **settings):
    """``train`` of ``method`` on a small autoencoder (32 units, 4 codes) pretrained by the
    method itself, k = 10, with ``--set`` ``settings``."""
    args = ["train", data, *COLS, "-m", method, "-k", 10, "-o", out]
    for key, value in {"arch": 32, "latent": 4, **settings}.items():
        args += ["--set", f"{key}={value}"]
    return args


def history(path):
    ck = torch.load(path, weights_only=True)
    return ck["history"]


def test_max_time_saves_resumable_state_and_resume_finishes(cli, digits_csv, tmp_path):
    out = tmp_path / "ae.pt"
    r = cli("pretrain", digits_csv, *COLS, *TINY, "--epochs", 4, "--max-time", "1e-6", "-o", out)
    assert r.exit_code == 0, r.stderr
    assert "--resume" in r.stderr
    assert not out.exists()
    state = tmp_path / "ae.pt.resume"
    assert state.exists()
    assert len(history(state)) == 1  # one epoch done before the budget check
    first = history(state)[0]
    r = cli("pretrain", digits_csv, *COLS, *TINY, "--epochs", 4, "--resume", "-o", out, "-q")
    assert r.exit_code == 0, r.stderr
    assert [row["epoch"] for row in history(out)] == [1, 2, 3, 4]
    # epoch 1 is the interrupted run's (its time and loss), not trained again: a resume that
    # ignored the saved state would write the same epoch numbers
    assert history(out)[0] == first
    assert not state.exists()


def test_resume_refuses_a_different_command(cli, digits_csv, tmp_path):
    out = tmp_path / "ae.pt"
    cli("pretrain", digits_csv, *COLS, *TINY, "--epochs", 3, "--max-time", "1e-6", "-o", out)
    r = cli("pretrain", digits_csv, *COLS, *TINY, "--epochs", 5, "--resume", "-o", out)
    assert r.exit_code == 2
    assert "different run" in r.stderr and "epochs: 3 there, 5 now" in r.stderr
    # a nested setting is named, not the whole configuration printed (was both dicts)
    other = [*TINY[:1], "64", *TINY[2:]]
    r = cli("pretrain", digits_csv, *COLS, *other, "--epochs", 3, "--resume", "-o", out)
    assert r.exit_code == 2
    assert "arch: (32,) there, (64,) now" in r.stderr or "arch: [32] there, [64] now" in r.stderr
    assert len(r.stderr) < 300, r.stderr


def test_starting_over_beside_an_interrupted_run_says_so(cli, digits_csv, tmp_path):
    """Forgetting --resume must not drop hours of work without a word: the fresh run warns
    before it trains, and removes the old state only when it succeeds."""
    out = tmp_path / "ae.pt"
    state = tmp_path / "ae.pt.resume"
    cli("pretrain", digits_csv, *COLS, *TINY, "--epochs", 3, "--max-time", "1e-6", "-o", out)
    assert state.exists()
    r = cli("pretrain", digits_csv, *COLS, *TINY, "--epochs", 1, "-q", "-o", out)
    assert r.exit_code == 0, r.stderr
    assert f"{state} holds an interrupted run" in r.stderr and "--resume" in r.stderr
    assert out.exists() and not state.exists()
    r = cli("pretrain", digits_csv, *COLS, *TINY, "--epochs", 1, "-q", "-o", out)
    assert r.exit_code == 0 and "interrupted run" not in r.stderr


def test_resume_without_state_is_a_usage_error(cli, digits_csv, tmp_path):
    r = cli("pretrain", digits_csv, *COLS, *TINY, "--resume", "-o", tmp_path / "ae.pt")
    assert r.exit_code == 2 and "no resumable state" in r.stderr


def test_multi_stage_method_resumes_after_its_pretraining_stage(cli, digits_csv, tmp_path):
    out = tmp_path / "m.pt"
    args = tiny_train(digits_csv, "aekm", out, pretrain_epochs=3)
    r = cli(*args, "--max-time", "1e-6")
    assert r.exit_code == 0 and not out.exists()
    first = history(tmp_path / "m.pt.resume")[0]
    r = cli(*args, "--resume", "--labels", tmp_path / "l.csv")
    assert r.exit_code == 0, r.stderr
    assert [row["epoch"] for row in history(out)] == [1, 2, 3]
    assert history(out)[0] == first  # carried over from the interrupted run
    assert len(pd.read_csv(tmp_path / "l.csv")) == 1797


def test_an_autoencoder_that_collapsed_is_refused_not_saved(cli, digits_csv, tmp_path):
    """Adam at lr 0.05 switches off every unit of the default network's first layer on digits
    within two epochs (seeds 0-3 here): the loss stays finite, and such an autoencoder used to
    be written, then cluster every row together with only a warning about empty clusters."""
    out = tmp_path / "ae.pt"
    r = cli("pretrain", digits_csv, *COLS, "--epochs", 2, "--lr", 0.05, "-q", "-o", out)
    assert r.exit_code == 1, r.stderr
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("deepcluster: error: stage 'pretrain'")
    assert "every one of the 1797 rows has the same code" in err and "had 0.05" in err
    assert not out.exists() and not (tmp_path / "ae.pt.resume").exists()


def test_train_refuses_a_collapsed_pretrained_autoencoder(cli, digits_csv, tmp_path):
    from deepcluster_cli.engine.checkpoint import load_checkpoint, save_checkpoint

    ae = tmp_path / "ae.pt"
    assert cli("pretrain", digits_csv, *COLS, *TINY, "--epochs", 1, "-q", "-o", ae).exit_code == 0
    ck = load_checkpoint(ae)
    ck.state["encoder.0.weight"].zero_()
    ck.state["encoder.0.bias"].fill_(-1.0)
    save_checkpoint(ae, ck)
    out, labels = tmp_path / "m.pt", tmp_path / "l.csv"
    r = cli("train", digits_csv, *COLS, "-m", "aekm", "-k", 10, "--pretrained", ae, "-o", out,
            "--labels", labels, "-q")  # fmt: skip
    assert r.exit_code == 2, r.stderr
    assert r.stderr.strip() == (
        "deepcluster: error: --pretrained: a collapsed autoencoder: every one of the 1797 rows "
        "has the same code (no unit of encoder layer 1 is active on any row), so no method can "
        "separate them; pretrain it again with a lower --lr"
    )
    assert not out.exists() and not labels.exists()


def test_a_method_whose_training_collapsed_its_codes_is_refused(cli, digits_csv, tmp_path):
    """dcn at lr 1 sends every row to one code: the labels would be one cluster, and with
    --restarts its criterion (the codes' k-means inertia, 0 there) would keep that restart."""
    out, labels = tmp_path / "m.pt", tmp_path / "l.csv"
    args = tiny_train(digits_csv, "dcn", out, pretrain_epochs=2, epochs=3)
    r = cli(*args, "--lr", 1, "--labels", labels, "-q")
    assert r.exit_code == 1, r.stderr
    assert r.stderr.strip() == (
        "deepcluster: error: dcn: training collapsed the representation: all 1797 rows map to "
        "one point, so they would all fall in one cluster; nothing was saved. Start over with "
        "a lower learning rate (--lr; this run had 1)"
    )
    assert not out.exists() and not labels.exists()


def _start(args):
    return subprocess.Popen(
        [sys.executable, "-m", "deepcluster_cli", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_epoch(proc, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        line = proc.stderr.readline()
        if "epoch" in line:
            return
        if proc.poll() is not None:
            break
    raise AssertionError("training never reported an epoch")


def test_sigterm_and_sigint_save_state_and_exit_143_130(digits_csv, tmp_path):
    out = tmp_path / "ae.pt"
    args = ["pretrain", digits_csv, *COLS, *TINY, "--batch-size", "8", "--epochs", 500, "-o", out]
    for sig, code in [(signal.SIGTERM, 143), (signal.SIGINT, 130)]:
        proc = _start(args + (["--resume"] if sig == signal.SIGINT else []))
        _wait_for_epoch(proc)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == code, err
        assert "resumable state" in err and "Traceback" not in err
        assert (tmp_path / "ae.pt.resume").exists() and not out.exists()
    # the second run resumed the first: its history continues the first one's epochs
    epochs = [row["epoch"] for row in history(tmp_path / "ae.pt.resume")]
    assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) >= 2


def test_same_seed_gives_byte_identical_labels(cli, digits_csv, tmp_path):
    outputs = []
    for i in range(2):
        labels = tmp_path / f"l{i}.csv"
        r = cli(
            "train",
            digits_csv,
            *COLS,
            "-m",
            "aekm",
            "-k",
            10,
            "--seed",
            7,
            "--set",
            "arch=32",
            "--set",
            "latent=4",
            "--set",
            "pretrain_epochs=2",
            "-o",
            tmp_path / f"m{i}.pt",
            "--labels",
            labels,
            "-q",
        )
        assert r.exit_code == 0, r.stderr
        outputs.append(labels.read_bytes())
    assert outputs[0] == outputs[1]


def test_json_log_lines_on_stderr_only(cli, digits_csv, tmp_path):
    r = cli(
        "pretrain",
        digits_csv,
        *COLS,
        *TINY,
        "--epochs",
        2,
        "--log-format",
        "json",
        "-o",
        tmp_path / "ae.pt",
    )
    assert r.exit_code == 0 and r.stdout == ""
    events = [json.loads(line) for line in r.stderr.splitlines()]
    epochs = [e for e in events if e["event"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2] and np.isfinite(epochs[0]["recon"])


def test_a_closed_stdout_is_one_line_exit_1_and_files_still_work(digits_csv, tmp_path):
    """Started with stdout closed (`>&-`), a command printing labels died on an internal
    AttributeError; one writing -o needs no stdout and succeeds."""
    import os

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "deepcluster_cli", *map(str, args)],
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: os.close(1),
        )

    model = tmp_path / "k.pt"
    r = run("train", digits_csv, *COLS, "-m", "kmeans", "-k", "3", "-o", model, "-q")
    assert r.returncode == 0, r.stderr
    r = run("assign", model, digits_csv, *COLS)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == ["deepcluster: error: standard output is closed"]
    r = run("assign", model, digits_csv, *COLS, "-o", tmp_path / "l.csv")
    assert r.returncode == 0 and len(pd.read_csv(tmp_path / "l.csv")) == 1797


def test_a_full_disk_is_one_line_naming_the_output_not_an_internal_error(
    cli, digits_csv, tmp_path, monkeypatch
):
    """ENOSPC while writing -o was `internal error: OSError: ...`; the old file stays."""
    import errno
    import pathlib

    labels = tmp_path / "l.csv"
    r = cli("train", digits_csv, *COLS, "-m", "kmeans", "-k", "3", "-o", tmp_path / "k.pt",
            "--labels", labels, "-q")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    report = tmp_path / "report.json"
    report.write_text("old")

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(pathlib.Path, "write_text", full)
    r = cli("evaluate", labels, "--truth", digits_csv, "--label-column", "label", "-o", report)
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines() == [
        f"deepcluster: error: No space left on device ({report})"
    ]
    monkeypatch.undo()
    assert report.read_text() == "old"


def test_a_nan_keeps_the_last_good_state_and_resume_continues_at_a_lower_rate(
    cli, digits_csv, tmp_path
):
    """spec/cli.md: "loss becomes NaN: stop, keep the last good checkpoint, exit 1 with
    advice (lower --lr)". The state before the failing epoch is saved for --resume, which
    takes a changed learning rate (and only that) to continue from it."""
    out = tmp_path / "m.pt"
    out.write_bytes(b"the user's earlier model")
    args = [*tiny_train(digits_csv, "idec", out, pretrain_epochs=2, optimizer="sgd"), "--epochs", 3]
    r = cli(*args, "--lr", "1e6")
    assert r.exit_code == 1
    state = tmp_path / "m.pt.resume"
    assert f"saved to {state}" in r.stderr and "--resume" in r.stderr and "(--lr)" in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("deepcluster: error: the loss became NaN in stage 'idec' epoch 1")
    assert r.stderr.count("error") == 1 and "Traceback" not in r.stderr
    assert out.read_bytes() == b"the user's earlier model"
    # the finished pretraining (stage 1) is kept; the failing stage starts over at its epoch 1
    assert [(row["stage"], row["epoch"]) for row in history(state)] == [
        ("pretrain", 1),
        ("pretrain", 2),
    ]
    r = cli("info", state, "--format", "json")
    assert json.loads(r.stdout)["resumes_at"] == "stage 'idec', epoch 1"
    # another change than a learning rate is still refused
    r = cli(*args, "--lr", "1e-3", "--set", "momentum=0.5", "--resume")
    assert r.exit_code == 2 and "momentum" in r.stderr
    r = cli(*args, "--lr", "1e-3", "--resume", "--labels", tmp_path / "l.csv")
    assert r.exit_code == 0, r.stderr
    assert "continuing at lr=0.001 (the interrupted run had 1e+06)" in r.stderr
    assert [(row["stage"], row["epoch"]) for row in history(out)] == [
        ("pretrain", 1),
        ("pretrain", 2),
        ("idec", 1),
        ("idec", 2),
        ("idec", 3),
    ]
    assert not state.exists() and len(pd.read_csv(tmp_path / "l.csv")) == 1797


def test_resume_takes_only_a_numeric_change_of_a_learning_rate(tmp_path):
    """A learning rate may change on --resume (with a warning); any other setting, or a rate
    that is not a number in a damaged state file, is a different run (was: an internal error
    formatting 'fast' as a number)."""
    import pytest

    from deepcluster_cli.errors import UsageError
    from deepcluster_cli.io.scaling import Scaler
    from deepcluster_cli.pipeline import load_resume, save_resume

    out = str(tmp_path / "m.pt")
    schema = {"n_features": 2}
    scaler = Scaler("none").fit(np.zeros((2, 2), dtype=np.float32))

    def saved(config):
        run = {"method": "dec", "config": config}
        save_resume(out, run=run, schema=schema, scaler=scaler, state={"history": []})

    said = []
    saved({"lr": 1e-3, "pretrain_lr": 1e-3, "lr_decay": 0.5})
    now = {"method": "dec", "config": {"lr": 1e-4, "pretrain_lr": 1e-3, "lr_decay": 0.5}}
    load_resume(out, run=now, schema=schema, warn=said.append)
    assert said == ["--resume: continuing at lr=0.0001 (the interrupted run had 0.001)"]
    for changed in ({"lr_decay": 0.9}, {"lr": "fast"}):
        saved({**now["config"], **changed})
        with pytest.raises(UsageError, match="different run"):
            load_resume(out, run=now, schema=schema, warn=said.append)


def test_a_signal_outside_a_training_loop_stops_at_once(cli, digits_csv, tmp_path, monkeypatch):
    """SIGTERM/SIGINT during k-means (nothing there polls the stop request) were only noted:
    the run went on to the end, exited 0 and replaced -o. Now the handler stops at once: the
    finished stages (dec's pretraining) are saved to resume from, -o is untouched, and
    --resume replays them and trains the rest."""
    import os

    import deepcluster_cli.methods.dec as dec

    out = tmp_path / "m.pt"
    out.write_bytes(b"the user's earlier model")
    args = [*tiny_train(digits_csv, "dec", out, pretrain_epochs=2), "--epochs", 2, "-q"]
    real = dec.kmeans_centroids

    def signalled(*a, **kw):
        os.kill(os.getpid(), signal.SIGTERM)  # as `kill` or a batch scheduler would
        return real(*a, **kw)

    monkeypatch.setattr(dec, "kmeans_centroids", signalled)
    r = cli(*args)
    assert r.exit_code == 143, r.stderr
    state = tmp_path / "m.pt.resume"
    assert r.stderr.strip().splitlines() == [
        f"deepcluster: error: interrupted: saved a resumable state to {state}; "
        "repeat the command with --resume"
    ]
    assert out.read_bytes() == b"the user's earlier model"
    assert [(row["stage"], row["epoch"]) for row in history(state)] == [
        ("pretrain", 1),
        ("pretrain", 2),
    ]
    r = cli("info", state, "--format", "json")
    assert json.loads(r.stdout)["resumes_at"] == "the stage after stage 'pretrain'"
    monkeypatch.setattr(dec, "kmeans_centroids", real)
    r = cli(*args, "--resume")
    assert r.exit_code == 0, r.stderr
    assert [(row["stage"], row["epoch"]) for row in history(out)] == [
        ("pretrain", 1),
        ("pretrain", 2),
        ("dec", 1),
        ("dec", 2),
    ]
    assert not state.exists()


def test_a_signal_before_any_stage_ends_leaves_nothing_and_says_so(
    cli, digits_csv, tmp_path, monkeypatch
):
    """kmeans has no training loop: an interrupt stops it (exit 130), writes nothing, and
    leaves no state to resume."""
    import os

    import deepcluster_cli.methods.kmeans as kmeans

    out = tmp_path / "m.pt"
    out.write_bytes(b"the user's earlier model")
    real = kmeans.kmeans_centroids

    def signalled(*a, **kw):
        os.kill(os.getpid(), signal.SIGINT)
        return real(*a, **kw)

    monkeypatch.setattr(kmeans, "kmeans_centroids", signalled)
    r = cli("train", digits_csv, *COLS, "-m", "kmeans", "-k", 10, "-o", out, "-q")
    assert r.exit_code == 130, r.stderr
    assert r.stderr.strip().splitlines() == [
        f"deepcluster: error: interrupted before any training stage ended; {out} was not "
        "written and there is nothing to resume"
    ]
    assert out.read_bytes() == b"the user's earlier model"
    assert not (tmp_path / "m.pt.resume").exists()


def test_an_output_through_a_link_or_into_a_pipe_is_written_not_replaced(cli, digits_csv, tmp_path):
    """Every output was renamed over its path: a symbolic link became a file (its target
    never written), a named pipe or a device (`-o /dev/null` as root) a regular file. Now
    the link's target is replaced and the link stays; a pipe receives the bytes."""
    import os
    import stat
    import threading

    train = ["train", digits_csv, *COLS, "-m", "kmeans", "-k", 3, "-q"]
    real, link = tmp_path / "real.pt", tmp_path / "link.pt"
    real.write_bytes(b"old")
    link.symlink_to(real.name)
    r = cli(*train, "-o", link)
    assert r.exit_code == 0, r.stderr
    assert link.is_symlink() and real.read_bytes()[:2] == b"PK"  # a checkpoint, through it

    fifo = tmp_path / "pipe.pt"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    r = cli(*train, "-o", fifo)
    reader.join(timeout=60)
    assert r.exit_code == 0, r.stderr
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and got and got[0][:2] == b"PK"


def test_a_folder_where_the_resumable_state_goes_is_refused_before_any_work(
    cli, digits_csv, tmp_path
):
    """`m.pt.resume` a folder: the run wrote -o, then failed removing it (exit 1 with the
    user's model already replaced)."""
    out = tmp_path / "m.pt"
    out.write_bytes(b"the user's earlier model")
    (tmp_path / "m.pt.resume").mkdir()
    r = cli("train", digits_csv, *COLS, "-m", "kmeans", "-k", 3, "-o", out, "-q")
    assert r.exit_code == 2
    assert r.stderr.strip().splitlines() == [
        f"deepcluster: error: {out}.resume: is not a file; it is where this run would keep an "
        "interrupted state: move it away"
    ]
    assert out.read_bytes() == b"the user's earlier model"


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["train", "--help"]])
def test_help_and_version_to_a_full_disk_or_a_closed_stdout_are_one_line(args):
    """They ended in a traceback (OSError ENOSPC / EBADF) where commands say one line. The
    full disk is a stdout whose every write fails as `> /dev/full` does (no /dev/full needed)."""
    import os

    full_disk = (
        "import errno, io, sys\n"
        "class Full(io.TextIOBase):\n"
        "    def writable(self): return True\n"
        "    def write(self, text): raise OSError(errno.ENOSPC, 'No space left on device')\n"
        "sys.stdout = Full(); sys.argv[0] = 'deepcluster'\n"
        "from deepcluster_cli.cli import main; main()\n"
    )
    r = subprocess.run([sys.executable, "-c", full_disk, *args], stderr=subprocess.PIPE, text=True)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == ["deepcluster: error: No space left on device"]
    cmd = [sys.executable, "-m", "deepcluster_cli", *args]
    r = subprocess.run(cmd, stderr=subprocess.PIPE, text=True, preexec_fn=lambda: os.close(1))
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == ["deepcluster: error: standard output is closed"]
