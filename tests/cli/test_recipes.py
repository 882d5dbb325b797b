"""What shell users and batch jobs rely on: the cli/ Makefile example end to end, the pipe
recipes, JSON logs, TOML configs, shell completion."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / "cli"
COLS = ["--id-column", "image_id", "--label-column", "label"]
TINY_AEKM = [
    "--set",
    "arch=16",
    "--set",
    "latent=2",
    "--set",
    "pretrain_epochs=2",
    "--threads",
    "1",
]

needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def _env() -> dict[str, str]:
    # the launcher and the recipes run this interpreter, whatever .venv holds
    return {**os.environ, "DEEPCLUSTER_PYTHON": sys.executable, "PYTHON": sys.executable}


def _make(out: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        "make",
        "-f",
        str(CLI / "Makefile.example"),
        f"OUT={out}",
        f"DEEPCLUSTER={CLI / 'deepcluster'}",
        f"PYTHON={sys.executable}",
        "EPOCHS=2",
        "ARCH=32",
        "LATENT=4",
        "RUN_OPTS=--seed 0 --threads 1",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)


@pytest.fixture(scope="module")
def batch_job(tmp_path_factory):
    """One run of cli/Makefile.example: digits.csv -> ae.pt -> model.pt -> labels.csv ->
    report.json, with tiny settings."""
    out = tmp_path_factory.mktemp("job") / "out"
    r = _make(out)
    assert r.returncode == 0, r.stdout + r.stderr
    return out


@needs_make
def test_makefile_example_builds_every_file_of_the_job(batch_job):
    for name in ("digits.csv", "ae.pt", "model.pt", "labels.csv", "embedding.csv"):
        assert (batch_job / name).stat().st_size > 0, name
    labels = pd.read_csv(batch_job / "labels.csv")
    assert list(labels.columns) == ["id", "cluster"] and len(labels) == 1797
    assert labels["id"].iloc[0] == "img0000"
    assert set(labels["cluster"]) <= set(range(10))
    report = json.loads((batch_job / "report.json").read_text())
    assert set(report["scores"]) == {"acc", "nmi", "ari", "purity"}
    assert report["n"] == 1797 and sum(report["sizes"].values()) == 1797


@needs_make
def test_makefile_example_reruns_only_what_changed(batch_job):
    # nothing changed: no deepcluster command runs (the settings stamps are checked silently)
    again = _make(batch_job)
    assert again.returncode == 0, again.stderr
    assert "deepcluster" not in again.stdout
    # a new K retrains from the kept autoencoder; a dry run says exactly that
    plan = _make(batch_job, "K=5", "-n").stdout
    assert "deepcluster pretrain" not in plan
    assert "deepcluster train" in plan and "-k 5" in plan
    assert "deepcluster assign" in plan and "deepcluster evaluate" in plan
    # new pretraining settings redo the whole chain after the data
    stamps = {p.name: p.read_bytes() for p in batch_job.glob("*.settings")}
    plan = _make(batch_job, "K=5", "LATENT=3", "-n").stdout
    assert "deepcluster pretrain" in plan and "digits_csv.py" not in plan
    # a dry run changes nothing: the stamps stay, so a plain make afterwards has nothing to do
    # (the stamps' recipes once ran under -n and left LATENT=3 behind: a needless retrain)
    assert {p.name: p.read_bytes() for p in batch_job.glob("*.settings")} == stamps
    assert "deepcluster" not in _make(batch_job).stdout
    # a dry run with the settings unchanged lists no command
    assert "deepcluster" not in _make(batch_job, "-n").stdout
    # another input redoes every step from it, even a file older than the outputs (its name
    # is in the stamps; make's dates alone said "nothing to be done")
    older = batch_job / "older.csv"
    lines = (batch_job / "digits.csv").read_text().splitlines(keepends=True)
    older.write_text("".join(lines[:301]))
    os.utime(older, (0, 0))
    plan = _make(batch_job, f"DATA={older}", "-n").stdout
    for step in ("pretrain", "train", "assign", "evaluate"):
        assert f"deepcluster {step}" in plan, step
    # another ground truth scores again and trains nothing
    plan = _make(batch_job, "TRUTH=", "-n").stdout
    assert "deepcluster evaluate" in plan and "--data" in plan
    assert "deepcluster train" not in plan and "deepcluster assign" not in plan
    # a method on the input features takes no autoencoder
    plan = _make(batch_job, "METHOD=kmeans", "-n").stdout
    assert "deepcluster train" in plan and "-m kmeans" in plan
    assert "--pretrained" not in plan and "deepcluster pretrain" not in plan
    assert {p.name: p.read_bytes() for p in batch_job.glob("*.settings")} == stamps


@needs_make
def test_makefile_example_runs_a_method_on_the_features_without_an_autoencoder(tmp_path):
    """METHOD=kmeans (or cm) failed: the job passed --pretrained to every method."""
    r = _make(tmp_path / "out", "METHOD=kmeans")
    assert r.returncode == 0, r.stdout + r.stderr
    assert not (tmp_path / "out" / "ae.pt").exists()
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["n"] == 1797
    # other columns retrain the model (its stamp left COLS out: only evaluate reran, and
    # scored the old 64-feature model)
    cols = "COLS=--id-column image_id --label-column label --columns px10,px20,px30"
    r = _make(tmp_path / "out", "METHOD=kmeans", cols)
    assert r.returncode == 0, r.stdout + r.stderr
    assert " train " in r.stdout and " assign " in r.stdout, r.stdout
    from deepcluster_cli.engine.checkpoint import load_checkpoint

    assert load_checkpoint(str(tmp_path / "out" / "model.pt")).schema["n_features"] == 3


@needs_make
def test_pipe_recipes_count_join_and_crosstab(batch_job, tmp_path):
    r = subprocess.run(
        ["bash", str(CLI / "recipes.sh"), batch_job / "labels.csv", batch_job / "digits.csv"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    sections = {}
    for block in r.stdout.split("## ")[1:]:
        title, _, body = block.partition("\n")
        sections[title.split(":")[0]] = body.strip().splitlines()
    labels = pd.read_csv(batch_job / "labels.csv")
    counts = {int(c): int(n) for n, c in (line.split() for line in sections["cluster sizes"])}
    assert counts == labels["cluster"].value_counts().to_dict()
    joined = sections["labels joined to the input rows on id"]
    assert joined[0].split(",")[:2] == ["img0000", str(labels["cluster"].iloc[0])]
    assert len(joined) == 5
    table = sections["clusters against classes"]
    assert table[0].split()[0] == "class" and len(table) == 2 + labels["cluster"].nunique()
    # the table pairs rows by id: labels sorted by cluster (the crosstab paired them by
    # position: a wrong table) and one shard's third (a traceback) give the right counts
    shuffled = tmp_path / "sorted.csv"
    labels.sort_values("cluster", kind="stable").to_csv(shuffled, index=False)
    third = tmp_path / "third.csv"
    labels.iloc[599:1198].to_csv(third, index=False)
    for path, rows in ((shuffled, labels), (third, labels.iloc[599:1198])):
        r = subprocess.run(
            ["bash", str(CLI / "recipes.sh"), path, batch_job / "digits.csv"],
            capture_output=True, text=True, env=_env(), timeout=120,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        got = r.stdout.split("## clusters against classes")[1].split("##")[0].splitlines()[3:]
        truth = pd.read_csv(batch_job / "digits.csv").set_index("image_id")["label"]
        want = pd.crosstab(rows["cluster"].to_numpy(), truth.loc[rows["id"]].to_numpy())
        assert [[int(v) for v in line.split()[1:]] for line in got] == want.to_numpy().tolist()


def test_launcher_runs_the_package(tmp_path):
    r = subprocess.run(
        [str(CLI / "deepcluster"), "--version"], capture_output=True, text=True, env=_env()
    )
    assert r.returncode == 0 and r.stdout.startswith("deepcluster "), r.stderr


@pytest.mark.parametrize("how", ["direct", "absolute link", "relative link", "link to a link"])
def test_launcher_finds_the_checkout_through_links(tmp_path, how):
    """'link this file into ~/bin': the launcher must put the checkout, not ~/bin's parent,
    on PYTHONPATH. A stand-in interpreter prints what it was given."""
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\necho "$PYTHONPATH"\n')
    fake.chmod(0o755)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    launcher = CLI / "deepcluster"
    if how == "direct":
        call = launcher
    elif how == "absolute link":
        call = bin_dir / "deepcluster"
        call.symlink_to(launcher)
    elif how == "relative link":
        call = bin_dir / "deepcluster"
        call.symlink_to(os.path.relpath(launcher, bin_dir))
    else:
        middle = tmp_path / "middle"
        middle.symlink_to(launcher)
        call = bin_dir / "deepcluster"
        call.symlink_to(middle)
    env = {**os.environ, "DEEPCLUSTER_PYTHON": str(fake)}
    r = subprocess.run([str(call), "--version"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().split(":")[0] == str(CLI.parent.resolve())


def test_train_log_format_json_is_one_object_per_line_on_stderr(cli, digits_csv, tmp_path):
    r = cli(
        "train", digits_csv, *COLS, "-m", "aekm", "-k", 4, *TINY_AEKM,
        "--log-format", "json", "-o", tmp_path / "m.pt",
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert r.stdout == ""
    records = [json.loads(line) for line in r.stderr.splitlines()]
    epochs = [rec for rec in records if rec["event"] == "epoch"]
    assert [rec["epoch"] for rec in epochs] == [1, 2]
    for rec in epochs:
        assert rec["stage"] == "pretrain" and rec["epochs"] == 2
        assert isinstance(rec["loss"], float) and rec["seconds"] >= 0
    assert any(rec["event"] == "info" and "wrote" in rec["message"] for rec in records)


def test_info_json_holds_the_epoch_rows_of_the_json_log(cli, digits_csv, tmp_path):
    # docs/recipes.md: the log's epoch rows are stored in the checkpoint, shown by info's JSON
    model = tmp_path / "m.pt"
    r = cli(
        "train", digits_csv, *COLS, "-m", "aekm", "-k", 4, *TINY_AEKM,
        "--log-format", "json", "-o", model,
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    records = [json.loads(line) for line in r.stderr.splitlines()]
    logged = [(rec["stage"], rec["epoch"], rec["loss"]) for rec in records if "stage" in rec]
    info = cli("info", model, "--format", "json")
    assert info.exit_code == 0, info.stderr
    history = json.loads(info.stdout)["history"]
    assert [(row["stage"], row["epoch"], row["loss"]) for row in history] == logged
    assert "history" not in cli("info", model).stdout  # the table keeps to the summary


def test_toml_config_applies_command_line_wins_and_checkpoint_records_it(cli, blobs_csv, tmp_path):
    from deepcluster_cli.engine.checkpoint import load_checkpoint

    config = tmp_path / "cm.toml"
    config.write_text(
        'preset = "mnist"\n'  # alpha 177, batch_size 111
        "alpha = 5.0\n"  # the file wins over the preset
        "epochs = 2\n"
        "lr = 0.01\n"  # --set wins over the file
        "batch_size = 40\n"  # --batch-size wins over the file
        "seed = 3\n"
        "init = 'kmeans++'\n"
    )
    model = tmp_path / "m.pt"
    r = cli(
        "train", blobs_csv, "--label-column", "label", "-m", "cm", "-k", 3,
        "--config", config, "--set", "lr=0.002", "--batch-size", 64, "-o", model, "--quiet",
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    info = cli("info", model, "--format", "json")
    assert info.exit_code == 0, info.stderr
    meta = json.loads(info.stdout)
    assert meta["preset"] == "mnist"
    cfg = meta["config"]
    assert (cfg["alpha"], cfg["epochs"], cfg["init"]) == (5.0, 2, "kmeans++")
    assert (cfg["lr"], cfg["batch_size"]) == (0.002, 64)
    assert load_checkpoint(str(model)).extra["seed"] == 3
    # an unknown key in the file is a usage error naming the file
    config.write_text("alpah = 1.0\n")
    r = cli("train", blobs_csv, "-m", "cm", "-k", 3, "--config", config, "-o", model)
    assert r.exit_code == 2 and "unknown setting 'alpah'" in r.stderr


def test_an_option_in_both_the_file_and_the_command_line_takes_the_command_line(
    cli, blobs_csv, tmp_path
):
    """`seed = 1` in the file with `--seed 3` on the command line failed: 'unknown setting
    seed' (the file's key was left over for the method's settings). The run options are keys
    of the file too: `quiet`, `log_format`, `max_time` were refused as unknown settings."""
    from deepcluster_cli.engine.checkpoint import load_checkpoint

    config = tmp_path / "run.toml"
    config.write_text(
        'seed = 1\nthreads = 1\nscale = "minmax"\nlog_format = "json"\nmax_time = 600\n'
    )
    model = tmp_path / "m.pt"
    base = ["train", blobs_csv, "--label-column", "label", "-m", "kmeans", "-k", 3, "-o", model]
    r = cli(*base, "--config", config, "--seed", 3, "--threads", 2, "--scale", "none")
    assert r.exit_code == 0, r.stderr
    ck = load_checkpoint(str(model))
    assert ck.extra["seed"] == 3 and ck.scaler["kind"] == "none"
    assert all(json.loads(line) for line in r.stderr.splitlines())  # the file's log_format
    r = cli(*base, "--config", config, "--log-format", "text")
    assert r.exit_code == 0, r.stderr
    assert r.stderr and not r.stderr.startswith("{")
    assert load_checkpoint(str(model)).extra["seed"] == 1
    config.write_text("quiet = true\n")
    r = cli(*base, "--config", config)
    assert r.exit_code == 0 and r.stderr == "", r.stderr


def test_show_completion_prints_a_bash_script_that_completes_commands():
    env = {**_env(), "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1", "SHELL": "/bin/bash"}
    cmd = [sys.executable, "-m", "deepcluster_cli"]
    r = subprocess.run([*cmd, "--show-completion", "bash"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "complete -o default -F _deepcluster_completion deepcluster" in r.stdout
    # what the installed script asks the program when the user presses TAB after `deepcluster tr`
    ask = {**env, "_DEEPCLUSTER_COMPLETE": "complete_bash", "COMP_CWORD": "1"}
    r = subprocess.run(
        [str(CLI / "deepcluster")],
        capture_output=True,
        text=True,
        env={**ask, "COMP_WORDS": "deepcluster tr"},
    )
    assert r.stdout.split() == ["train"], r.stderr
    # method names after `train DATA -m` and `methods`, from the registry
    for words, cword, want in (
        ("deepcluster train x.csv -m d", "4", ["dgg", "dec", "dcn"]),
        ("deepcluster methods c", "2", ["ckm", "cm", "cnet"]),
    ):
        r = subprocess.run(
            [str(CLI / "deepcluster")],
            capture_output=True,
            text=True,
            env={**ask, "COMP_WORDS": words, "COMP_CWORD": cword},
        )
        assert r.stdout.split() == want, (words, r.stdout, r.stderr)


def test_an_error_under_log_format_json_is_a_json_line_too(cli, digits_csv, tmp_path):
    """docs/recipes.md reads the log with jq; a plain error line broke that when a run failed."""
    for args in (
        [digits_csv, *COLS, "-m", "aekm", "-k", 5000],  # found after the reporter exists
        [tmp_path / "missing.csv", "-m", "aekm", "-k", 3],
    ):
        r = cli("train", *args, "--log-format", "json", "-o", tmp_path / "m.pt")
        assert r.exit_code == 2
        records = [json.loads(line) for line in r.stderr.splitlines()]
        assert records[-1]["event"] == "error" and records[-1]["exit_code"] == 2
        assert "5000" in records[-1]["message"] or "missing.csv" in records[-1]["message"]
        assert not (tmp_path / "m.pt").exists()
    r = cli("train", tmp_path / "missing.csv", "-m", "aekm", "-k", 3, "-o", tmp_path / "m.pt")
    assert r.stderr.startswith("deepcluster: error: ")  # text logs keep the plain line


def test_the_shipped_completion_scripts_are_current_and_load_in_bash():
    """cli/completion holds each shell's script for where the detection fails (`sh`, a
    script: `--show-completion bash` there printed nothing, or the wrong shell's script)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_scripts", CLI / "completion/make_scripts.py"
    )
    make_scripts = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_scripts)
    for shell, name in make_scripts.FILES.items():
        assert (CLI / "completion" / name).read_text() == make_scripts.script(shell), (
            f"cli/completion/{name} is stale: run `make completion`"
        )
    assert (CLI / "completion/_deepcluster").read_text().startswith("#compdef deepcluster\n")
    r = subprocess.run(
        ["bash", "--norc", "-c", f"source {CLI / 'completion/deepcluster.bash'}; complete -p deepcluster"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.stdout.strip() == "complete -o default -F _deepcluster_completion deepcluster"


def test_the_launcher_with_a_python_lacking_the_dependencies_says_so_in_one_line(tmp_path):
    """DEEPCLUSTER_PYTHON at an interpreter without typer ended in a traceback."""
    bare = tmp_path / "python"
    bare.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')  # -S: no site-packages
    bare.chmod(0o755)
    r = subprocess.run(
        [str(CLI / "deepcluster"), "--version"],
        capture_output=True, text=True, env={**_env(), "DEEPCLUSTER_PYTHON": str(bare)},
    )  # fmt: skip
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("deepcluster: error: this Python ("), lines
    assert "has no module" in lines[0] and "DEEPCLUSTER_PYTHON" in lines[0]
