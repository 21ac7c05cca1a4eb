"""Evaluation reports: ``report.json``, ``report.md`` and the metric table printed at the end.

``report.json`` holds the summary of :meth:`~text4seg_ros.bag.scoring.Scorer.summary`
(``pairs_in_bag``, ``cIoU``, ``gIoU``, ``N-acc``, ``T-acc``, ``Acc@0.5``, ``latency_s``
percentiles, ``dropped_frames``, ...), run information (``bag``, ``mode``, ``model``) and
``rows``: one object per (frame, goal) pair. Undefined metrics (NaN, e.g. N-acc without an empty
target) are written as ``null`` so the file is strict JSON.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

METRICS = ("cIoU", "gIoU", "N-acc", "T-acc", "Acc@0.5")


def _clean(value: Any) -> Any:
    """NaN/inf -> None, recursively, so ``json.dumps(allow_nan=False)`` succeeds."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _cell(text: Any) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _ms(value: Any) -> str:
    return "n/a" if value is None else f"{1000 * value:.1f} ms"


def metric_table(report: dict) -> str:
    """The Markdown metric table (also printed by the CLI)."""
    lat = report.get("latency_s", {})
    lines = [
        "| metric | value |",
        "|---|---|",
        *(f"| {name} | {_fmt(report.get(name))} |" for name in METRICS),
        f"| latency p50 / p90 / p99 | {_ms(lat.get('p50'))} / {_ms(lat.get('p90'))} / "
        f"{_ms(lat.get('p99'))} |",
        f"| frames (dropped) | {report['frames']} ({report['dropped_frames']}) |",
        f"| pairs in bag (answered, scored) | {report['pairs_in_bag']} "
        f"({report['answered_pairs']}, {report['scored_pairs']}) |",
    ]
    rt = report.get("roundtrip_s")
    if rt:
        lines.insert(
            -2,
            f"| round trip p50 / p90 / p99 | {_ms(rt.get('p50'))} / "
            f"{_ms(rt.get('p90'))} / {_ms(rt.get('p99'))} |",
        )
    return "\n".join(lines)


def per_goal_table(report: dict) -> str:
    """Markdown table of the metrics of each goal."""
    texts = {g["id"]: g["text"] for g in report["goals"]}
    lines = ["| goal | text | " + " | ".join(METRICS) + " |", "|---" * (2 + len(METRICS)) + "|"]
    for gid, values in report["per_goal"].items():
        cells = " | ".join(_fmt(values.get(n)) for n in METRICS)
        lines.append(f"| {_cell(gid)} | {_cell(texts.get(gid, ''))} | {cells} |")
    return "\n".join(lines)


def write_json(report: dict, path: Path) -> None:
    path.write_text(json.dumps(_clean(report), indent=1, allow_nan=False) + "\n")


def write_markdown(report: dict, path: Path, files: dict[str, str]) -> None:
    """``report.md``: run information, metric tables, figures and failed pairs."""
    failed = [r for r in report["rows"] if r["status"] != "ok"]
    lines = [
        "# text4seg bag evaluation",
        "",
        f"- bag: `{report['bag']}`",
        f"- mode: {report['mode']}",
        f"- model: `{report['model']}`",
        f"- created: {report['created']}",
        "",
        "## Metrics",
        "",
        metric_table(report),
        "",
        "Metrics cover answered pairs with ground truth; Acc@0.5 covers those with a non-empty "
        "target.",
        "",
        "## Per goal",
        "",
        per_goal_table(report),
        "",
        "## Figures",
        "",
        *(f"![{name}]({file})" for name, file in files.items() if file.endswith(".png")),
        "",
        f"## Pairs not answered ({len(failed)})",
        "",
    ]
    if failed:
        lines += ["| frame | goal | status | error |", "|---|---|---|---|"]
        lines += [
            f"| {r['frame']} | {_cell(r['goal_id'])} | {r['status']} | {_cell(r['error'])} |"
            for r in failed[:200]
        ]
        if len(failed) > 200:
            lines.append(f"\n... and {len(failed) - 200} more (see report.json)")
    else:
        lines.append("None.")
    path.write_text("\n".join(lines) + "\n")
