"""Evaluation reports: ``report.json``, ``report.md`` and the metric table printed at the end.

``report.json`` holds the summary of :meth:`~text4seg_ros.bag.scoring.Scorer.summary`
(``pairs_in_bag``, ``cIoU``, ``gIoU``, ``N-acc``, ``T-acc``, ``Acc@0.5``, ``latency_s``
percentiles, ``dropped_frames``, ...), run information (``bag``, ``mode``, ``model``) and
``rows``: one object per (frame, goal) pair. Undefined metrics (NaN, e.g. N-acc without an empty
target) are written as ``null`` so the file is strict JSON. ``per_kind`` holds the metrics of each
goal kind and ``decoding`` the model calls and answer tokens per goal
(:func:`~text4seg_ros.bag.scoring.decoding_summary`). :func:`montage_frames` picks the frames
of the overlay montage.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

METRICS = ("cIoU", "gIoU", "N-acc", "T-acc", "Acc@0.5")
PER_GOAL_ROWS = 24  # more goals than this (goals changing per frame): per-kind table only


def montage_frames(frame_count: int, count: int = 8) -> set[int]:
    """``count`` frame indices spread evenly over ``frame_count`` frames (first and last in)."""
    if frame_count <= 0 or count <= 0:
        return set()
    return {int(i) for i in np.linspace(0, frame_count - 1, min(count, frame_count)).round()}


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


def per_kind_table(report: dict) -> str:
    """Markdown table of the metrics of each goal kind (pairs, answered, then the metrics)."""
    lines = [
        "| kind | task | pairs | answered | " + " | ".join(METRICS) + " |",
        "|---" * (4 + len(METRICS)) + "|",
    ]
    for kind, v in report.get("per_kind", {}).items():
        cells = " | ".join(_fmt(v.get(n), 3) for n in METRICS)
        lines.append(
            f"| {_cell(kind)} | {v.get('task', '')} | {v.get('pairs', '')} | "
            f"{v.get('answered', '')} | {cells} |"
        )
    return "\n".join(lines)


def decoding_table(report: dict) -> str:
    """Markdown table: model calls and answer tokens per goal, and tokens per call, per kind."""
    dec = report.get("decoding") or {}
    lines = [
        "| kind | goals | model calls / goal | answer tokens / goal | tokens per call |",
        "|---|---|---|---|---|",
    ]

    def row(name: str, v: dict) -> str:
        return (
            f"| {_cell(name)} | {v.get('goals', 0)} | {_fmt(v.get('model_calls_per_goal'), 1)} | "
            f"{_fmt(v.get('answer_tokens_per_goal'), 1)} | {_fmt(v.get('tokens_per_call'), 2)} |"
        )

    lines += [row(k, v) for k, v in dec.get("per_kind", {}).items()]
    lines.append(row("**all**", dec))
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
        "## Per goal kind",
        "",
        per_kind_table(report),
        "",
        "Open-vocabulary goals count one query per class; instances goals are scored on the "
        "union of their instances. A kind's Acc@0.5 is the box accuracy over its pairs with a "
        "non-empty target.",
        "",
        *(
            ["## Per goal", "", per_goal_table(report), ""]
            if len(report.get("per_goal", {})) <= PER_GOAL_ROWS
            else []
        ),
        "## Decoding: model calls and answer tokens per goal",
        "",
        decoding_table(report),
        "",
        "Model calls: sequential forward calls a goal took part in (`model_steps`, its prompt "
        "prefill included); answer tokens: tokens of the answer the model wrote (its "
        "descriptor re-encoded with the model's tokenizer). Tokens per call > 1 is what "
        "jump-forward decoding of grammar-forced runs and draft tokens the model accepted save.",
        "",
        *(f"- note: {n}" for n in report.get("notes", [])),
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
