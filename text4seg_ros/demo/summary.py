"""The demo's ``report.md``: what ``make demo`` measured, against the bars of issue 8.

Reads the two evaluation reports (``tabletop/report.json``: held-out tabletop scenes through the
node; ``davis/report.json``: the DAVIS blackswan frames, the real-camera path) and writes one
page: the per-kind metric table, the bars and whether each is met, model calls against answer
tokens per goal, wall times, and the figures of both runs.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from ..bag.report import decoding_table, metric_table, per_kind_table
from ..bag.scoring import group_metrics
from ..model.meta import REPO

CHECKPOINTS_DOC = "docs/checkpoints.md"
MIN_PAIRS = 300
MIN_TOKENS_PER_CALL = 5.0


@dataclass(frozen=True)
class Bar:
    """One bar of issue 8: ``metric`` of the goal ``kinds`` together must reach ``minimum``."""

    name: str
    kinds: tuple[str, ...]
    metric: str
    minimum: float


BARS: tuple[Bar, ...] = (
    Bar("RES single target", ("res_attr", "res_size"), "cIoU", 0.60),
    Bar("RES single target", ("res_attr", "res_size"), "Acc@0.5", 0.70),
    Bar("RES spatial relation", ("res_spatial",), "cIoU", 0.45),
    Bar("GRES with targets", ("gres_multi", "gres_single"), "cIoU", 0.50),
    Bar("GRES absent target", ("gres_absent",), "N-acc", 0.85),
    Bar("REC", ("rec",), "Acc@0.5", 0.70),
)


def _num(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def bar_rows(report: dict) -> list[dict]:
    """Each bar with the value measured in ``report`` and whether it is met."""
    rows = []
    per_kind = report.get("per_kind", {})
    for bar in BARS:
        value = group_metrics(per_kind, bar.kinds)[bar.metric]
        met = value is not None and math.isfinite(value) and value >= bar.minimum
        rows.append({"bar": bar, "value": value, "met": met})
    pairs, answered = report["pairs_in_bag"], report["answered_pairs"]
    rows.append(
        {"bar": Bar(f"pairs (at least {MIN_PAIRS})", (), "pairs", MIN_PAIRS), "value": pairs,
         "met": pairs >= MIN_PAIRS}
    )  # fmt: skip
    rows.append(
        {"bar": Bar("every pair answered", (), "answered", pairs), "value": answered,
         "met": answered == pairs}
    )  # fmt: skip
    ratio = (report.get("decoding") or {}).get("tokens_per_call")
    rows.append(
        {"bar": Bar("answer tokens per model call", (), "tokens/call", MIN_TOKENS_PER_CALL),
         "value": ratio, "met": ratio is not None and ratio >= MIN_TOKENS_PER_CALL}
    )  # fmt: skip
    return rows


def bars_table(report: dict) -> str:
    """Markdown table of :func:`bar_rows`."""
    lines = ["| bar | kinds | metric | needed | measured | met |", "|---|---|---|---|---|---|"]
    for row in bar_rows(report):
        bar = row["bar"]
        lines.append(
            f"| {bar.name} | {', '.join(bar.kinds) or '-'} | {bar.metric} | >= {bar.minimum:g} | "
            f"{_num(row['value']) if isinstance(row['value'], float) else row['value']} | "
            f"{'yes' if row['met'] else '**no**'} |"
        )
    return "\n".join(lines)


def _figures(name: str, report: dict) -> list[str]:
    files = report.get("files", {})
    return [
        f"![{name} {key}]({name}/{file})" for key, file in files.items() if file.endswith("png")
    ]


def write_summary(
    path: Path,
    tabletop: dict,
    davis: dict | None,
    *,
    model: str,
    params_file: str,
    timings_s: dict[str, float],
    davis_note: str = "",
    shipped: bool = True,
    threads: str | None = None,
    refiner: str = "",
) -> str:
    """Write the demo's ``report.md`` to ``path``; returns its text. ``shipped``: ``model`` is
    the shipped demo model (trained on tabletop scenes only; the DAVIS part says so).
    ``refiner``: what the node refined masks with, as the report names it."""
    from ..model.meta import model_grid

    dec = tabletop.get("decoding") or {}
    grid = model_grid(model) if Path(model).is_dir() else None
    grid_text = f"grid {grid} from its `text4seg.json`" if grid else "no `text4seg.json`: grid 16"
    checkpoints = os.path.relpath(REPO / CHECKPOINTS_DOC, path.parent)
    lines = [
        "# `make demo`: text4seg_ros on recorded data",
        "",
        f"- model: `{model}` ({grid_text})",
        f"- node parameters: `{params_file}` (the file the launch file uses)"
        + (f"; node process with `OMP_NUM_THREADS={threads}`" if threads else ""),
        *([f"- mask refiner: {refiner}"] if refiner else []),
        f"- created: {tabletop.get('created', '')}",
        "- wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings_s.items()),
        "",
        "## Held-out tabletop scenes through the node",
        "",
        f"Bag `{tabletop['bag']}`: {tabletop['frames']} frames, {tabletop['pairs_in_bag']} "
        "(frame, goal) pairs, goals of every kind, played to `perception_node` over DDS as "
        "fast as it answers. Details and every pair: [tabletop/report.md](tabletop/report.md).",
        "",
        "### Per goal kind",
        "",
        per_kind_table(tabletop),
        "",
        "### The bars of issue 8",
        "",
        bars_table(tabletop),
        "",
        "### Decoding: sequential model calls against answer tokens per goal",
        "",
        decoding_table(tabletop),
        "",
        f"With this model the decoder produced {_num(dec.get('tokens_per_call'), 2)} answer "
        f"tokens per sequential model call ({_num(dec.get('answer_tokens_per_goal'), 1)} tokens "
        f"in {_num(dec.get('model_calls_per_goal'), 1)} calls per goal, mean over "
        f"{dec.get('goals', 0)} answered goals).",
        "",
        "### All pairs",
        "",
        metric_table(tabletop),
        "",
        *_figures("tabletop", tabletop),
        "",
    ]
    lines += ["## Real camera frames: DAVIS blackswan", ""]
    if davis is None:
        lines += [davis_note or "Not run.", ""]
    else:
        caveat = (
            "**Quality on real images needs real weights.** The demo model was trained only on "
            "synthetic tabletop scenes; it has never seen a swan or a pond, so its masks here "
            "say nothing about what Text4Seg does on camera images."
            if shipped
            else "Quality on real images depends on the weights: this run used the model above."
        )
        lines += [
            f"{caveat} This run shows the real-camera path: 854 x 480 frames recorded to a bag, "
            "played to the node over DDS, answered and scored against DAVIS ground truth. To run "
            f"a published Text4Seg checkpoint, see [{CHECKPOINTS_DOC}]({checkpoints}).",
            "",
            f"Goal: {', '.join(repr(g['text']) for g in davis.get('goals', []))}. "
            f"Details: [davis/report.md](davis/report.md).",
            "",
            metric_table(davis),
            "",
            *_figures("davis", davis),
            "",
        ]
    text = "\n".join(lines)
    path.write_text(text)
    return text
