"""Render an evaluation report as a table, JSON, CSV or Markdown (``render``), or as a
self-contained HTML or Markdown document with tables and embedded PNG pictures
(``render_document``, for ``evaluate --report``)."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

FORMATS = ("table", "json", "csv", "markdown")
DOCUMENT_FORMATS = {".html": "html", ".htm": "html", ".md": "markdown", ".markdown": "markdown"}


def _num(v: float) -> str:
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def render(report: dict, fmt: str) -> str:
    """``report`` = {"n": int, "scores": {name: float}, "sizes": {cluster: count}}."""
    scores, sizes = report["scores"], report.get("sizes", {})
    if fmt == "json":
        clean = {
            k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in scores.items()
        }
        return json.dumps({**report, "scores": clean}, indent=2) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        out.write("metric,value\n")
        for k, v in scores.items():
            out.write(f"{k},{_num(v)}\n")
        return out.getvalue()
    if fmt == "markdown":
        lines = ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_num(v)} |" for k, v in scores.items()]
        lines += ["", "| cluster | size |", "|---|---|"]
        lines += [f"| {c} | {n} |" for c, n in sizes.items()]
        return "\n".join(lines) + "\n"
    if fmt == "table":
        width = max((len(k) for k in scores), default=6)
        lines = [f"{k:<{width}}  {_num(v)}" for k, v in scores.items()]
        lines.append(f"{'rows':<{width}}  {report.get('n', '')}")
        if sizes:
            lines.append("cluster sizes: " + ", ".join(f"{c}:{n}" for c, n in sizes.items()))
        return "\n".join(lines) + "\n"
    raise ValueError(fmt)


# -- documents: evaluate --report FILE.html / FILE.md ------------------------------------------


@dataclass(frozen=True)
class Picture:
    title: str
    png: bytes

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


def document_format(path: str) -> str | None:
    """``html`` or ``markdown`` by the file's extension; None for any other."""
    suffix = "." + path.rsplit(".", 1)[-1].lower() if "." in path else ""
    return DOCUMENT_FORMATS.get(suffix)


def confusion(truth: np.ndarray, pred: np.ndarray) -> dict:
    """Counts of rows per (cluster, class): ``{"clusters", "classes", "counts"}`` with
    ``counts[i][j]`` the rows of cluster ``clusters[i]`` whose class is ``classes[j]``."""
    from deepcluster_cli.metrics import contingency

    truth, pred = np.asarray(truth).reshape(-1), np.asarray(pred).reshape(-1)
    counts = contingency(truth, pred)  # (clusters, classes)
    return {
        "clusters": [str(v) for v in np.unique(pred)],
        "classes": [str(v) for v in np.unique(truth)],
        "counts": counts.tolist(),
    }


def _sections(report: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """The document's tables: (title, header, rows), all cells as strings."""
    out = []
    rows = [[k, _num(v)] for k, v in report.get("scores", {}).items()]
    rows.append(["rows", str(report.get("n", ""))])
    rows.append(["clusters", str(report.get("n_clusters", len(report.get("sizes", {}))))])
    out.append(("Scores", ["metric", "value"], rows))
    sizes = report.get("sizes", {})
    if sizes:
        total = sum(sizes.values()) or 1
        out.append(
            (
                "Cluster sizes",
                ["cluster", "rows", "share"],
                [[c, str(n), f"{n / total:.1%}"] for c, n in sizes.items()],
            )
        )
    conf = report.get("confusion")
    if conf:
        header = ["cluster \\ class", *conf["classes"], "total"]
        body = [
            [c, *(str(v) for v in row), str(sum(row))]
            for c, row in zip(conf["clusters"], conf["counts"])
        ]
        out.append(("Confusion matrix (rows: clusters, columns: classes)", header, body))
    model = report.get("model")
    if model:
        out.append(("Model", ["field", "value"], [[k, str(v)] for k, v in model.items()]))
    sources = report.get("sources")
    if sources:
        out.append(("Inputs", ["input", "file"], [[k, str(v)] for k, v in sources.items()]))
    return out


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_document(
    report: dict,
    fmt: str,
    *,
    pictures: Sequence[Picture] = (),
    title: str = "deepcluster evaluation report",
    notes: Sequence[str] = (),
) -> str:
    """A self-contained ``html`` or ``markdown`` document: the score, size, confusion, model
    and input tables, then ``pictures`` embedded as base64 PNG, then ``notes``."""
    sections = _sections(report)
    if fmt == "markdown":
        lines = [f"# {title}", ""]
        for name, header, rows in sections:
            lines += [f"## {name}", ""]
            lines.append("| " + " | ".join(_md_cell(h) for h in header) + " |")
            lines.append("|" + "---|" * len(header))
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            lines.append("")
        for pic in pictures:
            lines += [f"## {pic.title}", "", f"![{pic.title}]({pic.data_uri})", ""]
        lines += [f"> {note}" for note in notes]
        return "\n".join(lines).rstrip("\n") + "\n"
    if fmt == "html":
        e = html.escape
        parts = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{e(title)}</title>",
            "<style>body{font-family:sans-serif;margin:2em;max-width:70em}"
            "table{border-collapse:collapse;margin-bottom:1.5em}"
            "th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}"
            "th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}"
            "img{max-width:100%}</style>",
            "</head><body>",
            f"<h1>{e(title)}</h1>",
        ]
        for name, header, rows in sections:
            parts.append(f"<h2>{e(name)}</h2>")
            parts.append("<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in header))
            parts.append("</tr></thead><tbody>")
            for row in rows:
                parts.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>")
            parts.append("</tbody></table>")
        for pic in pictures:
            parts.append(f"<h2>{e(pic.title)}</h2>")
            parts.append(f'<img alt="{e(pic.title)}" src="{pic.data_uri}">')
        parts += [f"<p><em>{e(note)}</em></p>" for note in notes]
        parts.append("</body></html>")
        return "\n".join(parts) + "\n"
    raise ValueError(fmt)
