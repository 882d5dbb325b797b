"""CPU load read before torch loads (engine.cpuload) and the thread choices built on it
(engine.device.set_threads, ``--threads auto``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from deepcluster_cli.engine import cpuload, device
from deepcluster_cli.engine.device import parse_threads, set_threads
from deepcluster_cli.errors import UsageError

linux = pytest.mark.skipif(not Path("/proc/loadavg").exists(), reason="reads /proc")
HOG = "while True: pass"


@pytest.fixture
def hogs():
    """One busy process per usable CPU, each in its own session (as a job started from
    another terminal is), so that any thread count oversubscribes the machine."""
    procs = [
        subprocess.Popen([sys.executable, "-c", HOG], start_new_session=True)
        for _ in range(cpuload.usable_cpus())
    ]
    yield len(procs)
    for p in procs:
        p.kill()
        p.wait()


@linux
def test_busy_elsewhere_counts_other_processes_not_this_one(hogs):
    assert cpuload.busy_elsewhere() >= hogs
    assert cpuload._own_running() >= 1  # the sampling thread itself


@linux
def test_busy_elsewhere_reads_the_runnable_count_less_our_own(tmp_path, monkeypatch):
    fake = tmp_path / "loadavg"
    fake.write_text("0.50 0.40 0.30 4/321 9999\n")
    real = Path

    def path(p, *rest):
        return fake if str(p) == "/proc/loadavg" else real(p, *rest)

    monkeypatch.setattr(cpuload, "Path", path)
    monkeypatch.setattr(cpuload, "_own_running", lambda: 1)
    assert cpuload.busy_elsewhere(samples=3, gap=0) == 3
    fake.write_text("garbage\n")
    assert cpuload.busy_elsewhere(samples=1) is None


def test_oversubscribed():
    assert not cpuload.oversubscribed(0, 2, 2)
    assert not cpuload.oversubscribed(None, 2, 2)
    assert cpuload.oversubscribed(1, 2, 2)
    assert not cpuload.oversubscribed(2, 8, 16)  # a laptop's browser beside 8 of 16 CPUs
    assert cpuload.oversubscribed(9, 8, 16)


def test_default_threads_follows_omp_num_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cpuload.default_threads() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    assert cpuload.default_threads() == cpuload.physical_cores() >= 1


# a fresh interpreter: the decision must be made before torch is imported
DECIDE = """
import json, os, sys
from deepcluster_cli.engine import cpuload
cpuload.busy_elsewhere = lambda: int(sys.argv[1])
cpuload.usable_cpus = lambda: 2
cpuload.default_threads = lambda: 2
if sys.argv[3] == "torch-first":
    import torch
done = cpuload.wait_passively_if_busy([sys.argv[2], "data.csv"])
print(json.dumps([done, os.environ.get("OMP_WAIT_POLICY"), cpuload.STARTUP["busy"]]))
"""


def decide(busy: int, command: str, mode: str = "", **env: str) -> list:
    environ = {
        k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
    }
    out = subprocess.run(
        [sys.executable, "-c", DECIDE, str(busy), command, mode],
        capture_output=True,
        text=True,
        check=True,
        env={**environ, **env},
    )
    return json.loads(out.stdout)


def test_passive_waiting_only_when_the_cpus_are_oversubscribed():
    assert decide(1, "train") == [True, "PASSIVE", 1]
    assert decide(2, "pretrain") == [True, "PASSIVE", 2]
    assert decide(0, "train") == [False, None, 0]  # a quiet machine keeps fast spinning
    assert decide(2, "evaluate") == [False, None, None]  # no thread pool there: not measured


def test_passive_waiting_leaves_the_users_choice_alone():
    assert decide(2, "train", OMP_WAIT_POLICY="ACTIVE") == [False, "ACTIVE", None]
    assert decide(2, "train", GOMP_SPINCOUNT="1000") == [False, None, None]
    assert decide(2, "train", "torch-first") == [False, None, None]  # too late for libgomp


@pytest.mark.parametrize(
    "value, expected",
    [(None, None), ("auto", "auto"), (" AUTO ", "auto"), ("3", 3), (2, 2)],
)
def test_parse_threads(value, expected):
    assert parse_threads(value) == expected


@pytest.mark.parametrize("value", ["0", "-1", "many", "1.5", 0, 1.5, True, ""])
def test_parse_threads_refuses(value):
    with pytest.raises(UsageError, match="or auto"):
        parse_threads(value)


@pytest.fixture
def machine(monkeypatch):
    """A 4-CPU machine on which PyTorch would use 4 threads; the test sets the load."""
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    monkeypatch.setattr(device, "usable_cpus", lambda: 4)
    monkeypatch.setattr(device, "default_threads", lambda: 4)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setitem(cpuload.STARTUP, "passive", False)

    def load(busy):
        monkeypatch.setitem(cpuload.STARTUP, "busy", busy)

    yield load
    torch.set_num_threads(before)


def test_auto_takes_the_free_cpus(machine):
    machine(3)
    n, note = set_threads("auto")
    assert n == torch.get_num_threads() == 1 and "3 of the 4 CPUs busy" in note
    machine(1)
    assert set_threads("auto")[0] == torch.get_num_threads() == 3
    machine(0)
    assert set_threads("auto")[0] == 4
    machine(9)  # more busy than CPUs: still one thread
    n, note = set_threads("auto")
    assert n == 1 and "keep 4 of the 4 CPUs busy" in note


def test_default_keeps_the_thread_count_and_says_why_it_may_be_slow(machine):
    machine(0)
    assert set_threads(None) == (4, None)
    machine(2)
    n, note = set_threads(None)
    assert n == torch.get_num_threads() == 4  # unchanged: results do not depend on the load
    assert "2 of the 4 CPUs busy" in note and "--threads auto" in note and "slower" in note
    cpuload.STARTUP["passive"] = True
    n, note = set_threads(None)
    assert n == 4 and "wait passively" in note and "slower" not in note


def test_a_passive_policy_set_by_the_user_is_not_warned_about(machine, monkeypatch):
    machine(2)
    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
    n, note = set_threads(None)
    assert n == 4 and "wait passively" in note and "slower" not in note


def test_an_explicit_count_is_kept_whatever_the_load(machine):
    machine(3)
    assert set_threads(2) == (2, None) and torch.get_num_threads() == 2
    with pytest.raises(UsageError):
        set_threads(0)


@linux
def test_commands_report_the_load_and_auto_uses_the_free_cpus(hogs, tmp_path, blobs_csv):
    """End to end, beside one busy process per CPU: the default run says its threads wait
    passively, ``--threads auto`` runs one thread."""
    base = [sys.executable, "-m", "deepcluster_cli", "train", str(blobs_csv)]
    # on the CPU also where a GPU is (auto would log "(cuda:0)", not the thread count)
    base += ["--label-column", "label", "-m", "kmeans", "-k", "3", "--device", "cpu"]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}

    def run(*extra, **more):
        return subprocess.run(
            [*base, *extra], capture_output=True, text=True, env={**env, **more}, timeout=120
        )

    default = run("-o", str(tmp_path / "a.pt"))
    assert default.returncode == 0, default.stderr
    if cpuload.physical_cores() > 1:  # PyTorch's default is more than one thread
        assert "wait passively" in default.stderr, default.stderr
    auto = run("-o", str(tmp_path / "c.pt"), "--threads", "auto")
    assert auto.returncode == 0 and "--threads auto: 1 thread;" in auto.stderr, auto.stderr
    assert "(cpu, 1 thread)" in auto.stderr
