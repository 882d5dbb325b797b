"""Multi-process training under torchrun (gloo, 2 processes on the CPU) and sharded assign.

The torchrun tests start real process groups: each costs a few seconds of interpreter and
rendezvous start-up, so they exercise several things per launch.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from deepcluster_cli.engine.launch import block_bounds, parse_shard
from deepcluster_cli.errors import UsageError
from deepcluster_cli.metrics import external_scores

HERE = Path(__file__).parent


def torchrun(*args, cwd, timeout=420, env_extra=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    return subprocess.run(
        [*cmd, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_block_bounds_cover_every_row_once_in_order():
    for n in (0, 1, 5, 23, 100):
        for parts in (1, 2, 3, 7):
            bounds = [block_bounds(n, i, parts) for i in range(parts)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            sizes = [hi - lo for lo, hi in bounds]
            assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("text", ["2/2", "-1/2", "1", "a/b", "0/0", "1/"])
def test_parse_shard_refuses_bad_values(text):
    with pytest.raises(UsageError, match="--shard"):
        parse_shard(text)


def test_parse_shard():
    assert parse_shard("0/1") == (0, 1) and parse_shard("3/4") == (3, 4)


@pytest.fixture(scope="module")
def worker_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    root = HERE.parent.parent
    proc = torchrun(HERE / "dist_worker.py", out, cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1)]


def test_two_ranks_train_the_same_model_as_one_process(worker_results):
    import importlib.util

    spec = importlib.util.spec_from_file_location("dist_worker", HERE / "dist_worker.py")
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    one = worker.single()
    r0, r1 = worker_results
    for key, value in one["state"].items():
        # rank 1 started from other parameters: it must have taken rank 0's
        assert torch.equal(r0["state"][key], r1["state"][key])
        # shard-weighted gradients = the global batch's gradient (4/3 rows and 1/1 rows)
        torch.testing.assert_close(r0["state"][key], value, rtol=1e-4, atol=1e-5)
    assert r0["losses"] == r1["losses"]
    np.testing.assert_allclose(r0["losses"], one["losses"], rtol=1e-4)


def test_a_stop_on_one_rank_stops_every_rank_at_the_same_step(worker_results):
    r0, r1 = worker_results
    assert r0["stopped"] is not None and r0["stopped"] == r1["stopped"]
    assert r0["stopped"]["signum"] == 15  # rank 0 reports rank 1's SIGTERM
    # asked after step 6 (a hook runs after the step's exchange), seen at the next exchange:
    # both stop after step 7, the 3rd of epoch 2 (4 batches an epoch)
    assert r0["stopped"]["steps"] == 7
    assert r0["stopped"]["epoch"] == 1


def test_gather_sharded_apply_kmeans_and_knn_agree_across_ranks(worker_results):
    r0, r1 = worker_results
    expected = torch.tensor([0.0, 1, 2, 10, 11, 12, 13])[:, None]
    assert torch.equal(r0["gathered"], expected) and torch.equal(r1["gathered"], expected)
    x = torch.randn(11, 2, generator=torch.Generator().manual_seed(3))
    assert torch.equal(r0["sharded"], x * 2 + 1) and torch.equal(r1["sharded"], x * 2 + 1)
    assert torch.equal(r0["centroids"], r1["centroids"]) and r0["inertia"] == r1["inertia"]
    from deepcluster_cli.methods.kmeans import kmeans_centroids
    from deepcluster_cli.nn.knn import knn_exact

    z = torch.randn(60, 2, generator=torch.Generator().manual_seed(4))
    c, _ = kmeans_centroids(z, 3, seed=5, n_init=1)
    torch.testing.assert_close(r0["centroids"], c)  # rank 0's run, not rank 1's seed
    nb = knn_exact(z, 4)
    for r in (r0, r1):
        assert torch.equal(r["knn"][0], nb.indices)
        torch.testing.assert_close(r["knn"][1], nb.sq_distances)


def test_dcn_centroid_step_adds_the_ranks_counts_and_sums(worker_results):
    from deepcluster_cli.methods.dcn import update_centroids

    zs = torch.randn(9, 2, generator=torch.Generator().manual_seed(6))
    ss = torch.tensor([0, 1, 1, 2, 0, 0, 1, 2, 2])
    c, n = update_centroids(torch.ones(3, 2), torch.full((3,), 2.0), zs, ss)
    for r in worker_results:
        torch.testing.assert_close(r["dcn"][0], c)
        assert torch.equal(r["dcn"][1], n)


@pytest.fixture(scope="module")
def digits_file(tmp_path_factory):
    from sklearn.datasets import load_digits

    d = load_digits()
    df = pd.DataFrame((d.data / 16.0).astype(np.float32), columns=[f"p{i}" for i in range(64)])
    df["label"] = d.target
    path = tmp_path_factory.mktemp("digits") / "digits.csv"
    df.to_csv(path, index=False)
    return path


def _acc(labels_csv, truth):
    return external_scores(truth, pd.read_csv(labels_csv)["cluster"].to_numpy())["acc"]


CNET = [
    "--set",
    "cm_epochs=5",
    "--set",
    "kmeans_n_init=2",
    "--set",
    "start=pretrained",
    "--set",
    "lam=0.1",
    "--set",
    "alpha=64",
    "--epochs",
    "15",
    "--batch-size",
    "64",
]  # fmt: skip (one process reaches ACC ~.67 on digits with these in 3 s)


def test_torchrun_pretrain_and_train_cnet_cluster_like_one_process(digits_file, tmp_path):
    """The issue's check: 2 processes (gloo) pretrain, then train -m cnet from that AE; the
    result clusters digits as well as the same commands in one process, within noise."""
    data = ["--label-column", "label"]
    pre = ["--arch", "64", "--latent", "8", "--epochs", "25", "--batch-size", "64"]
    truth = pd.read_csv(digits_file)["label"].to_numpy()
    accs = {}
    for mode in ("one", "two"):
        ae, model, labels = (
            tmp_path / f"{mode}-ae.pt",
            tmp_path / f"{mode}.pt",
            tmp_path / f"{mode}.csv",
        )
        steps = [
            ["pretrain", digits_file, *data, *pre, "-o", ae],
            ["train", digits_file, *data, "-m", "cnet", "-k", 10, "--pretrained", ae, *CNET,
             "-o", model, "--labels", labels],
        ]  # fmt: skip
        for step in steps:
            if mode == "two":
                proc = torchrun("-m", "deepcluster_cli", *step, cwd=tmp_path)
            else:
                cmd = [sys.executable, "-m", "deepcluster_cli", *map(str, step), "--threads", "1"]
                proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
            assert proc.returncode == 0, proc.stderr[-3000:]
            if mode == "two":  # rank 0 alone logs and writes
                assert proc.stderr.count("wrote ") == 1, proc.stderr[-2000:]
        accs[mode] = _acc(labels, truth)
    # digits k-means++ reaches .79; one seed of each, so "within noise" is a wide band
    assert accs["one"] > 0.55 and accs["two"] > 0.55, accs
    assert abs(accs["one"] - accs["two"]) < 0.12, accs
    assert not list(tmp_path.glob("*.resume")) and not list(tmp_path.glob("*.tmp*"))


def test_torchrun_max_time_saves_one_resumable_state_and_resumes(digits_file, tmp_path):
    args = ["pretrain", digits_file, "--label-column", "label", "--arch", "32", "--latent", "4",
            "--batch-size", "32", "-o", tmp_path / "ae.pt"]  # fmt: skip
    proc = torchrun(
        "-m", "deepcluster_cli", *args, "--epochs", "20", "--max-time", "1", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "ae.pt.resume").exists() and not (tmp_path / "ae.pt").exists()
    assert proc.stderr.count("saved a resumable state") == 1
    proc = torchrun("-m", "deepcluster_cli", *args, "--epochs", "20", "--resume", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "ae.pt").exists() and not (tmp_path / "ae.pt.resume").exists()


@pytest.mark.parametrize(
    ("argv", "code", "barrier"),
    [(["methods"], 0, True), (["evaluate", "no-such-labels.csv", "--truth", "t.csv"], 2, False)],
)
def test_main_leaves_the_process_group_with_a_barrier_only_after_success(
    monkeypatch, tmp_path, argv, code, barrier
):
    """A rank that exits with the group's threads alive can abort (SIGABRT) and fail the
    launch, so main() destroys the group; after an error it skips the barrier, which the
    other ranks might never reach."""
    from deepcluster_cli import cli as cli_module

    calls = []
    fake = type(sys)("fake_distributed")
    fake.shutdown = lambda ok, **kw: calls.append(ok)
    monkeypatch.setitem(sys.modules, "deepcluster_cli.engine.distributed", fake)
    monkeypatch.setattr(sys, "argv", ["deepcluster", *argv])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        cli_module.main()
    assert exc.value.code == code
    assert calls == [barrier]


def test_shutdown_leaves_the_group_even_when_a_failed_peer_breaks_the_barrier(monkeypatch):
    from deepcluster_cli.engine import distributed

    dist = torch.distributed
    calls = []

    def broken_barrier():
        calls.append("barrier")
        raise RuntimeError("Connection closed by peer")

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "barrier", broken_barrier)
    monkeypatch.setattr(dist, "destroy_process_group", lambda: calls.append("destroy"))
    distributed.shutdown(True)
    assert calls == ["barrier", "destroy"]
    calls.clear()
    distributed.shutdown(False)
    assert calls == ["destroy"]


def test_a_command_ends_its_rank_right_after_leaving_the_group_only_after_success(monkeypatch):
    """The interpreter's own teardown could still abort a rank (SIGABRT) with every file
    written: after a success the rank flushes its streams and ends at once with status 0;
    after an error it leaves the group and the error goes on to its exit code."""
    from deepcluster_cli.engine import distributed

    dist = torch.distributed
    calls = []
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "barrier", lambda: calls.append("barrier"))
    monkeypatch.setattr(dist, "destroy_process_group", lambda: calls.append("destroy"))
    monkeypatch.setattr(sys.stdout, "flush", lambda: calls.append("flush"), raising=False)
    monkeypatch.setattr(distributed.os, "_exit", lambda code: calls.append(("exit", code)))
    distributed.shutdown(True, exit_process=True)
    assert calls[:2] == ["barrier", "destroy"] and calls[-1] == ("exit", 0)
    assert "flush" in calls
    calls.clear()
    distributed.shutdown(False, exit_process=True)
    assert calls == ["destroy"]
    calls.clear()
    distributed.shutdown(True)
    assert calls == ["barrier", "destroy"]


def test_one_process_commands_refuse_to_run_under_torchrun(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    for args in (["assign", "m.pt", "d.csv"], ["generate", "m.pt", "-o", tmp_path / "g.csv"],
                 ["evaluate", "l.csv", "--truth", "t.csv"]):  # fmt: skip
        res = cli(*args)
        assert res.exit_code == 2
        assert "runs in one process, not under torchrun" in res.stderr
        assert res.stderr.startswith("deepcluster: error: rank 1: ")


def test_train_without_torchrun_env_is_refused_cleanly(cli, digits_csv, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for var in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    res = cli("train", digits_csv, "--label-column", "label", "--id-column", "image_id",
              "-m", "kmeans", "-k", 3, "-o", tmp_path / "m.pt")  # fmt: skip
    assert res.exit_code == 2 and "start with torchrun" in res.stderr
    assert not (tmp_path / "m.pt").exists()


def test_more_ranks_than_gpus_on_a_node_is_refused_before_training(monkeypatch):
    """NCCL needs a GPU per rank: 2 processes on a 1-GPU node get a usage error at the start,
    not a collective that fails mid-run."""
    from deepcluster_cli.engine import distributed
    from deepcluster_cli.errors import UsageError

    env = {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29555"}  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: pytest.fail("reached set_device"))
    with pytest.raises(UsageError, match=r"starts 2 processes on this node but it has 1 GPU:"):
        distributed.init_from_env(torch.device("cuda"))
    monkeypatch.setenv("LOCAL_RANK", "0")  # rank 0 of the same launch is refused too
    with pytest.raises(UsageError, match="--nproc_per_node 1"):
        distributed.gpu_of_rank()
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)  # one GPU each: rank 1 -> cuda:1
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.gpu_of_rank() == 1


@pytest.mark.parametrize("shard_by", ["block", "stride"])
@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".npy"])
def test_shards_joined_equal_the_unsharded_output(cli, digits, tmp_path, shard_by, suffix):
    x, y = digits
    data = tmp_path / f"d{suffix}"
    if suffix == ".npy":
        np.save(data, x)
    else:
        df = pd.DataFrame(x, columns=[f"p{i}" for i in range(x.shape[1])])
        df.to_csv(data, index=False) if suffix == ".csv" else df.to_parquet(data)
    model = tmp_path / "m.pt"
    assert cli("train", data, "-m", "kmeans", "-k", 10, "-o", model).exit_code == 0
    whole = tmp_path / "all.csv"
    assert cli("assign", model, data, "-o", whole).exit_code == 0
    parts = []
    for i in range(3):
        out = tmp_path / f"s{i}.parquet"
        res = cli("assign", model, data, "-o", out, "--shard", f"{i}/3", "--shard-by", shard_by,
                  "--chunk-rows", 250)  # fmt: skip
        assert res.exit_code == 0, res.stderr
        parts.append(pd.read_parquet(out))
    joined = pd.concat(parts, ignore_index=True)
    if shard_by == "stride":
        assert list(parts[1]["id"][:3]) == [1, 4, 7]
        joined = joined.sort_values("id", ignore_index=True)
    else:
        assert [len(p) for p in parts] == [599, 599, 599]
    pd.testing.assert_frame_equal(joined, pd.read_csv(whole), check_dtype=False)


def test_more_shards_than_rows_gives_empty_shards(cli, blobs, tmp_path):
    x, _ = blobs
    data = tmp_path / "few.npy"
    np.save(data, x[:2])
    model = tmp_path / "m.pt"
    assert cli("train", data, "-m", "kmeans", "-k", 2, "-o", model).exit_code == 0
    sizes = []
    for i in range(4):
        out = tmp_path / f"s{i}.csv"
        assert cli("assign", model, data, "-o", out, "--shard", f"{i}/4").exit_code == 0
        sizes.append(len(pd.read_csv(out)))
    assert sizes == [1, 1, 0, 0]


def test_block_shard_of_stdin_is_refused(cli, tmp_path):
    res = cli("assign", tmp_path / "m.pt", "-", "--shard", "0/2", input="a\n1\n")
    assert res.exit_code == 2 and "--shard-by stride" in res.stderr


def test_shard_by_without_a_shard_is_refused_not_dropped(cli, tmp_path):
    res = cli("assign", tmp_path / "m.pt", tmp_path / "d.csv", "--shard-by", "stride")
    assert res.exit_code == 2
    assert res.stderr.strip().splitlines() == [
        "deepcluster: error: --shard-by stride splits the rows of a --shard I/N: give --shard"
    ]
