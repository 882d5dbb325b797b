"""The input-validation matrix: every bad input to `train` and `assign` exits 2 with one short
line naming the problem, never a traceback, and creates or replaces no output file."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


def write(tmp_path, name, content: bytes) -> str:
    p = tmp_path / name
    p.write_bytes(content)
    return str(p)


def good_table(n=30):
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.random((n, 3)), columns=["a", "b", "c"])
    df["label"] = np.arange(n) % 3
    return df


def case_files(tmp_path):
    """name -> (data path, extra args, expected words in the message)."""
    df = good_table()
    parquet = tmp_path / "ok.parquet"
    df.to_parquet(parquet)
    npy = tmp_path / "ok.npy"
    np.save(npy, df[["a", "b", "c"]].to_numpy())
    nan_csv = df.copy()
    nan_csv.loc[4, "b"] = np.nan
    inf_csv = df.copy()
    inf_csv.loc[7, "c"] = np.inf
    text_csv = df.copy()
    text_csv["b"] = "x"
    (tmp_path / "adir").mkdir()
    cases = {
        "missing file": (str(tmp_path / "nope.csv"), [], ["no such file"]),
        "directory": (str(tmp_path / "adir"), [], ["folder"]),
        "empty file": (write(tmp_path, "empty.csv", b""), [], ["empty"]),
        "header only": (write(tmp_path, "h.csv", b"a,b,c\n"), [], ["no data rows"]),
        "ragged rows": (write(tmp_path, "r.csv", b"a,b,c\n1,2,3\n4,5\n6,7,8,9\n"), [], ["fields"]),
        "undecodable bytes": (write(tmp_path, "u.csv", b"a,b\n1,\xff\xfe\n"), [], ["UTF-8"]),
        "nan": (str(tmp_path / "nan.csv"), [], ["NaN", "'b'", "row 5"]),
        "inf": (str(tmp_path / "inf.csv"), [], ["inf", "'c'", "row 8"]),
        "non-numeric column": (str(tmp_path / "text.csv"), [], ["'b'", "numeric"]),
        "object npy": (str(tmp_path / "obj.npy"), [], ["object"]),
        "truncated parquet": (write(tmp_path, "t.parquet", parquet.read_bytes()[:200]), [], []),
        "truncated npy": (write(tmp_path, "t.npy", npy.read_bytes()[:100]), [], []),
        "duplicate columns": (
            write(tmp_path, "d.csv", b"a,a,b\n1,2,3\n4,5,6\n7,8,9\n"),
            [],
            ["appears twice", "'a'"],
        ),
        "missing label column": (str(parquet), ["--label-column", "truth"], ["truth"]),
        "missing id column": (str(parquet), ["--id-column", "key"], ["key"]),
        "unknown format": (write(tmp_path, "x.xlsx", b"abc"), [], ["--format"]),
        "semicolon-separated": (
            write(tmp_path, "semi.csv", b"a;b;c\n1;2;3\n4;5;6\n7;8;9\n"),
            [],
            ["';'-separated", "not comma-separated"],
        ),
    }
    nan_csv.to_csv(tmp_path / "nan.csv", index=False)
    inf_csv.to_csv(tmp_path / "inf.csv", index=False)
    text_csv.to_csv(tmp_path / "text.csv", index=False)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    return cases


CASES = [
    "missing file",
    "directory",
    "empty file",
    "header only",
    "ragged rows",
    "undecodable bytes",
    "nan",
    "inf",
    "non-numeric column",
    "object npy",
    "truncated parquet",
    "truncated npy",
    "duplicate columns",
    "missing label column",
    "missing id column",
    "unknown format",
    "semicolon-separated",
]


def assert_clean_failure(result, words, *outputs):
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    err = result.stderr.strip()
    assert err.startswith("deepcluster: error:"), err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    for w in words:
        assert w in err, (w, err)
    for out in outputs:
        assert not out.exists()


@pytest.mark.parametrize("case", CASES)
def test_train_refuses_bad_data(cli, tmp_path, case):
    path, extra, words = case_files(tmp_path)[case]
    out = tmp_path / "model.pt"
    labels = tmp_path / "labels.csv"
    r = cli("train", path, *extra, "-m", "kmeans", "-k", 2, "-o", out, "--labels", labels)
    assert_clean_failure(r, words, out, labels)


@pytest.fixture
def model(cli, tmp_path):
    df = good_table()
    path = tmp_path / "train.csv"
    df.to_csv(path, index=False)
    out = tmp_path / "model.pt"
    r = cli("train", path, "--label-column", "label", "-m", "kmeans", "-k", 3, "-o", out)
    assert r.exit_code == 0, r.stderr
    return out


@pytest.mark.parametrize("case", CASES)
def test_assign_refuses_bad_data_and_keeps_existing_output(cli, tmp_path, model, case):
    path, extra, words = case_files(tmp_path)[case]
    out = tmp_path / "labels.csv"
    out.write_text("previous labels\n")
    r = cli("assign", model, path, *extra, "-o", out)
    assert r.exit_code == 2, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert out.read_text() == "previous labels\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("labels")) == [
        "labels.csv"
    ]


@pytest.mark.parametrize(
    "args, words",
    [
        (["-m", "nosuch", "-k", "2"], ["unknown method", "kmeans"]),
        (["-m", "kmeans", "-k", "1"], ["at least 2"]),
        (["-m", "kmeans", "-k", "31"], ["more clusters than rows"]),
        (["-m", "kmeans", "-k", "2", "--device", "tpu"], ["device"]),
        (["-m", "kmeans", "-k", "2", "--threads", "0"], ["--threads"]),
        (["-m", "kmeans", "-k", "2", "--threads", "many"], ["--threads 'many'", "or auto"]),
        (["-m", "kmeans", "-k", "2", "--labels", "/no/such/dir/l.csv"], ["does not exist"]),
        (["-m", "kmeans", "-k", "2", "--config", "/no/such.toml"], ["no such file"]),
        (["-m", "kmeans", "-k", "2", "--config", "/"], ["--config /: is a folder"]),
        (["-m", "dec", "-k", "2", "--lr", "nan"], ["--lr", "not a finite number"]),
        (["-m", "dec", "-k", "2", "--set", "alpha=inf"], ["alpha", "not a finite number"]),
        (["-m", "kmeans", "-k", "2", "--lr", "0.1"], ["--lr", "not a setting of this method"]),
        (["-m", "kmeans", "-k", "2", "--restarts", "0"], ["--restarts"]),
        (["-m", "kmeans", "-k", "2", "--select", "bogus"], ["--select bogus"]),
        (["-m", "kmeans", "-k", "2", "--restart-pretrain"], ["--restart-pretrain", "kmeans"]),
        (["-m", "cnet", "-k", "2", "--restart-pretrain"], ["--restart-pretrain", "start=auto"]),
        (
            ["-m", "dec", "-k", "2", "--restart-pretrain", "--pretrained", "ae.pt"],
            ["--restart-pretrain", "drop --pretrained"],
        ),
        (["-m", "kmeans", "-k", "2", "--max-time", "-1"], ["--max-time"]),
        (
            ["-m", "kmeans", "-k", "2", "--label-column", "label", "--id-column", "label"],
            ["both name 'label'"],
        ),
        # the autoencoder settings every deep method shares (they reached torch: internal
        # errors, or a zero-width network trained without a word)
        (["-m", "dec", "-k", "2", "--set", "arch=8,-4"], ["arch", "positive"]),
        (["-m", "aekm", "-k", "2", "--set", "arch=0"], ["arch", "positive"]),
        (["-m", "aekm", "-k", "2", "--set", "arch=32,,32"], ["arch", "empty item"]),
        (["-m", "vade", "-k", "2", "--set", "latent=0"], ["latent", "positive"]),
        (["-m", "idec", "-k", "2", "--set", "pretrain_epochs=-1"], ["pretrain_epochs"]),
        (["-m", "dcn", "-k", "2", "--set", "pretrain_lr=-1"], ["pretrain_lr"]),
        (["-m", "dec", "-k", "2", "--set", "noise=-1"], ["noise"]),
        # torch refused these after the pretraining: internal errors, exit 1
        (["-m", "dec", "-k", "2", "--set", "optimizer=sgd", "--set", "momentum=-5"], ["momentum"]),
        (["-m", "dcn", "-k", "2", "--set", "momentum=1.5"], ["momentum=1.5", "[0, 1)"]),
        (["-m", "dgg", "-k", "2", "--set", "weight_decay=-1"], ["weight_decay=-1.0", ">= 0"]),
        # numpy and scikit-learn take seeds 0 .. 2**32-1 (were internal errors)
        (["-m", "kmeans", "-k", "2", "--seed", "-1"], ["--seed -1", "4294967295"]),
        (["-m", "kmeans", "-k", "2", "--seed", "4294967296"], ["--seed 4294967296"]),
        (
            ["-m", "kmeans", "-k", "2", "--seed", "4294967295", "--restarts", "2"],
            ["4294967294", "--restarts 2"],
        ),
    ],
)
def test_train_refuses_bad_options(cli, tmp_path, args, words):
    path = tmp_path / "ok.csv"
    good_table().to_csv(path, index=False)
    out = tmp_path / "m.pt"
    r = cli("train", path, "--label-column", "label", *args, "-o", out)
    assert_clean_failure(r, words, out)


@pytest.mark.parametrize(
    "line, words",
    [
        ('seed = "abc"', ["seed", "'abc'", "int"]),
        ("threads = 1.5", ["threads", "1.5", "or auto"]),
        ("threads = true", ["threads", "True", "or auto"]),
    ],
)
def test_train_refuses_a_config_value_of_the_wrong_type(cli, tmp_path, line, words):
    path = tmp_path / "ok.csv"
    good_table().to_csv(path, index=False)
    config = tmp_path / "run.toml"
    config.write_text(line + "\n")
    out = tmp_path / "m.pt"
    r = cli(
        "train",
        path,
        "--label-column",
        "label",
        "-m",
        "kmeans",
        "-k",
        2,
        "--config",
        config,
        "-o",
        out,
    )
    assert_clean_failure(r, ["--config", *words], out)


@pytest.mark.parametrize(
    "args, words",
    [
        (["train", "x.csv", "--no-such-option"], ["No such option: --no-such-option"]),
        (["train", "x.csv", "-m", "kmeans", "-k", "abc", "-o", "m.pt"], ["'-k'", "integer"]),
        (["train", "x.csv"], ["Missing option '--method'", "deepcluster train -h"]),
        (["assign"], ["Missing argument 'model'"]),
        (["methods", "dcn", "extra"], ["unexpected extra argument"]),
        (["methods", "extra"], ["unknown method 'extra'", "dcn"]),
        (["tran"], ["No such command 'tran'", "'train'"]),
        (["--bogus"], ["No such option: --bogus"]),
        # named before the (missing) data file is looked at: the data was read first
        (["pretrain", "x.csv", "--loss", "foo", "-o", "a.pt"], ["--loss: unknown reconstruction"]),
        (["pretrain", "x.csv", "--activation", "foo", "-o", "a.pt"], ["--activation: unknown"]),
        (
            ["train", "x.csv", "-m", "dec", "-k", "3", "--set", "recon_loss=foo", "-o", "m.pt"],
            ["recon_loss: unknown reconstruction loss 'foo'"],
        ),  # fmt: skip
    ],
)
def test_a_usage_error_is_one_line(cli, args, words):
    """Typer's own parse errors (unknown option, bad number, missing argument) came as a
    box of several lines (Usage:, Try '...', a frame): the contract is one line, exit 2."""
    r = cli(*args)
    assert_clean_failure(r, words)
    assert "Usage:" not in r.stderr and r.stdout == ""


def test_no_arguments_still_shows_the_help(cli):
    r = cli()
    assert "Usage: deepcluster" in r.stdout + r.stderr and "pretrain" in r.stdout + r.stderr


def test_output_folder_missing_fails_before_training(cli, tmp_path):
    path = tmp_path / "ok.csv"
    good_table().to_csv(path, index=False)
    r = cli("train", path, "-m", "kmeans", "-k", 2, "-o", tmp_path / "nodir" / "m.pt")
    assert_clean_failure(r, ["does not exist"])


@pytest.mark.parametrize("kind", ["truncated", "foreign", "pickle", "text"])
def test_assign_refuses_bad_checkpoints(cli, tmp_path, model, kind):
    import pickle

    import torch

    bad = tmp_path / "bad.pt"
    if kind == "truncated":
        bad.write_bytes(model.read_bytes()[:300])
    elif kind == "foreign":
        torch.save({"w": torch.ones(2)}, bad)
    elif kind == "pickle":
        bad.write_bytes(pickle.dumps(["not", "a", "model"]))
    else:
        bad.write_text("hello")
    path = tmp_path / "ok.csv"
    good_table().to_csv(path, index=False)
    r = cli("assign", bad, path, "--label-column", "label")
    assert r.exit_code == 2 and "Traceback" not in r.stderr
    assert r.stdout == ""


def _inputs(cli, tmp_path):
    """data.csv, an autoencoder, a k-means model and its labels, all real files."""
    data = tmp_path / "data.csv"
    good_table().to_csv(data, index=False)
    lab = ["--label-column", "label"]
    ae, model, labels = tmp_path / "ae.pt", tmp_path / "model.pt", tmp_path / "labels.csv"
    for args in (
        ["pretrain", data, *lab, "-o", ae, "--epochs", 1, "--arch", "8", "--latent", 2],
        ["train", data, *lab, "-m", "kmeans", "-k", 3, "-o", model, "--labels", labels],
    ):
        r = cli(*args)
        assert r.exit_code == 0, r.stderr
    return {"data": data, "ae": ae, "model": model, "labels": labels}


OVERWRITES = {
    "train -o data": (["train", "{data}", "-m", "kmeans", "-k", "3", "-o", "{data}"], "data file"),
    "train --labels data": (
        ["train", "{data}", "-m", "kmeans", "-k", "3", "-o", "{new}", "--labels", "{data}"],
        "data file",
    ),
    "train -o autoencoder": (
        ["train", "{data}", "-m", "aekm", "-k", "3", "--pretrained", "{ae}", "-o", "{ae}"],
        "autoencoder",
    ),
    "train -o = --labels": (
        ["train", "{data}", "-m", "kmeans", "-k", "3", "-o", "{model}", "--labels", "{model}"],
        "both -o and --labels",
    ),
    "pretrain -o data": (["pretrain", "{data}", "-o", "{data}", "--epochs", "1"], "data file"),
    "assign -o model": (
        ["assign", "{model}", "{data}", "--label-column", "label", "-o", "{model}"],
        "model",
    ),
    "assign --embedding data": (
        ["assign", "{model}", "{data}", "-o", "{new}", "--embedding", "{data}"],
        "data file",
    ),
    "evaluate -o truth": (
        ["evaluate", "{labels}", "--truth", "{data}", "--label-column", "label", "-o", "{data}"],
        "truth file",
    ),
    "generate -o model": (["generate", "{model}", "-o", "{model}"], "model"),
}


@pytest.mark.parametrize("case", sorted(OVERWRITES))
def test_an_output_that_names_an_input_is_refused_and_the_input_kept(cli, tmp_path, case):
    files = _inputs(cli, tmp_path)
    before = {name: path.read_bytes() for name, path in files.items()}
    new = tmp_path / "new.out"
    args, words = OVERWRITES[case]
    paths = {**{k: str(v) for k, v in files.items()}, "new": str(new)}
    r = cli(*[a.format(**paths) for a in args])
    assert_clean_failure(r, [words], new)
    assert {name: path.read_bytes() for name, path in files.items()} == before


def test_two_inputs_cannot_both_read_stdin(cli, tmp_path):
    """stdin can be read once: the second reader used to find it empty and report
    '<stdin>: no data (empty input)' although the user had piped data in."""
    files = _inputs(cli, tmp_path)
    text = files["labels"].read_text()
    r = cli("evaluate", "-", "--truth", "-", "--label-column", "label", input=text)
    assert_clean_failure(r, ["labels file and the truth file both read stdin", "save one"])
    data = files["data"].read_text()
    r = cli("evaluate", files["labels"], "--truth", "-", "--label-column", "label",
            "--data", "-", input=data)  # fmt: skip
    assert_clean_failure(r, ["truth file and the data file both read stdin"])
    r = cli("evaluate", files["labels"], "--truth", "-", "--label-column", "label", input=data)
    assert r.exit_code == 0, r.stderr


def test_evaluate_replaces_no_output_when_the_report_fails(cli, tmp_path):
    """-o was written before --report read its --embedding: a bad embedding file failed the
    run (exit 2) with the old report already replaced."""
    files = _inputs(cli, tmp_path)
    out, report = tmp_path / "scores.txt", tmp_path / "report.md"
    out.write_text("previous scores\n")
    short = tmp_path / "short.csv"
    pd.DataFrame(np.ones((5, 2)), columns=["z0", "z1"]).to_csv(short, index=False)
    args = ["evaluate", files["labels"], "--truth", files["data"], "--label-column", "label"]
    r = cli(*args, "-o", out, "--report", report, "--embedding", short)
    assert_clean_failure(r, ["short.csv has 5"], report)
    assert out.read_text() == "previous scores\n"
    r = cli(*args, "--report", report, "--embedding", short)  # stdout: nothing printed
    assert_clean_failure(r, ["short.csv has 5"], report)
    assert r.stdout == ""


def test_an_output_reached_through_a_link_to_the_data_is_refused(cli, tmp_path):
    data = tmp_path / "data.csv"
    good_table().to_csv(data, index=False)
    link = tmp_path / "link.csv"
    link.symlink_to(data)
    before = data.read_bytes()
    r = cli("train", link, "-m", "kmeans", "-k", 3, "-o", data)
    assert_clean_failure(r, ["data file"])
    assert data.read_bytes() == before


def test_a_library_warning_is_one_line_on_stderr(cli, tmp_path):
    """k-means on identical rows: scikit-learn warns that it found fewer distinct clusters.
    The user sees our one-line form, not the library's file and source line."""
    path = tmp_path / "same.csv"
    pd.DataFrame(np.ones((30, 3)), columns=["a", "b", "c"]).to_csv(path, index=False)
    r = cli("train", path, "-m", "kmeans", "-k", 3, "-o", tmp_path / "m.pt")
    assert r.exit_code == 0, r.stderr
    lines = [line for line in r.stderr.splitlines() if "distinct clusters" in line]
    assert lines and all(line.startswith("deepcluster: warning: ") for line in lines)
    assert "sklearn" not in r.stderr and "fit_method" not in r.stderr


def test_a_checkpoint_of_the_other_kind_says_which_command_makes_the_right_one(cli, tmp_path):
    files = _inputs(cli, tmp_path)
    r = cli("assign", files["ae"], files["data"], "--label-column", "label")
    assert_clean_failure(r, ["is an autoencoder", "needs a clustering model", "deepcluster train"])
    out = tmp_path / "m.pt"
    r = cli("train", files["data"], "--label-column", "label", "-m", "aekm", "-k", 3,
            "--pretrained", files["model"], "-o", out)  # fmt: skip
    assert_clean_failure(r, ["is a clustering model", "needs an autoencoder"], out)


@pytest.mark.parametrize(
    "args, words",
    [
        (["--set", "arch=16"], ["--set arch", "has arch 8", "drop arch"]),
        (["--set", "latent=4"], ["--set latent", "has latent 2"]),
        (["--set", "activation=tanh"], ["--set activation", "has activation relu"]),
        (["--set", "recon_loss=mse"], ["--set recon_loss", "has recon_loss bce"]),
        # pretraining settings given on the command line change nothing with --pretrained
        (["--set", "pretrain_epochs=300"], ["--set pretrain_epochs", "would change nothing"]),
        (["--set", "pretrain_lr=0.01"], ["--set pretrain_lr", "drop it"]),
        (["--set", "noise=0.2"], ["--set noise", "would change nothing"]),
    ],
)
def test_a_network_setting_that_the_pretrained_autoencoder_contradicts_is_refused(
    cli, tmp_path, args, words
):
    """With --pretrained the network is the file's: a different arch, latent, activation or
    loss was silently ignored (the run trained the file's network under the user's belief)."""
    files = _inputs(cli, tmp_path)
    out = tmp_path / "m.pt"
    r = cli("train", files["data"], "--label-column", "label", "-m", "dcn", "-k", 3,
            "--pretrained", files["ae"], *args, "-o", out)  # fmt: skip
    assert_clean_failure(r, words, out)


def test_pretrained_network_settings_that_agree_and_a_presets_network_are_accepted(cli, tmp_path):
    files = _inputs(cli, tmp_path)
    lab = ["--label-column", "label", "-k", 3, "--pretrained", files["ae"], "--epochs", 1]
    out = tmp_path / "m.pt"
    # the same values as the file, and recon_loss auto (which resolves to the file's)
    r = cli("train", files["data"], *lab, "-m", "dcn", "--set", "arch=8", "--set", "latent=2",
            "--set", "recon_loss=auto", "-o", out)  # fmt: skip
    assert r.exit_code == 0, r.stderr
    # --preset digits sets arch 500,500 for pretraining without --pretrained: not the user's
    r = cli("train", files["data"], *lab, "-m", "dcn", "--preset", "digits", "-o", out)
    assert r.exit_code == 0, r.stderr
    # repnet reads noise in its joint training, from a pretrained autoencoder too
    r = cli("train", files["data"], *lab, "-m", "repnet", "--set", "noise=0.2", "-o", out)
    assert r.exit_code == 0, r.stderr
    # a config file may serve runs with and without --pretrained: its pretraining settings pass
    toml = tmp_path / "c.toml"
    toml.write_text("pretrain_epochs = 300\nnoise = 0.2\n")
    r = cli("train", files["data"], *lab, "-m", "dcn", "--config", toml, "-o", out)
    assert r.exit_code == 0, r.stderr


def test_stdout_takes_one_table_and_no_checkpoint(cli, tmp_path):
    files = _inputs(cli, tmp_path)
    lab = ["--label-column", "label"]
    r = cli("train", files["data"], *lab, "-m", "kmeans", "-k", 3, "-o", "-")
    assert_clean_failure(r, ["-o -", "checkpoint", "give a file name"])
    r = cli("pretrain", files["data"], *lab, "-o", "-", "--epochs", 1)
    assert_clean_failure(r, ["-o -", "checkpoint"])
    assert not (tmp_path / "-").exists() and r.stdout == ""
    r = cli("assign", files["model"], files["data"], *lab, "--embedding", "-")
    assert_clean_failure(r, ["--embedding", "both write to stdout"])
    assert r.stdout == ""
    out = tmp_path / "labels_new.csv"
    r = cli("assign", files["model"], files["data"], *lab, "-o", out, "--embedding", "-")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.count("\n") == 31 and out.read_text().startswith("id,cluster")


@pytest.mark.parametrize(
    "name, values, warned",
    [
        ("id", "count0", True),  # named and counting
        ("image_id", "random", True),  # named like one
        ("userId", "random", True),
        ("n", "count1", True),  # counting from 1, any name
        ("width", "random", False),
        ("valid", "random", False),  # 'id' inside a word is not an identifier
    ],
)
def test_a_feature_that_looks_like_a_row_identifier_is_warned_of(
    cli, tmp_path, name, values, warned
):
    df = good_table()
    n = len(df)
    column = {"count0": np.arange(n), "count1": np.arange(1, n + 1)}.get(
        values, np.random.default_rng(1).random(n)
    )
    df.insert(0, name, column)
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    base = ["train", path, "--label-column", "label", "-m", "kmeans", "-k", 3, "-q"]
    r = cli(*base, "-o", tmp_path / "m.pt")
    assert r.exit_code == 0, r.stderr
    line = f"deepcluster: warning: {path}: feature column '{name}'"
    assert (line in r.stderr) == warned, r.stderr
    if warned:
        assert f"--id-column {name}" in r.stderr
        for fix in (["--id-column", name], ["--columns", "a,b,c"]):
            r = cli(*base, *fix, "-o", tmp_path / "m2.pt")
            assert r.exit_code == 0 and "warning" not in r.stderr, r.stderr


def test_warnings_under_log_format_json_are_json_objects(cli, tmp_path):
    """Ours (a column named like an id) and a library's (k-means on identical rows) both
    arrive as {"event": "warning"} objects: --log-format json stays one object per line."""
    import json

    path = tmp_path / "same.csv"
    pd.DataFrame({"key": np.ones(30), "a": np.ones(30)}).to_csv(path, index=False)
    r = cli("train", path, "-m", "kmeans", "-k", 3, "--log-format", "json", "-o", tmp_path / "m.pt")
    assert r.exit_code == 0, r.stderr
    events = [json.loads(line) for line in r.stderr.splitlines()]
    warnings_ = [e["message"] for e in events if e["event"] == "warning"]
    assert any("feature column 'key'" in m for m in warnings_), warnings_
    assert any("distinct clusters" in m for m in warnings_), warnings_


def test_assign_to_stdout_writes_nothing_when_the_columns_do_not_fit(cli, tmp_path, model):
    """The header used to go out before the first chunk's columns were checked: a pipe got
    'id,cluster' and then nothing."""
    path = tmp_path / "other.csv"
    pd.DataFrame(np.ones((5, 4)), columns=["a", "b", "c", "d"]).to_csv(path, index=False)
    r = cli("assign", model, path)
    assert_clean_failure(r, ["columns differ"])
    assert r.stdout == ""


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
            "memory: you tried to allocate 40000000000 bytes. Error code 12"
        ),
        RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        MemoryError(),
    ],
)
def test_out_of_memory_is_one_line_with_advice(error, capsys):
    """PyTorch's CPU and CUDA allocators raise RuntimeError, not MemoryError: both used to
    reach the user as 'internal error: RuntimeError: [enforce fail at alloc_cpu.cpp...'."""
    import typer

    from deepcluster_cli.commands.common import handle_errors

    @handle_errors
    def command():
        raise error

    with pytest.raises(typer.Exit) as stop:
        command()
    assert stop.value.exit_code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("deepcluster: error: out of memory; use a smaller --batch-size")
    assert "internal error" not in err and len(err.splitlines()) == 1
    if "40000000000" in str(error):
        assert "37.3 GiB" in err


@pytest.fixture
def read_only(tmp_path, monkeypatch):
    """A folder in which no file can be created, as on a read-only mount (a chmod is no test:
    the suite may run as root, which ignores it): mkstemp there fails with EROFS."""
    import errno
    import os
    import tempfile
    from pathlib import Path

    folder = tmp_path / "ro"
    folder.mkdir()
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).resolve() == folder.resolve():
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    return folder


def test_an_output_folder_that_cannot_be_written_fails_before_any_work(cli, tmp_path, read_only):
    """The folder was found read-only only when the result was saved: after the training,
    which was lost, and with -o already replaced when only --labels' folder was read-only."""
    files = _inputs(cli, tmp_path)
    model_before = files["model"].read_bytes()
    train = ["train", files["data"], "--label-column", "label", "-m", "kmeans", "-k", 3]
    r = cli(*train, "-o", read_only / "m.pt")
    assert_clean_failure(r, ["m.pt: cannot write to", "Read-only file system"])
    r = cli(*train, "-o", files["model"], "--labels", read_only / "l.csv")
    assert_clean_failure(r, ["l.csv: cannot write to"])
    assert files["model"].read_bytes() == model_before
    r = cli("pretrain", files["data"], "--label-column", "label", "-o", read_only / "ae.pt")
    assert_clean_failure(r, ["ae.pt: cannot write to"])
    r = cli("assign", files["model"], files["data"], "--label-column", "label",
            "--embedding", read_only / "e.csv")  # fmt: skip
    assert_clean_failure(r, ["e.csv: cannot write to"])
    assert r.stdout == ""  # no labels streamed from a run that then fails
    scores = tmp_path / "scores.txt"
    scores.write_text("previous scores\n")
    r = cli("evaluate", files["labels"], "--truth", files["data"], "--label-column", "label",
            "-o", scores, "--report", read_only / "r.md")  # fmt: skip
    assert_clean_failure(r, ["r.md: cannot write to"])
    assert scores.read_text() == "previous scores\n"
    assert list(read_only.iterdir()) == []


def test_an_output_name_no_writer_knows_fails_before_any_work(cli, tmp_path):
    """`--labels out.xyz` failed after the training, with -o already replaced; `assign
    --embedding e.xyz` streamed every label to stdout and then failed."""
    files = _inputs(cli, tmp_path)
    model_before = files["model"].read_bytes()
    r = cli("train", files["data"], "--label-column", "label", "-m", "kmeans", "-k", 3,
            "-o", files["model"], "--labels", tmp_path / "out.xyz")  # fmt: skip
    assert_clean_failure(r, ["--labels", "out.xyz", ".csv, .tsv, .parquet or .npy"])
    assert files["model"].read_bytes() == model_before
    r = cli("assign", files["model"], files["data"], "--label-column", "label",
            "--embedding", tmp_path / "e.csv.gz")  # fmt: skip
    assert_clean_failure(r, ["--embedding", "e.csv.gz"])
    assert r.stdout == ""
    r = cli("generate", files["model"], "-o", tmp_path / "g.txt")
    assert_clean_failure(r, ["-o", "g.txt"])


@pytest.mark.parametrize("failing", ["model", "labels"])
def test_train_replaces_neither_output_when_one_fails(cli, tmp_path, monkeypatch, failing):
    """-o and --labels together: the labels wait in their temporary file until the model is
    saved, so a failed save of either leaves both files as they were (the model used to be
    saved first, and a failure writing the labels left the new model beside the old labels)."""
    from deepcluster_cli import pipeline
    from deepcluster_cli.errors import DataError
    from deepcluster_cli.io import writers

    files = _inputs(cli, tmp_path)
    model_before, labels_before = files["model"].read_bytes(), files["labels"].read_bytes()

    def fail(*args, **kwargs):
        raise DataError("disk full")

    if failing == "model":
        monkeypatch.setattr(pipeline, "save_model", fail)
    else:
        monkeypatch.setattr(writers.LabelWriter, "write", fail)
    r = cli("train", files["data"], "--label-column", "label", "-m", "kmeans", "-k", 3,
            "-o", files["model"], "--labels", files["labels"], "--seed", 5, "-q")  # fmt: skip
    assert_clean_failure(r, ["disk full"])
    assert files["model"].read_bytes() == model_before
    assert files["labels"].read_bytes() == labels_before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file


def test_sigterm_outside_training_removes_the_half_written_output(cli, tmp_path, monkeypatch):
    """SIGTERM killed `assign -o` where it was, leaving its temporary file (Python's default
    handler): now it raises Terminated as Ctrl-C raises KeyboardInterrupt, exit 143."""
    from deepcluster_cli.errors import Terminated
    from deepcluster_cli.io import writers

    files = _inputs(cli, tmp_path)
    out = tmp_path / "out.csv"
    out.write_text("previous labels\n")
    real = writers.LabelWriter.write

    def write_then_terminated(self, *args, **kwargs):
        real(self, *args, **kwargs)  # the first chunk is in the temporary file
        raise Terminated

    monkeypatch.setattr(writers.LabelWriter, "write", write_then_terminated)
    r = cli("assign", files["model"], files["data"], "--label-column", "label", "-o", out)
    assert r.exit_code == 143, r.stderr
    assert r.stderr.strip() == "deepcluster: error: terminated (SIGTERM)"
    assert out.read_text() == "previous labels\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_the_entry_point_turns_sigterm_into_terminated():
    import os
    import signal
    import time

    from deepcluster_cli.cli import _raise_on_sigterm
    from deepcluster_cli.errors import Terminated

    before = signal.getsignal(signal.SIGTERM)
    try:
        _raise_on_sigterm()
        with pytest.raises(Terminated):
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs at once, in this thread
            time.sleep(5)  # not reached
    finally:
        signal.signal(signal.SIGTERM, before)


@pytest.mark.parametrize(
    "args", [["--version"], ["--help"], ["train", "--help"], ["methods"]], ids=" ".join
)
def test_output_into_a_closed_pipe_exits_0(args):
    """`deepcluster --version | true` exited 1, where every command treats a reader that went
    away (`| head`) as the end of the output, exit 0; so did `--help | head -1` (Rich's
    console exits 1 on a broken pipe unless its hook is replaced, as main() does)."""
    import os
    import subprocess
    import sys

    read, write = os.pipe()
    os.close(read)
    try:
        p = subprocess.run([sys.executable, "-m", "deepcluster_cli", *args],
                           stdout=write, stderr=subprocess.PIPE, timeout=60)  # fmt: skip
    finally:
        os.close(write)
    assert p.returncode == 0, p.stderr
    assert p.stderr == b""


@pytest.mark.parametrize(
    "args, words",
    [
        (["--threads", "100000"], ["--threads 100000", "at most 1024"]),
        (["--threads", "0"], ["--threads", "1 or more"]),
    ],
)
def test_threads_out_of_range_is_a_usage_error(cli, tmp_path, args, words):
    """--threads 100000 reached OpenMP, which failed to load a library: 'internal error:
    ImportError', exit 1."""
    path = tmp_path / "ok.csv"
    good_table().to_csv(path, index=False)
    r = cli("train", path, "-m", "kmeans", "-k", 2, "-o", tmp_path / "m.pt", *args)
    assert_clean_failure(r, words, tmp_path / "m.pt")


def test_evaluate_names_the_extensions_not_an_option_it_lacks(cli, tmp_path):
    """evaluate's --format is the report's, yet an input of unknown extension was told to
    'pass --format (one of csv, ...)', which then failed as a bad report format."""
    files = _inputs(cli, tmp_path)
    odd = tmp_path / "labels.txt"
    odd.write_bytes(files["labels"].read_bytes())
    r = cli("evaluate", odd, "--truth", files["data"], "--label-column", "label")
    assert_clean_failure(r, ["labels.txt", "name ending in .csv"])
    assert "--format" not in r.stderr


@pytest.mark.parametrize(
    "args, words",
    [
        (["--mode", "centroids", "-n", "3"], ["-n is not used with --mode centroids"]),
        (["--mode", "centroids", "-c", "1"], ["--cluster is not used with --mode centroids"]),
        (["--mode", "centroids", "--between", "0,1"], ["--between", "centroids"]),
    ],
)
def test_generate_refuses_options_its_mode_does_not_use(cli, tmp_path, args, words):
    """They were dropped without a word (k rows written, exit 0)."""
    files = _inputs(cli, tmp_path)
    out = tmp_path / "g.csv"
    r = cli("generate", files["model"], "-o", out, *args)
    assert_clean_failure(r, words, out)


def test_a_loop_of_symbolic_links_as_input_or_output_is_a_usage_error(cli, tmp_path):
    """Path.resolve raised RuntimeError on the loop: an internal error, exit 1."""
    files = _inputs(cli, tmp_path)
    (tmp_path / "l1.csv").symlink_to(tmp_path / "l2.csv")
    (tmp_path / "l2.csv").symlink_to(tmp_path / "l1.csv")
    loop = tmp_path / "l1.csv"
    r = cli("train", loop, "-m", "kmeans", "-k", 2, "-o", tmp_path / "m2.pt")
    assert_clean_failure(r, ["l1.csv", "loop of symbolic links"], tmp_path / "m2.pt")
    r = cli("train", files["data"], "--label-column", "label", "-m", "kmeans", "-k", 2, "-o", loop)
    assert_clean_failure(r, ["loop of symbolic links"])


def test_an_overflowing_network_is_refused_not_saved_nor_an_internal_error(cli, tmp_path):
    """A far too high learning rate blew the weights up to ~1e30: the codes were NaN or too
    large to square, so k-means failed inside scikit-learn (internal error, exit 1), or the
    model was saved and assign wrote empty probabilities (exit 0)."""
    from deepcluster_cli.engine.checkpoint import load_checkpoint, save_checkpoint

    files = _inputs(cli, tmp_path)
    lab = ["--label-column", "label"]
    ae = tmp_path / "big.pt"
    r = cli("pretrain", files["data"], *lab, "-o", ae, "--arch", 16, "--latent", 2,
            "--epochs", 1, "--lr", 1e30)  # fmt: skip
    assert r.exit_code == 1 and "weights overflowed" in r.stderr and not ae.exists(), r.stderr
    # an autoencoder file whose weights overflow: refused as a bad --pretrained (exit 2)
    ck = load_checkpoint(files["ae"])
    ck.state = {k: v * 1e30 if v.is_floating_point() else v for k, v in ck.state.items()}
    save_checkpoint(ae, ck)
    out = tmp_path / "m2.pt"
    r = cli(
        "train", files["data"], *lab, "-m", "aekm", "-k", 3, "--pretrained", ae, "-o", out, "-q"
    )
    assert_clean_failure(r, ["--pretrained", "NaN, infinite or too large"], out)
    # the clustering stage overflowing: exit 1, nothing saved
    r = cli("train", files["data"], *lab, "-m", "idec", "-k", 3, "--pretrained", files["ae"],
            "--epochs", 1, "--lr", 1e30, "-o", out)  # fmt: skip
    assert r.exit_code == 1 and "overflowed" in r.stderr and not out.exists(), r.stderr


def test_a_line_break_in_a_name_keeps_the_error_on_one_line(cli, tmp_path):
    files = _inputs(cli, tmp_path)
    out = tmp_path / "m2.pt"
    r = cli("train", files["data"], "--label-column", "no\nsuch", "-m", "kmeans", "-k", 2,
            "-o", out)  # fmt: skip
    assert_clean_failure(r, ["no column 'no\\nsuch'"], out)


def test_an_npz_member_claiming_more_rows_than_it_holds_is_truncated_not_out_of_memory(
    cli, tmp_path
):
    import io
    import zipfile

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f8", "fortran_order": False, "shape": (10**12, 3)}
    )
    buf.write(np.zeros(6).tobytes())
    path = tmp_path / "big.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", buf.getvalue())
    out = tmp_path / "m.pt"
    r = cli("train", path, "-m", "kmeans", "-k", 2, "-o", out)
    assert_clean_failure(r, ["big.npz[x]", "truncated NPY file", "1000000000000x3"], out)


@pytest.mark.parametrize("command", ["train", "pretrain"])
def test_a_refused_resume_is_the_only_line_even_without_quiet(cli, tmp_path, command):
    """The progress line ('training dec (k=3) on ...') came before the refusal."""
    files = _inputs(cli, tmp_path)
    out = tmp_path / "r.pt"
    args = ["-m", "dec", "-k", 3] if command == "train" else []
    r = cli(command, files["data"], "--label-column", "label", *args, "-o", out, "--resume")
    assert_clean_failure(r, ["--resume: no resumable state", "run without --resume"], out)
    (tmp_path / "r.pt.resume").write_bytes(b"not a checkpoint")
    r = cli(command, files["data"], "--label-column", "label", *args, "-o", out, "--resume")
    assert_clean_failure(r, ["r.pt.resume"], out)
