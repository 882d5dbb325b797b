"""Render an evaluation report as a table, JSON, CSV or Markdown."""

from __future__ import annotations

import io
import json
import math

FORMATS = ("table", "json", "csv", "markdown")


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
