"""The five commands end to end through Typer's CliRunner, plus one real subprocess per path
that matters for pipes and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

COLS = ["--id-column", "image_id", "--label-column", "label"]
SMALL_AE = ["--arch", "64", "--latent", "8", "--epochs", "5", "--batch-size", "64"]


@pytest.fixture
def trained(cli, digits_csv, tmp_path):
    """pretrain -> train -m aekm on digits, small and fast."""
    ae, model = tmp_path / "ae.pt", tmp_path / "model.pt"
    r = cli("pretrain", digits_csv, *COLS, "--scale", "minmax", *SMALL_AE, "-o", ae, "--quiet")
    assert r.exit_code == 0, r.stderr
    r = cli(
        "train",
        digits_csv,
        *COLS,
        "-m",
        "aekm",
        "-k",
        10,
        "--pretrained",
        ae,
        "-o",
        model,
        "--labels",
        tmp_path / "train.csv",
        "--quiet",
    )
    assert r.exit_code == 0, r.stderr
    return model


def test_assign_writes_id_cluster_csv_to_stdout_only(cli, trained, digits_csv):
    r = cli("assign", trained, digits_csv, *COLS)
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "id,cluster"
    assert lines[1].startswith("img0000,")
    assert len(lines) == 1798


def test_assign_reproduces_training_labels_and_proba_rows_sum_to_one(
    cli, trained, digits_csv, tmp_path
):
    out = tmp_path / "labels.parquet"
    r = cli("assign", trained, digits_csv, *COLS, "--proba", "-o", out)
    assert r.exit_code == 0, r.stderr
    df = pd.read_parquet(out)
    assert list(df.columns[:2]) == ["id", "cluster"] and "p9" in df.columns
    np.testing.assert_allclose(df[[f"p{i}" for i in range(10)]].sum(axis=1), 1.0, rtol=1e-4)
    train = pd.read_csv(tmp_path / "train.csv")
    np.testing.assert_array_equal(train["cluster"].to_numpy(), df["cluster"].to_numpy())


def test_evaluate_json_scores_and_sizes(cli, trained, digits_csv, tmp_path):
    labels = tmp_path / "train.csv"
    r = cli(
        "evaluate", labels, "--truth", digits_csv, "--label-column", "label", "--format", "json"
    )
    assert r.exit_code == 0, r.stderr
    rep = json.loads(r.stdout)
    assert set(rep["scores"]) == {"acc", "nmi", "ari", "purity"}
    assert 0.3 < rep["scores"]["acc"] <= 1.0
    assert sum(rep["sizes"].values()) == 1797


def test_evaluate_reads_the_npy_labels_assign_writes(cli, trained, digits_csv, tmp_path):
    """``assign -o labels.npy`` writes the labels alone; evaluate takes them with no
    column option and scores them as the CSV from training."""
    npy = tmp_path / "labels.npy"
    r = cli("assign", trained, digits_csv, *COLS, "-o", npy)
    assert r.exit_code == 0, r.stderr
    scores = []
    for labels in (npy, tmp_path / "train.csv"):
        r = cli(
            "evaluate", labels, "--truth", digits_csv, "--label-column", "label", "--format", "json"
        )
        assert r.exit_code == 0, r.stderr
        scores.append(json.loads(r.stdout)["scores"])
    assert scores[0] == scores[1]


def test_evaluate_names_cluster_column_when_labels_column_is_unclear(cli, digits_csv, tmp_path):
    labels = tmp_path / "renamed.csv"
    labels.write_text("id,c\n" + "".join(f"{i},{i % 3}\n" for i in range(1797)))
    r = cli("evaluate", labels, "--truth", digits_csv, "--label-column", "label")
    assert r.exit_code == 2
    assert "pass --cluster-column" in r.stderr and "Traceback" not in r.stderr
    r = cli(
        "evaluate",
        labels,
        "--cluster-column",
        "c",
        "--truth",
        digits_csv,
        "--label-column",
        "label",
    )
    assert r.exit_code == 0, r.stderr


def test_evaluate_with_data_adds_internal_scores(cli, trained, digits_csv, tmp_path):
    r = cli(
        "evaluate",
        tmp_path / "train.csv",
        "--truth",
        digits_csv,
        "--label-column",
        "label",
        "--data",
        digits_csv,
        "--id-column",
        "image_id",
        "--format",
        "csv",
    )
    assert r.exit_code == 0, r.stderr
    assert "silhouette," in r.stdout and "calinski_harabasz," in r.stdout


def test_evaluate_data_without_truth_leaves_the_label_column_out(cli, digits_csv, tmp_path):
    # docs/formats.md: --label-column is never a feature, evaluate --data included (the
    # Makefile example's TRUTH= passes --data with --label-column)
    labels = tmp_path / "l.csv"
    labels.write_text("id,cluster\n" + "".join(f"{i},{i % 3}\n" for i in range(1797)))
    pixels = ",".join(f"px{i}" for i in range(64))
    scores = []
    for opts in (["--label-column", "label"], ["--columns", pixels]):
        r = cli("evaluate", labels, "--data", digits_csv, "--id-column", "image_id", *opts,
                "--format", "json")  # fmt: skip
        assert r.exit_code == 0, r.stderr
        scores.append(json.loads(r.stdout)["scores"])
    assert scores[0] == scores[1]


def test_generate_centroids_and_interpolation(cli, trained, tmp_path):
    out = tmp_path / "c.csv"
    r = cli("generate", trained, "--mode", "centroids", "-o", out)
    assert r.exit_code == 0, r.stderr
    df = pd.read_csv(out)
    assert len(df) == 10 and df.columns[0] == "cluster" and df.shape[1] == 65
    # the fixture's pixels lie in [0, 1]: the scale is checked on raw pixels in
    # test_generated_rows_are_mapped_back_to_the_input_scale
    assert df.iloc[:, 1:].to_numpy().max() <= 1.0 + 1e-4
    out2 = tmp_path / "i.npy"
    r = cli("generate", trained, "--mode", "interpolate", "--between", "0,3", "-n", 7, "-o", out2)
    assert r.exit_code == 0, r.stderr
    assert np.load(out2).shape == (7, 64)


def test_generate_sample_is_refused_for_aekm(cli, trained, tmp_path):
    r = cli("generate", trained, "--mode", "sample", "-o", tmp_path / "s.csv")
    assert r.exit_code == 2
    assert "offers centroids, interpolate" in r.stderr
    assert not (tmp_path / "s.csv").exists()


def test_info_json_describes_the_model(cli, trained):
    r = cli("info", trained, "--format", "json")
    assert r.exit_code == 0, r.stderr
    meta = json.loads(r.stdout)
    assert meta["method"] == "aekm" and meta["n_clusters"] == 10 and meta["n_features"] == 64
    assert meta["scale"] == "minmax" and meta["feature_names"][0] == "px0"
    # the network trained from --pretrained (SMALL_AE), not the config's default arch
    assert meta["network"] == "64-64-8 (relu, bce)"
    assert meta["config"]["arch"] == [500, 500, 2000]


def test_methods_lists_registered(cli):
    r = cli("methods", "--format", "json")
    assert r.exit_code == 0
    names = [m["name"] for m in json.loads(r.stdout)]
    assert "kmeans" in names and "aekm" in names


def test_methods_with_a_name_shows_its_settings_defaults_and_what_each_preset_changes(cli):
    r = cli("methods", "dcn", "--format", "json")
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["name"] == "dcn" and d["settings"]["lam"] == 1.0
    assert d["settings"]["arch"] == [500, 500, 2000]
    assert d["presets"]["digits"] == {
        "arch": [500, 500],
        "pretrain_epochs": 200,
        "epochs": 150,
        "lam": 0.1,
    }
    assert "momentum" not in d["presets"]["mnist"]  # the preset's 0.9 is the default
    r = cli("methods", "dcn")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    header = next(line for line in lines if line.startswith("setting"))
    assert header.split() == ["setting", "default", "mnist", "digits"]
    rows = {line.split()[0]: line for line in lines if line.startswith(("arch ", "lam "))}
    assert rows["arch"].split() == ["arch", "500,500,2000", "500,500"]
    assert rows["lam"].split() == ["lam", "1", "2", "0.1"]
    # a method without presets has the defaults column only
    r = cli("methods", "kmeans")
    assert r.exit_code == 0 and "n_init" in r.stdout and "--preset NAME" not in r.stdout


def test_methods_with_an_unknown_name_is_a_usage_error(cli):
    r = cli("methods", "nosuch")
    assert r.exit_code == 2
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("deepcluster: error: unknown method 'nosuch'; choose one of")
    assert "dcn" in line and "Traceback" not in r.stderr


def test_kmeans_on_digits_reaches_known_accuracy(cli, digits_csv, tmp_path):
    labels = tmp_path / "l.csv"
    r = cli(
        "train",
        digits_csv,
        *COLS,
        "-m",
        "kmeans",
        "-k",
        10,
        "-o",
        tmp_path / "m.pt",
        "--labels",
        labels,
        "--quiet",
    )
    assert r.exit_code == 0, r.stderr
    r = cli(
        "evaluate", labels, "--truth", digits_csv, "--label-column", "label", "--format", "json"
    )
    assert json.loads(r.stdout)["scores"]["acc"] > 0.75  # k-means++ on digits: about 0.79


@pytest.mark.parametrize(
    "args, message",
    [
        (["-m", "nosuch", "-k", "3"], "unknown method"),
        (["-m", "kmeans", "-k", "1"], "at least 2 clusters"),
        (["-m", "kmeans", "-k", "5000"], "more clusters than rows"),
        (["-m", "kmeans", "-k", "3", "--set", "bogus=1"], "unknown setting 'bogus'"),
        (["-m", "kmeans", "-k", "3", "--set", "n_init=abc"], "not a valid int"),
        (["-m", "kmeans", "-k", "3", "--preset", "mnist"], "presets"),
        (["-m", "kmeans", "-k", "3", "--scale", "log"], "scale"),
    ],
)
def test_bad_train_options_exit_2_with_one_line(cli, digits_csv, tmp_path, args, message):
    out = tmp_path / "m.pt"
    r = cli("train", digits_csv, *COLS, *args, "-o", out)
    assert r.exit_code == 2, r.stderr
    assert message in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_assign_column_mismatch_names_the_difference(cli, trained, tmp_path, digits):
    x, _ = digits
    df = pd.DataFrame(x[:, :60], columns=[f"px{i}" for i in range(60)])
    path = tmp_path / "less.csv"
    df.to_csv(path, index=False)
    r = cli("assign", trained, path)
    assert r.exit_code == 2
    assert "px60" in r.stderr


def test_assign_with_a_corrupt_model_exits_2(cli, tmp_path, digits_csv):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04garbage")
    r = cli("assign", bad, digits_csv, *COLS)
    assert r.exit_code == 2 and "Traceback" not in r.stderr


def test_existing_model_untouched_when_training_fails(cli, digits_csv, tmp_path):
    out = tmp_path / "m.pt"
    out.write_bytes(b"previous model")
    r = cli(
        "train",
        digits_csv,
        *COLS,
        "-m",
        "aekm",
        "-k",
        10,
        "--set",
        "arch=16",
        "--set",
        "latent=2",
        "--set",
        "pretrain_epochs=2",
        "--set",
        "pretrain_lr=1e12",
        "--set",
        "recon_loss=mse",
        "-o",
        out,
        "--quiet",
    )
    assert r.exit_code == 1, r.stderr
    assert "a lower learning rate (--lr of deepcluster pretrain; --set pretrain_lr=X" in r.stderr
    assert out.read_bytes() == b"previous model"
    assert (tmp_path / "m.pt.resume").exists()  # the state before the failing epoch


def run(*args, input=None):
    return subprocess.run(
        [sys.executable, "-m", "deepcluster_cli", *map(str, args)],
        capture_output=True,
        text=True,
        input=input,
        timeout=300,
    )


def test_subprocess_pipe_into_head_exits_cleanly(trained, digits_csv):
    cmd = (
        f"{sys.executable} -m deepcluster_cli assign {trained} {digits_csv} "
        f"--id-column image_id --label-column label | head -3"
    )
    p = subprocess.run(
        ["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, timeout=300
    )
    assert p.stdout.splitlines()[0] == "id,cluster" and len(p.stdout.splitlines()) == 3
    assert "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr


def test_subprocess_stdin_csv_and_exit_codes(trained, digits_csv):
    text = digits_csv.read_text()
    p = run(
        "assign", trained, "-", "--id-column", "image_id", "--label-column", "label", input=text
    )
    assert p.returncode == 0, p.stderr
    assert len(p.stdout.splitlines()) == 1798
    p = run("assign", trained, "/nonexistent.csv")
    assert p.returncode == 2 and p.stderr.startswith("deepcluster: error:")
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize("command", ["pretrain", "train", "assign", "evaluate", "generate"])
def test_help_shows_the_defaults_written_in_it(cli, command, monkeypatch):
    """Rich reads '[default: 0]' as a markup tag and drops it unless escaped: every
    '[default: ...]' written in a help string must reach the user."""
    import re
    import typing

    from deepcluster_cli.cli import app

    typer_command = next(c for c in app.registered_commands if c.callback.__name__ == command)
    hints = typing.get_type_hints(typer_command.callback, include_extras=True)
    written = []
    for param in hints.values():
        for meta in getattr(param, "__metadata__", ()):
            help_text = (getattr(meta, "help", None) or "").replace("\\[", "[")
            written += re.findall(r"\[default: ([^\]]+)\]", help_text)
    assert written, command  # every command has at least one
    monkeypatch.setenv("COLUMNS", "1000")  # one line per option: nothing wraps
    r = cli(command, "--help")
    assert r.exit_code == 0
    shown = " ".join(r.stdout.split())
    for default in written:
        assert f"[default: {' '.join(default.split())}]" in shown, default


def test_help_and_methods_do_not_import_torch():
    code = (
        "import sys; from deepcluster_cli.cli import app; "
        "from typer.testing import CliRunner; r = CliRunner().invoke(app, ['methods']); "
        "assert r.exit_code == 0; print('torch' in sys.modules)"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.stdout.strip() == "False", p.stderr


def test_on_a_terminal_training_shows_a_rich_bar_with_the_loss_and_the_time_left(
    digits_csv, tmp_path
):
    """spec/cli.md: long work shows a progress bar (Rich) on stderr with epoch, loss parts and
    ETA when stderr is a terminal (every other test has a pipe there: one line per epoch)."""
    import os
    import pty

    main, child = pty.openpty()
    cmd = [sys.executable, "-m", "deepcluster_cli", "pretrain", digits_csv,
           "--label-column", "label", "--id-column", "image_id", "-o", tmp_path / "ae.pt",
           "--epochs", 3, "--arch", 16, "--latent", 2, "--threads", 1]  # fmt: skip
    env = {**os.environ, "COLUMNS": "160", "TERM": "xterm"}
    proc = subprocess.Popen(list(map(str, cmd)), stdout=subprocess.PIPE, stderr=child, env=env)
    os.close(child)
    chunks = []
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not data:
            break
        chunks.append(data)
    os.close(main)
    assert proc.wait(timeout=120) == 0
    screen = b"".join(chunks).decode("utf-8", "replace")
    assert "━" in screen  # the bar
    assert "3/3" in screen and "loss=" in screen  # epochs and loss parts
    assert "0:00:0" in screen  # elapsed and remaining time
    assert "[pretrain] epoch" not in screen  # not the line-per-epoch log


def _digits_labels(digits_csv, path, rows=None, order=None):
    """A labels file as assign writes it (id,cluster) whose clusters are the true classes
    (of ``rows``, in ``order``)."""
    d = pd.read_csv(digits_csv)[["image_id", "label"]]
    if rows is not None:
        d = d.iloc[rows]
    if order is not None:
        d = d.iloc[order]
    d.rename(columns={"image_id": "id", "label": "cluster"}).to_csv(path, index=False)
    return path


def test_evaluate_matches_rows_by_id_with_id_column(cli, digits_csv, tmp_path):
    """Labels sorted by cluster (`sort -t, -k2` of docs/getting-started.md) scored by
    position against the data's order are nonsense (ACC ~0.1, exit 0); with --id-column the
    rows are matched on the labels' id column, for --truth and --data alike."""
    order = np.argsort(pd.read_csv(digits_csv)["label"].to_numpy(), kind="stable")
    shuffled = _digits_labels(digits_csv, tmp_path / "sorted.csv", order=order)

    def scores(*opts):
        r = cli("evaluate", shuffled, *opts, "--format", "json")
        assert r.exit_code == 0, r.stderr
        return json.loads(r.stdout)["scores"]

    by_position = scores("--truth", digits_csv, "--label-column", "label")
    assert by_position["acc"] < 0.3
    by_id = scores("--truth", digits_csv, "--label-column", "label", "--id-column", "image_id")
    assert by_id["acc"] == 1.0 and by_id["ari"] == 1.0
    inner = scores("--data", digits_csv, "--label-column", "label", "--id-column", "image_id")
    in_order = _digits_labels(digits_csv, tmp_path / "ordered.csv")
    r = cli("evaluate", in_order, "--data", digits_csv, "--label-column", "label",
            "--id-column", "image_id", "--format", "json")  # fmt: skip
    assert json.loads(r.stdout)["scores"] == pytest.approx(inner, rel=1e-5)


def test_evaluate_scores_a_subset_of_rows_by_id_and_refuses_unknown_ids(cli, digits_csv, tmp_path):
    part = _digits_labels(digits_csv, tmp_path / "part.csv", rows=range(100, 400))
    opts = ["--truth", digits_csv, "--label-column", "label", "--id-column", "image_id"]
    r = cli("evaluate", part, *opts, "--format", "json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["n"] == 300 and json.loads(r.stdout)["scores"]["acc"] == 1.0
    bad = tmp_path / "bad.csv"
    bad.write_text(part.read_text().replace("img0100,", "nope,"))
    out = tmp_path / "report.json"
    r = cli("evaluate", bad, *opts, "-o", out)
    assert r.exit_code == 2 and not out.exists()
    assert r.stderr.strip().splitlines() == [
        f"deepcluster: error: 1 of the 300 ids of {bad} are not in {digits_csv} (the first: "
        "'nope'); is --id-column the column the labels' ids came from?"
    ]
    # without --id-column the rows must align one to one
    r = cli("evaluate", part, "--truth", digits_csv, "--label-column", "label")
    assert r.exit_code == 2 and "align row by row" in r.stderr


def test_evaluate_refuses_a_misspelled_id_column_and_repeated_label_ids(cli, digits_csv, tmp_path):
    """A truth table without the --id-column NAME used to fall back to matching by position:
    a typo scored sorted labels ACC ~0.1 with exit 0. A repeated id in LABELS was scored
    twice. An .npy truth has no columns and still matches by position."""
    order = np.argsort(pd.read_csv(digits_csv)["label"].to_numpy(), kind="stable")
    shuffled = _digits_labels(digits_csv, tmp_path / "sorted.csv", order=order)
    truth = ["--truth", digits_csv, "--label-column", "label"]
    r = cli("evaluate", shuffled, *truth, "--id-column", "image_ld")
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "no column 'image_ld' for --id-column" in r.stderr
    assert "leave out --id-column to match the rows by position" in r.stderr
    labels_npy = tmp_path / "truth.npy"
    np.save(labels_npy, pd.read_csv(digits_csv)["label"].to_numpy())
    in_order = _digits_labels(digits_csv, tmp_path / "ordered.csv")
    r = cli("evaluate", in_order, "--truth", labels_npy, "--id-column", "image_id",
            "--format", "json")  # fmt: skip
    assert r.exit_code == 0 and json.loads(r.stdout)["scores"]["acc"] == 1.0, r.stderr
    twice = tmp_path / "twice.csv"
    lines = in_order.read_text().splitlines(keepends=True)
    twice.write_text("".join(lines + lines[1:2]))
    r = cli("evaluate", twice, *truth, "--id-column", "image_id")
    assert r.exit_code == 2 and "is on more than one row" in r.stderr, r.stderr
    assert str(twice) in r.stderr


def test_evaluate_refuses_options_it_would_not_use(cli, digits_csv, tmp_path):
    in_order = _digits_labels(digits_csv, tmp_path / "ordered.csv")
    truth = ["--truth", digits_csv, "--label-column", "label"]
    r = cli("evaluate", in_order, *truth, "--embedding", digits_csv)
    assert r.exit_code == 2 and "--embedding draws the --report's map" in r.stderr
    r = cli("evaluate", in_order, *truth, "--model", tmp_path / "m.pt")
    assert r.exit_code == 2 and "give --data FILE or --report FILE" in r.stderr


def test_generated_rows_are_mapped_back_to_the_input_scale(cli, digits_csv, tmp_path):
    """generate undoes the scaling the model was trained with: on pixels of 3..19 (outside
    [0, 1], unlike the digits fixture) decoded centroids come back in that range, not in the
    minmax-scaled [0, 1] the network works in."""
    df = pd.read_csv(digits_csv)
    pixels = [c for c in df.columns if c.startswith("px")]
    df[pixels] = df[pixels] * 16 + 3
    data = tmp_path / "raw.csv"
    df.to_csv(data, index=False)
    ae, model = tmp_path / "ae.pt", tmp_path / "m.pt"
    tiny = ["--arch", "32", "--latent", "4", "--epochs", "3", "--threads", "1"]
    r = cli("pretrain", data, *COLS, "--scale", "minmax", *tiny, "-o", ae, "-q")
    assert r.exit_code == 0, r.stderr
    r = cli("train", data, *COLS, "-m", "aekm", "-k", 4, "--pretrained", ae, "-o", model, "-q")
    assert r.exit_code == 0, r.stderr
    out = tmp_path / "c.csv"
    r = cli("generate", model, "--mode", "centroids", "-o", out)
    assert r.exit_code == 0, r.stderr
    x = pd.read_csv(out)[pixels].to_numpy()
    lo, hi = df[pixels].min().to_numpy(), df[pixels].max().to_numpy()
    assert x.max() > 5  # not left in [0, 1]
    varies = hi > lo  # (a constant pixel has no range to map a [0, 1] output onto)
    assert (x[:, varies] >= lo[varies] - 1e-3).all() and (x[:, varies] <= hi[varies] + 1e-3).all()


def test_shallow_option_trains_ckm_on_the_features_and_is_refused_where_there_is_none(
    cli, blobs_csv, tmp_path
):
    """Issue 4 / the spec: `--shallow` runs ckm on the input features (= --set shallow=true);
    kmeans and cm are shallow already; a deep method with no shallow form is a usage error."""
    import torch

    from deepcluster_cli.engine.checkpoint import load_checkpoint

    common = ["--label-column", "label", "-k", 3, "-q"]
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    r = cli("train", blobs_csv, "-m", "ckm", "--shallow", "--epochs", 3, *common, "-o", a)
    assert r.exit_code == 0, r.stderr
    r = cli("train", blobs_csv, "-m", "ckm", "--set", "shallow=true", "--epochs", 3, *common,
            "-o", b)  # fmt: skip
    assert r.exit_code == 0, r.stderr
    ca, cb = load_checkpoint(str(a)), load_checkpoint(str(b))
    assert ca.config["shallow"] is True and ca.config == cb.config
    assert all(torch.equal(ca.state[k], cb.state[k]) for k in cb.state)  # the same run
    r = cli("train", blobs_csv, "-m", "kmeans", "--shallow", *common, "-o", tmp_path / "k.pt")
    assert r.exit_code == 0, r.stderr
    r = cli("train", blobs_csv, "-m", "dec", "--shallow", *common, "-o", tmp_path / "d.pt")
    assert r.exit_code == 2 and not (tmp_path / "d.pt").exists()
    assert r.stderr.strip() == (
        "deepcluster: error: --shallow: dec has no shallow form (ckm has one; kmeans and cm "
        "always cluster the input features)"
    )


def test_assign_takes_new_rows_whose_label_column_is_blank(cli, trained, digits_csv, tmp_path):
    """assign never uses labels; --label-column only keeps the column out of the features.
    New, unlabelled rows with that column left blank used to be exit 2 ("missing label in
    row 1"), in every format and in a block shard's row count."""
    df = pd.read_csv(digits_csv)
    want = cli("assign", trained, digits_csv, *COLS)
    assert want.exit_code == 0, want.stderr
    blank = df.assign(label=np.nan)
    blank.loc[3, "label"] = 7  # some labelled, some not
    paths = {"csv": tmp_path / "new.csv", "parquet": tmp_path / "new.parquet"}
    blank.to_csv(paths["csv"], index=False)
    blank.to_parquet(paths["parquet"])
    for path in paths.values():
        r = cli("assign", trained, path, *COLS)
        assert r.exit_code == 0, r.stderr
        assert r.stdout == want.stdout
        r = cli("assign", trained, path, *COLS, "--shard", "1/2")
        assert r.exit_code == 0, r.stderr
    # train still needs every label it reads
    r = cli("train", paths["csv"], *COLS, "-m", "kmeans", "-k", "3", "-o", tmp_path / "k.pt")
    assert r.exit_code == 2 and "missing label in row 1" in r.stderr


def test_train_warns_when_the_labels_leave_a_cluster_empty(cli, blobs_csv, tmp_path, monkeypatch):
    """Asked for k clusters, a method can end with fewer (dgg drains a cluster on digits):
    one warning line names them, the run still succeeds; a run that keeps all k says nothing."""
    import deepcluster_cli.pipeline as pipeline

    args = ["train", blobs_csv, "--label-column", "label", "-m", "kmeans", "-k", "4", "-q"]
    r = cli(*args, "-o", tmp_path / "all.pt")
    assert r.exit_code == 0 and "warning" not in r.stderr, r.stderr
    fit = pipeline.fit

    def merging(*a, **kw):
        result = fit(*a, **kw)
        result.labels[np.isin(result.labels, (1, 3))] = 0  # two clusters drained into 0
        return result

    monkeypatch.setattr(pipeline, "fit", merging)  # `train` imports it when it runs
    r = cli(*args, "-o", tmp_path / "m.pt", "--labels", tmp_path / "l.csv")
    assert r.exit_code == 0, r.stderr
    assert r.stderr.strip().splitlines() == [
        "deepcluster: warning: 2 of the 4 clusters ended with no rows (clusters 1, 3): "
        "the labels use 2; another --seed may keep them all"
    ]
    assert set(pd.read_csv(tmp_path / "l.csv")["cluster"]) == {0, 2}


def test_most_clusters_empty_after_a_method_with_a_learning_rate_names_it(
    cli, blobs_csv, tmp_path, monkeypatch
):
    """dec at lr 0.05 from a digits autoencoder kept 2 of 10 clusters: when half or more are
    empty and the method has a learning rate, the advice names it (a new seed does not change
    it); one empty cluster of four keeps the seed advice alone."""
    import deepcluster_cli.pipeline as pipeline

    fit = pipeline.fit
    drained = {"clusters": (1, 3)}

    def merging(*a, **kw):
        result = fit(*a, **kw)
        result.labels[np.isin(result.labels, drained["clusters"])] = 0
        return result

    monkeypatch.setattr(pipeline, "fit", merging)
    args = ["train", blobs_csv, "--label-column", "label", "-m", "dec", "-k", "4", "--lr", "0.02"]
    for key, value in {"arch": 16, "latent": 2, "pretrain_epochs": 2, "epochs": 1}.items():
        args += ["--set", f"{key}={value}"]
    r = cli(*args, "-o", tmp_path / "m.pt", "-q")
    assert r.exit_code == 0, r.stderr
    assert r.stderr.strip().endswith(
        "the labels use 2; another --seed or a lower --lr (this run had 0.02) may keep them all"
    )
    drained["clusters"] = (3,)
    r = cli(*args, "-o", tmp_path / "m2.pt", "-q")
    assert r.exit_code == 0, r.stderr
    assert r.stderr.strip().endswith("the labels use 3; another --seed may keep them all")


def test_evaluate_dash_output_is_stdout_and_an_autoencoder_model_is_refused(
    cli, trained, digits_csv, tmp_path, monkeypatch
):
    """`-o -` wrote a file named '-'; `--model AE.pt --data` silently left the criterion out."""
    model, labels = trained, tmp_path / "train.csv"
    monkeypatch.chdir(tmp_path)
    r = cli("evaluate", labels, "--truth", digits_csv, "--label-column", "label", "-o", "-")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith("acc") and not (tmp_path / "-").exists()
    ae = tmp_path / "ae.pt"
    args = ["evaluate", labels, "--data", digits_csv, *COLS, "--model"]
    r = cli(*args, ae)
    assert r.exit_code == 2
    assert r.stderr.strip().splitlines() == [
        f"deepcluster: error: --model {ae}: is an autoencoder (from deepcluster pretrain), which "
        "has no clustering criterion; give a model from deepcluster train"
    ]
    r = cli(*args, model)
    assert r.exit_code == 0 and "model_loss" in r.stdout, r.stderr
