"""``make results`` (tests/results/run.py): the table, the resume rule and failed runs, with
``deepcluster`` replaced by a stand-in so nothing is trained here."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

RUNNER = Path(__file__).parent / "results" / "run.py"


@pytest.fixture
def run_module(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("results_run", RUNNER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    data = tmp_path / "data"
    data.mkdir()
    (data / "digits.parquet").write_bytes(b"")
    monkeypatch.setattr(module, "DATA", data)
    return module


class FakeCalls:
    """Stands in for Runner.call: records the commands, answers evaluate with scores."""

    def __init__(self, acc: dict[str, float], fail: set[str] = frozenset()):
        self.acc, self.fail, self.argv = acc, fail, []

    def __call__(self, argv):
        self.argv.append(argv)
        if argv[1] == "evaluate":
            method = Path(argv[2]).stem.rsplit("_s", 1)[0]
            a = self.acc[method]
            return 0.1, json.dumps({"scores": {"acc": a, "nmi": a - 0.1, "ari": a - 0.2}})
        if argv[1] == "train" and argv[argv.index("-m") + 1] in self.fail:
            raise RuntimeError("exit 1: deepcluster: error: loss became NaN")
        if argv[1] == "pretrain":
            Path(argv[argv.index("-o") + 1]).write_bytes(b"ae")
        return 2.0, ""


ACC = {"kmeans": 0.79, "dec": 0.8, "dcn": 0.7}


def run_all(module, work, *, threads=1, fail=frozenset(), seeds=(0, 1), methods=tuple(ACC)):
    """A Runner over ``work`` with a stand-in ``deepcluster``; runs every (seed, method)."""
    runner = module.Runner(work, threads=threads, dry=False)
    runner.call = calls = FakeCalls(ACC, fail=fail)
    for seed in seeds:
        for method in methods:
            runner.run("digits", seed, method)
    return runner, calls


def test_runs_render_resume_and_failures(run_module, tmp_path):
    work = tmp_path / "work"
    runner, calls = run_all(run_module, work, fail={"dcn"})

    trains = [a for a in calls.argv if a[1] == "train"]
    assert len(trains) == 6
    dec = next(a for a in trains if "dec" in a)
    assert dec[dec.index("--preset") + 1] == "digits"  # dec has a digits preset
    assert "--pretrained" in dec and "--pretrained" not in trains[0]  # kmeans is shallow
    assert len([a for a in calls.argv if a[1] == "pretrain"]) == 2  # one AE per seed

    # a second runner reads the store: finished runs are not repeated, failed ones are
    again, calls2 = run_all(run_module, work, fail={"dcn"})
    assert {a[a.index("-m") + 1] for a in calls2.argv if a[1] == "train"} == {"dcn"}

    # a changed command (threads) runs again
    _, calls3 = run_all(run_module, work, threads=2, seeds=(0,), methods=("kmeans",))
    assert len([a for a in calls3.argv if a[1] == "train"]) == 1

    text = run_module.render(again.done, work)
    row = next(line for line in text.splitlines() if line.startswith("| dec |"))
    assert "0.800 ± 0.000" in row and "preset digits" in row and "0.800 / 0.800" in row
    bad = next(line for line in text.splitlines() if line.startswith("| dcn |"))
    assert "failed: seed 0 (exit 1: deepcluster: error: loss became NaN)" in bad
    assert "| - |" in bad  # no score for a method whose every seed failed
    assert "deepcluster train" in text  # the commands are in the page


def test_mean_std():
    spec = importlib.util.spec_from_file_location("results_run2", RUNNER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.mean_std([]) == "-"
    assert module.mean_std([0.5]) == "0.500"
    assert module.mean_std([0.4, 0.6]) == "0.500 ± 0.141"
