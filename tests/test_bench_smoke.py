"""The benchmark report writer (tests/bench/report.py) on made-up figures: no timing here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).parent / "bench"


def _load(name: str):
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


MACHINE = {
    "cpu": "Test CPU",
    "cores": 2,
    "threads": 2,
    "torch": "2.x",
    "python": "3.11",
    "load_average": [0.1, 0.2, 0.3],
    "date": "2026-01-01 00:00 UTC",
}
TRAINER = {
    "params": 3_000_000,
    "rows": 25_600,
    "data": "fake",
    "repeats": 5,
    "peak_gflops": 100.0,
    "trainer_samples_per_s": 3000.0,
    "loop_samples_per_s": 2900.0,
    "trainer_peak_fraction": 0.54,
    "loop_peak_fraction": 0.52,
    "trainer_over_loop": 0.967,
    "adam_default_over_fused": 1.25,
    "fused_available": True,
    "tiny_step_us_trainer": 210.0,
    "tiny_step_us_loop": 180.0,
}
METHODS = {
    "data": "fake",
    "rows": 70_000,
    "threads": 2,
    "epochs": 1,
    "peak_gflops": 100.0,
    "pretrain": {"per_epoch": 15.0, "peak_fraction": 0.6, "params": 3_000_000, "loss": "bce"},
    "methods": {
        "dec": {
            "stage": "dec",
            "per_epoch": 6.0,
            "one_off": 4.0,
            "rows": 70_000,
            "scale": 1.0,
            "aux_stages": {},
        },
        "dgg": {
            "stage": "dgg",
            "per_epoch": 280.0,
            "one_off": 9.0,
            "rows": 10_000,
            "scale": 7.0,
            "aux_stages": {"dgg-classifier": [0.5]},
        },
        "cm": {"error": "RuntimeError: boom"},
        "vade": {"skipped": "time box (700 s) spent"},
    },
}
ASSIGN = {
    "threads": 2,
    "data": "fake rows",
    "small": {
        "rows": 40_000,
        "value_bytes": 40_000 * 3136,
        "file_bytes": 10**8,
        "rows_per_s": 9000.0,
        "peak_rss": 900 * 2**20,
        "exit_code": 0,
        "rows_written": 40_000,
    },
    "big": {
        "rows": 400_000,
        "value_bytes": 400_000 * 3136,
        "file_bytes": 10**9,
        "rows_per_s": 10000.0,
        "peak_rss": 1500 * 2**20,
        "exit_code": 0,
        "rows_written": 400_000,
    },
}


def test_report_shows_ratios_failures_and_the_memory_goal():
    report = _load("report")
    parts = {
        "trainer": {"status": "ok", "result": TRAINER},
        "methods": {"status": "timeout", "wall": 780.0, "result": METHODS},
        "clustpy": {"status": "ok", "result": {"available": False, "reason": "ImportError: x"}},
        "assign": {"status": "ok", "result": ASSIGN},
        "knn": {"status": "error", "note": "Traceback: boom", "result": None},
    }
    page = report.render(parts, machine=MACHINE, quick=True)
    assert "**Quick mode**" in page
    assert "| CPU | Test CPU |" in page
    assert "**0.967x**" in page  # trainer / loop, from this run's figures
    assert "**1.25x** the time" in page  # default / fused Adam
    assert "| dgg | dgg | 280.00 | 9.00 | dgg-classifier 0.50 | measured on 10,000 rows" in page
    assert "failed: RuntimeError: boom" in page
    assert "skipped: time box" in page
    assert "Stopped at its time box after 780 s" in page
    assert "reference, not measured in this run" in page
    assert "| DEC | 8.3 | 6.00 |" in page  # reference ClustPy beside our measured dec
    assert "Peak **over** 1 GiB (1,500 MiB" in page
    assert "_Failed: Traceback: boom_" in page
    assert "## 6. Start-up time\n\n_Not run._" in page


def test_report_compares_with_clustpy_measured_in_the_same_run():
    report = _load("report")
    clustpy = {
        "available": True,
        "version": "0.0.3",
        "data": "fake",
        "threads": 2,
        "pretrain": {"per_epoch": 20.0, "peak_fraction": 0.5},
        "methods": {"DEC": {"per_epoch": 8.0, "one_off": 3.0}},
    }
    parts = {
        "methods": {"status": "ok", "result": METHODS},
        "clustpy": {"status": "ok", "result": clustpy},
    }
    page = report.render(parts, machine=MACHINE, quick=False)
    assert "Quick mode" not in page
    assert "| DEC | 8.00 | 3.00 | 6.00 | 0.75x |" in page
    assert "| pretraining (0.50 of peak) | 20.00 | — | 15.00 | 0.75x |" in page
    assert "DEC, ours with" not in page  # no variant measured, no row
    batch = {"stage": "dec", "per_epoch": 4.0, "one_off": 1.0, "rows": 70_000, "scale": 1.0}
    with_variant = {**METHODS, "methods": {**METHODS["methods"], "dec target=batch": batch}}
    parts["methods"] = {"status": "ok", "result": with_variant}
    page = report.render(parts, machine=MACHINE, quick=False)
    assert "| dec target=batch | dec | 4.00 |" in page
    assert "| DEC, ours with `--set target=batch` | 8.00 | | 4.00 | 0.50x |" in page


def test_batched_speedup_is_read_from_the_script_output():
    run = _load("run")
    out = "noise\nk=10 batch=256 D=784: batched 10.0 ms, looped 25.0 ms, speed-up 2.50x\n"
    assert run.parse_batched(out)["speedup"] == 2.5
    assert run.parse_batched("crashed")["speedup"] is None


def test_report_shows_the_two_process_speedup():
    report = _load("report")
    fig = {"one": {"wall": 30.0, "s_per_epoch": 4.0}, "two": {"wall": 33.0, "s_per_epoch": 2.5}}
    result = {
        "available": True,
        "data": "fake",
        "rows": 20_000,
        "epochs": 3,
        "threads": 2,
        "cores": 2,
        "figures": {"pretrain": {**fig, "speedup_epoch": 1.6, "speedup_wall": 0.91}},
    }
    page = report.render(
        {"distributed": {"status": "ok", "result": result}}, machine=MACHINE, quick=False
    )
    assert "## 7. One process against torchrun with two" in page
    assert "| pretrain | 4.00 | 2.50 | 1.60x | 0.91x |" in page


def test_report_shows_the_subnormal_slowdown():
    report = _load("report")
    result = {
        "threads": 1,
        "rows": 1250,
        "repeats": 5,
        "fraction": 0.22,
        "arch": "784-500-500-2000-10",
        "seconds": {"normal": 0.1, "subnormal": 6.0, "flushed": 0.105},
        "subnormal_over_flushed": 6.0 / 0.105,
        "flushed_over_normal": 1.05,
    }
    page = report.render(
        {"denormals": {"status": "ok", "result": result}}, machine=MACHINE, quick=False
    )
    assert "## 8. Subnormal weights: flushed to zero or not" in page
    assert "| subnormal weights, PyTorch's default CPU mode | 6.000 |" in page
    assert "Default / flushed: **57.1x**; flushed / no subnormals: 1.05x." in page
    missing = report.render({}, machine=MACHINE, quick=False)
    assert "## 8. Subnormal weights" in missing and "_Not run._" in missing


def test_report_shows_the_thread_settings_under_load():
    report = _load("report")
    row = {"spinning": 2.5, "default": 0.05, "auto": 0.04, "one": 0.04}
    result = {
        "cpus": 2,
        "epochs": {"small": 8, "large": 3},
        "large_data": "fake (4,000 rows)",
        "seconds": {
            "quiet": {"small": {**row, "spinning": 0.03}, "large": row},
            "one busy process": {"small": row, "large": row},
        },
    }
    page = report.render({"load": {"status": "ok", "result": result}}, machine=MACHINE, quick=False)
    assert "## 9. Beside other work: thread settings under load" in page
    assert "| model | setting | quiet | one busy process |" in page
    assert "| small | spinning (libgomp's default) | 0.030 | 2.500 |" in page
    assert (
        "- small: spinning / no option **50.00x (one busy process)**; no option / auto 1.25x"
        in page
    )
    missing = report.render({}, machine=MACHINE, quick=False)
    assert "## 9. Beside other work" in missing and "_Not run._" in missing


def test_bench_methods_times_shallow_methods_without_the_autoencoder(tmp_path):
    """bench_methods passes its shared autoencoder only to methods that read one: ``fit``
    refuses ``--pretrained`` for kmeans and cm, and the bench once reported them as failed."""
    import numpy as np

    from deepcluster_cli.engine.checkpoint import load_checkpoint
    from deepcluster_cli.io import Scaler
    from deepcluster_cli.pipeline import PretrainConfig, pretrain, save_autoencoder

    bench = _load("bench_methods")
    x = np.random.default_rng(0).random((120, 6)).astype(np.float32)
    cfg = PretrainConfig(arch=(8,), latent=2, epochs=1)
    ae, history = pretrain(x, cfg)
    path = str(tmp_path / "ae.pt")
    schema = {"feature_names": None, "n_features": 6}
    save_autoencoder(path, ae, cfg, history=history, schema=schema, scaler=Scaler())
    ckpt = load_checkpoint(path, kinds=("autoencoder",))
    got = {m: bench.time_method(m, x, ckpt, epochs=1, quick=True) for m in ("kmeans", "cm", "aekm")}
    assert got["cm"]["stage"] == "cm" and got["cm"]["per_epoch"] > 0
    assert got["kmeans"]["wall"] > 0 and got["aekm"]["wall"] > 0
