"""Offline evaluation of a text4seg bag: directly through a Segmenter, or through the live node.

:func:`evaluate_direct` answers every goal of the bag on every frame with a
:class:`~text4seg_ros.model.types.SegmenterLike` in this process. :func:`run_eval` adds the
report files in ``out_dir``:

* ``report.json``: summary, metrics by name and one row per (frame, goal) pair;
* ``report.md``: the same for people, with the figures;
* ``overlay_montage.png``, ``iou_per_frame.png``, ``latency.png`` (see :mod:`.plots`).
"""

from __future__ import annotations

import datetime as dt
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from ..model.types import SegmenterLike
from . import plots
from .reader import EvalBag
from .report import metric_table, montage_frames, write_json, write_markdown
from .scoring import Answer, Scorer
from .tokens import count_answer_tokens, load_token_counter

__all__ = ["REPORT_FILES", "evaluate_direct", "montage_frames", "run_eval", "write_reports"]

REPORT_FILES = {
    "json": "report.json",
    "markdown": "report.md",
    "montage": "overlay_montage.png",
    "iou_plot": "iou_per_frame.png",
    "latency_plot": "latency.png",
}


def _progress(total: int, enabled: bool, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="frame", disable=not enabled, dynamic_ncols=True)


def evaluate_direct(
    bag: EvalBag, segmenter: SegmenterLike, *, montage: int = 8, progress: bool = True
) -> Scorer:
    """Answer every goal on every frame of ``bag`` with ``segmenter``; returns the scorer.

    Each frame answers its own goals (``frame.goals``). Latency per frame is ``set_image`` +
    ``segment`` wall time (seconds). A frame whose ``set_image``/``segment`` raises gets
    ``error`` rows with the exception text; the run goes on.
    """
    if not bag.goals:
        raise ValueError(f"bag {bag.path} has no goals: record it with --goal TEXT")
    scorer = Scorer(bag.goals, montage_frames(bag.frame_count, montage))
    with _progress(bag.frame_count, progress, "eval (direct)") as bar:
        for frame in bag.frames():
            goals = bag.goals if frame.goals is None else frame.goals
            start = time.perf_counter()
            try:
                segmenter.set_image(frame.rgb)
                results = segmenter.segment(goals)
                if len(results) != len(goals):
                    raise RuntimeError(
                        f"segment returned {len(results)} results for {len(goals)} goals"
                    )
            except Exception as exc:  # one bad frame must not end an hour-long evaluation
                message = f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
                scorer.add_frame(frame, None, error=message)
            else:
                latency = time.perf_counter() - start
                answers = {
                    goal.id: Answer(
                        r.mask, r.score, r.model_steps, len(r.repairs), r.descriptor, r.label_map
                    )
                    for goal, r in zip(goals, results)
                }
                scorer.add_frame(frame, answers, latency)
            bar.update(1)
    return scorer


def load_segmenter(model: str | Path, **kwargs) -> SegmenterLike:
    """``Segmenter.from_pretrained(model, **kwargs)`` (imported here: it pulls in torch)."""
    from ..model.segmenter import Segmenter

    return Segmenter.from_pretrained(model, **kwargs)


def add_answer_tokens(scorer: Scorer, model: str | Path, descriptor: str = "isd") -> str:
    """Count every answered row's answer tokens with ``model``'s tokenizer (see :mod:`.tokens`);
    returns a note for the report ("" when every answered row was counted)."""
    try:
        counter = load_token_counter(model, descriptor)
    except (OSError, ValueError) as exc:
        return f"answer tokens not counted: cannot load the tokenizer of {model}: {exc}"
    done = count_answer_tokens(scorer.rows, scorer.goal_by_id, counter)
    answered = sum(r.status == "ok" for r in scorer.rows)
    return "" if done == answered else f"answer tokens counted for {done} of {answered} answers"


def write_reports(scorer: Scorer, out_dir: Path, info: dict, extra: dict | None = None) -> dict:
    """Write every file of :data:`REPORT_FILES` into ``out_dir``; returns the report dict."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {
        **info,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **scorer.summary(),
        **(extra or {}),
        "files": dict(REPORT_FILES),
        "rows": scorer.rows_as_dicts(),
    }
    plots.save_montage(scorer.samples, out_dir / REPORT_FILES["montage"])
    plots.save_iou_plot(scorer.rows, out_dir / REPORT_FILES["iou_plot"])
    plots.save_latency_plot(
        scorer.frame_latencies,
        out_dir / REPORT_FILES["latency_plot"],
        title=f"latency per frame ({info.get('mode', '')})",
    )
    write_json(report, out_dir / REPORT_FILES["json"])
    write_markdown(report, out_dir / REPORT_FILES["markdown"], REPORT_FILES)
    return report


def run_eval(
    bag_path: str | Path,
    out_dir: str | Path,
    *,
    model: str | Path,
    mode: str = "direct",
    segmenter: SegmenterLike | None = None,
    segmenter_kwargs: dict | None = None,
    node_kwargs: dict | None = None,
    montage: int = 8,
    progress: bool = True,
    echo: Callable[[str], None] | None = print,
) -> dict:
    """Evaluate ``bag_path`` and write the reports to ``out_dir``; returns the report dict.

    ``mode``: ``"direct"`` (a Segmenter in this process; ``segmenter`` may be given, else it is
    loaded from ``model``) or ``"node"`` (``perception_node`` as a subprocess, see
    :mod:`.node_eval`). ``echo`` receives the metric table at the end (None: silent).
    """
    if mode not in ("direct", "node"):
        raise ValueError(f"mode must be 'direct' or 'node', got {mode!r}")
    out_dir = Path(out_dir)
    info = {"bag": str(bag_path), "mode": mode, "model": str(model)}
    with EvalBag(bag_path) as bag:
        if mode == "direct":
            if segmenter is None:
                segmenter = load_segmenter(model, **(segmenter_kwargs or {}))
            scorer, extra = evaluate_direct(bag, segmenter, montage=montage, progress=progress), {}
        else:
            from .node_eval import evaluate_through_node

            kwargs = {"log_path": out_dir / "node.log", **(node_kwargs or {})}
            scorer, extra = evaluate_through_node(
                bag, model, montage=montage, progress=progress, **kwargs
            )
    note = add_answer_tokens(scorer, model)
    if note:
        extra = {**extra, "notes": [*extra.get("notes", []), note]}
    report = write_reports(scorer, out_dir, info, extra)
    if echo is not None:
        echo(metric_table(report))
        echo(f"report: {out_dir / REPORT_FILES['markdown']}")
    return report
