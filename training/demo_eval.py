"""Evaluate a model on tabletop scenes against pixel ground truth, per goal kind.

    python -m training.demo_eval --model models/demo --split heldout --scenes 60 [--size 128]
        [--refiner auto|none|grabcut] [--band CELLS]

Each scene is drawn from its seed (:mod:`training.data.tabletop`), encoded once with
``Segmenter.set_image`` and all its goals answered in one ``segment`` batch, as the node does.
Targets are the exact pixel masks (not grids), so the numbers include the grid's own limit.
Per kind: cIoU / gIoU / N-acc / T-acc (:class:`~text4seg_ros.metrics.MaskMetrics`; open
vocabulary: one query per offered class, instances: the union of the instances), box Acc@0.5
over goals with a target (:class:`~text4seg_ros.metrics.RecAccuracy`), the share of answers
that parsed without repair, and the goals counted. Prints JSON; ``--out`` writes it too.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from text4seg_ros.metrics import MaskMetrics, RecAccuracy, mask_to_box
from text4seg_ros.model.types import Goal
from text4seg_ros.prompts import Task

from .data.tabletop import GOAL_KINDS, draw_tabletop, scene_seed, tabletop_goals


class _Kind:
    def __init__(self) -> None:
        self.masks, self.boxes, self.valid, self.n = MaskMetrics(), RecAccuracy(), 0, 0

    def add(self, pred: np.ndarray, target: np.ndarray) -> None:
        self.masks.update(pred, target)
        if target.any():
            self.boxes.update(pred, mask_to_box(target))

    def report(self) -> dict[str, float]:
        out = {k: float(v) for k, v in self.masks.compute().items()}
        out["Acc@0.5"] = float(self.boxes.compute()["Acc@0.5"])
        out["valid"] = self.valid / self.n if self.n else float("nan")
        out["goals"] = self.n
        return out


def evaluate_scenes(
    segmenter: Any,
    seeds: Sequence[int],
    size: tuple[int, int] = (128, 128),
    kinds: Sequence[str] = GOAL_KINDS,
) -> dict[str, dict[str, float]]:
    """Per-kind metrics of ``segmenter`` on the scenes of ``seeds`` (see module docstring)."""
    stats = {k: _Kind() for k in kinds}
    for seed in seeds:
        scene = draw_tabletop(seed, size)
        goals = [g for g in tabletop_goals(scene, seed) if g.kind in stats]
        if not goals:
            continue
        segmenter.set_image(scene.image)
        asked = [Goal(g.text, g.task, classes=tuple(g.classes)) for g in goals]
        for goal, result in zip(goals, segmenter.segment(asked)):
            st = stats[goal.kind]
            st.n += 1
            st.valid += not result.repairs
            if goal.task is Task.OPEN_VOCAB:
                pred_map = result.label_map
                for i in range(1, len(goal.classes) + 1):
                    st.add(pred_map == i, goal.label_map == i)
            else:
                st.add(result.mask, goal.mask)
    return {k: s.report() for k, s in stats.items() if s.n}


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: print per-kind metrics as JSON."""
    from text4seg_ros.model.segmenter import Segmenter

    ap = argparse.ArgumentParser(prog="python -m training.demo_eval", description=__doc__)
    ap.add_argument("--model", required=True)
    ap.add_argument("--split", choices=("train", "heldout"), default="heldout")
    ap.add_argument("--first", type=int, default=0)
    ap.add_argument("--scenes", type=int, default=60)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--grid", type=int, default=None, help="default: the model's text4seg.json")
    ap.add_argument("--kinds", default=",".join(GOAL_KINDS))
    ap.add_argument(
        "--refiner",
        choices=("auto", "none", "grabcut"),
        default="auto",
        help="mask refiner (auto: the model's own, its text4seg.json)",
    )
    ap.add_argument(
        "--band", type=float, default=None, help="with --refiner grabcut: its band, in grid cells"
    )
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.band is not None and args.refiner != "grabcut":
        ap.error("--band needs --refiner grabcut")
    refiner: Any = args.refiner
    if args.band is not None:  # the Segmenter takes a refiner object as it is
        from text4seg_ros.model.meta import resolve_grid
        from text4seg_ros.refine import GrabCutConfig, GrabCutRefiner

        grid = resolve_grid(args.model, args.grid)
        refiner = GrabCutRefiner(grid, GrabCutConfig(band=args.band))
    segmenter = Segmenter.from_pretrained(args.model, grid=args.grid, refiner=refiner)
    seeds = [scene_seed(args.split, i) for i in range(args.first, args.first + args.scenes)]
    start = time.perf_counter()
    report = evaluate_scenes(
        segmenter, seeds, (args.size, args.size), [k for k in args.kinds.split(",") if k]
    )
    for kind, r in report.items():
        print(kind, json.dumps({k: round(v, 3) for k, v in r.items()}))
    took = time.perf_counter() - start
    print(
        f"{args.scenes} {args.split} scenes in {took:.0f} s (G = {segmenter.grid}, "
        f"refiner {'none' if segmenter.refiner is None else type(segmenter.refiner).__name__})"
    )
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
