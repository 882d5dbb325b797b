"""Reports and pictures: render() formats, the HTML/Markdown document of evaluate --report,
generate --grid, and the one-line error when the plots extra (matplotlib) is missing."""

from __future__ import annotations

import base64
import json
import re
import sys

import numpy as np
import pytest

from deepcluster_cli.errors import UsageError
from deepcluster_cli.plots import (
    MISSING,
    embedding_map,
    have_matplotlib,
    image_grid,
    parse_image_shape,
    project_2d,
    training_curves,
)
from deepcluster_cli.report import Picture, confusion, document_format, render, render_document

PNG = b"\x89PNG\r\n\x1a\n"
COLS = ["--id-column", "image_id", "--label-column", "label"]
REPORT = {
    "n": 5,
    "scores": {"acc": 0.8, "nmi": float("nan")},
    "sizes": {"0": 2, "1": 3},
    "n_clusters": 2,
}


@pytest.fixture
def no_matplotlib(monkeypatch):
    """Make `import matplotlib` fail as it does where the plots extra is not installed."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)


# -- render: the stdout formats ----------------------------------------------------------------


def test_render_json_writes_nan_as_null():
    out = json.loads(render(REPORT, "json"))
    assert out["scores"] == {"acc": 0.8, "nmi": None} and out["sizes"] == {"0": 2, "1": 3}


def test_render_csv_table_and_markdown():
    assert render(REPORT, "csv") == "metric,value\nacc,0.8000\nnmi,nan\n"
    table = render(REPORT, "table")
    assert "acc  0.8000" in table and "cluster sizes: 0:2, 1:3" in table
    md = render(REPORT, "markdown").splitlines()
    assert md[:3] == ["| metric | value |", "|---|---|", "| acc | 0.8000 |"]
    assert "| 1 | 3 |" in md
    with pytest.raises(ValueError):
        render(REPORT, "yaml")


# -- the document --------------------------------------------------------------------------


def test_confusion_counts_rows_per_cluster_and_class():
    truth = np.array(["a", "a", "b", "b", "b"])
    pred = np.array([1, 1, 1, 0, 0])
    c = confusion(truth, pred)
    assert c == {"clusters": ["0", "1"], "classes": ["a", "b"], "counts": [[0, 2], [2, 1]]}


def test_document_format_by_extension():
    assert document_format("r.html") == "html" and document_format("R.MD") == "markdown"
    assert document_format("r.txt") is None and document_format("report") is None


def test_html_document_escapes_text_and_embeds_png():
    doc = {
        **REPORT,
        "confusion": {"clusters": ["0", "1"], "classes": ["<x>", "y"], "counts": [[1, 1], [0, 3]]},
        "sources": {"labels": "a&b.csv"},
    }
    html = render_document(doc, "html", pictures=[Picture("map", PNG + b"data")])
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert "<th>&lt;x&gt;</th>" in html and "a&amp;b.csv" in html and "<x>" not in html
    assert "<td>1</td><td>0</td><td>3</td><td>3</td>" in html  # a confusion row and its total
    src = re.search(r'src="data:image/png;base64,([^"]+)"', html).group(1)
    assert base64.b64decode(src) == PNG + b"data"


def test_markdown_document_has_tables_pictures_and_notes():
    md = render_document(
        {**REPORT, "model": {"method": "aekm"}},
        "markdown",
        pictures=[Picture("curves", PNG)],
        notes=["hello | world"],
    )
    assert "## Scores" in md and "| acc | 0.8000 |" in md and "| nan" in md
    assert "| 1 | 3 | 60.0% |" in md  # cluster sizes with their share
    assert "| method | aekm |" in md
    assert "![curves](data:image/png;base64," in md
    assert md.rstrip().endswith("> hello | world")


# -- pictures ------------------------------------------------------------------------------


def test_project_2d_is_pca_above_two_dims_and_pads_one():
    z = np.random.default_rng(0).normal(size=(50, 5))
    xy = project_2d(z)
    assert xy.shape == (50, 2)
    assert np.var(xy[:, 0]) >= np.var(xy[:, 1])  # the first component carries the most
    np.testing.assert_array_equal(project_2d(z[:, :1])[:, 1], 0.0)


def test_pictures_are_png():
    rng = np.random.default_rng(0)
    assert embedding_map(rng.normal(size=(40, 3)), rng.integers(0, 3, 40)).startswith(PNG)
    history = [
        {"stage": "pretrain", "epoch": e, "seconds": 0.1, "loss": 2.0 / e} for e in (1, 2, 3)
    ] + [{"stage": "cluster", "epoch": 1, "seconds": 0.1, "loss": -1.0, "kl": 0.5}]
    assert training_curves(history).startswith(PNG)
    assert training_curves([]) is None
    assert image_grid(rng.random((6, 12)), (3, 4), clusters=np.arange(6)).startswith(PNG)
    assert image_grid(rng.random((2, 12)), (2, 2, 3)).startswith(PNG)


def test_image_shape_parsing_and_mismatch():
    assert parse_image_shape("28x28") == (28, 28)
    assert parse_image_shape("32X32x3") == (32, 32, 3)
    for bad in ("28", "28x", "0x4", "4x4x2", "axb"):
        with pytest.raises(UsageError, match="--image-shape"):
            parse_image_shape(bad)
    with pytest.raises(UsageError, match="needs 16 features per row, the model generates 12"):
        image_grid(np.zeros((2, 12)), (4, 4))


def test_missing_matplotlib_is_a_one_line_usage_error(no_matplotlib):
    assert not have_matplotlib()
    with pytest.raises(UsageError) as err:
        embedding_map(np.zeros((4, 2)), np.array([0, 0, 1, 1]))
    assert str(err.value) == "install the plots extra: pip install 'deepcluster-cli[plots]'"


# -- the commands ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """aekm trained on digits (pretraining itself, so the checkpoint has a history), its
    labels and embedding; shared by the command tests below, which only read them."""
    import pandas as pd
    from sklearn.datasets import load_digits

    from tests.conftest import Cli

    cli, tmp = Cli(), tmp_path_factory.mktemp("report")
    d = load_digits()
    df = pd.DataFrame(d.data / 16.0, columns=[f"px{i}" for i in range(64)])
    df.insert(0, "image_id", [f"img{i:04d}" for i in range(len(df))])
    df["label"] = d.target
    data = tmp / "digits.csv"
    df.to_csv(data, index=False)
    model, labels, emb = tmp / "m.pt", tmp / "l.csv", tmp / "z.csv"
    r = cli(
        "train", data, *COLS, "-m", "aekm", "-k", 10, "--set", "arch=32",
        "--set", "latent=4", "--set", "pretrain_epochs=3", "--set", "n_init=2",
        "--threads", 1, "-o", model, "--quiet",
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    r = cli("assign", model, data, *COLS, "-o", labels, "--embedding", emb)
    assert r.exit_code == 0, r.stderr
    return {"model": model, "labels": labels, "embedding": emb, "data": data}


def _evaluate(cli, job, report, *extra):
    return cli(
        "evaluate", job["labels"], "--truth", job["data"], "--label-column", "label",
        "--model", job["model"], "--report", report, *extra,
    )  # fmt: skip


def _images(text: str) -> list[bytes]:
    return [
        base64.b64decode(s) for s in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text)
    ]


def test_evaluate_html_report_has_tables_map_and_curves(cli, job, tmp_path):
    report = tmp_path / "report.html"
    r = _evaluate(cli, job, report, "--embedding", job["embedding"], "--format", "json")
    assert r.exit_code == 0, r.stderr
    scores = json.loads(r.stdout)["scores"]  # stdout keeps its report
    html = report.read_text()
    assert f"<td>acc</td><td>{scores['acc']:.4f}</td>" in html
    assert "Confusion matrix" in html and "Cluster sizes" in html and "<td>aekm</td>" in html
    assert "2-D map of the embedding (PCA)" in html and "Training curves" in html
    images = _images(html)
    assert len(images) == 2 and all(img.startswith(PNG) for img in images)
    rows = re.findall(r"<tr><td>(\d+)</td>((?:<td>\d+</td>)+)</tr>", html.split("Confusion")[1])
    totals = [int(re.findall(r"\d+", cells)[-1]) for _, cells in rows[:10]]
    assert sum(totals) == 1797


def test_evaluate_report_maps_the_data_features_without_embedding(cli, job, tmp_path):
    report = tmp_path / "report.md"
    r = _evaluate(cli, job, report, "--data", job["data"], "--id-column", "image_id")
    assert r.exit_code == 0, r.stderr
    md = report.read_text()
    assert "## 2-D map of the features (PCA)" in md and "| silhouette |" in md
    assert "| model_loss |" in md  # the model's own criterion on --data
    assert len(_images(md)) == 2


def test_evaluate_reports_without_matplotlib(cli, job, tmp_path, no_matplotlib):
    html = tmp_path / "report.html"
    html.write_text("old")
    r = _evaluate(cli, job, html)
    assert r.exit_code == 2
    assert r.stderr.strip().splitlines() == [f"deepcluster: error: --report {html}: {MISSING}"]
    assert html.read_text() == "old"
    md = tmp_path / "report.md"
    r = _evaluate(cli, job, md, "--embedding", job["embedding"])
    assert r.exit_code == 0, r.stderr
    assert "no pictures" in r.stderr
    text = md.read_text()
    assert "## Confusion matrix" in text and not _images(text) and MISSING in text


def test_evaluate_report_needs_html_or_md(cli, job, tmp_path):
    r = _evaluate(cli, job, tmp_path / "report.pdf")
    assert r.exit_code == 2 and ".html or .md" in r.stderr


def test_generate_grid_draws_the_rows(cli, job, tmp_path):
    out, grid = tmp_path / "g.csv", tmp_path / "g.png"
    r = cli("generate", job["model"], "-o", out, "--grid", grid, "--image-shape", "8x8")
    assert r.exit_code == 0, r.stderr
    assert grid.read_bytes().startswith(PNG) and out.exists()
    from matplotlib.image import imread

    h, w = imread(str(grid)).shape[:2]
    assert w > h  # ten 8x8 images in one row


def test_generate_grid_errors_leave_no_output(cli, job, tmp_path, monkeypatch):
    out, grid = tmp_path / "g.csv", tmp_path / "g.png"
    r = cli("generate", job["model"], "-o", out, "--grid", grid)
    assert r.exit_code == 2 and "--image-shape" in r.stderr
    r = cli("generate", job["model"], "-o", out, "--grid", grid, "--image-shape", "7x7")
    assert r.exit_code == 2 and "needs 49 features per row, the model generates 64" in r.stderr
    assert not out.exists() and not grid.exists()
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    r = cli("generate", job["model"], "-o", out, "--grid", grid, "--image-shape", "8x8")
    assert r.exit_code == 2 and r.stderr.strip() == f"deepcluster: error: --grid: {MISSING}"
    assert not out.exists()
