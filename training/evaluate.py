"""Answer the goals of JSONL samples with a trained model: descriptor validity and IoU.

    python -m training.evaluate --model merged/ --data val.jsonl [--limit 50] [--grid 16]

For each referring sample (RES / GRES / REC) the image (cropped as the sample says) is encoded
once with ``Segmenter.set_image`` and the goal is answered with ``Segmenter.segment``. The target
is the sample's own descriptor decoded at image size (the best a perfect G x G answer can do), so
the IoU measures the model, not the grid. Reports the share of answers that parsed without any
repair, cIoU / gIoU / N-acc / T-acc (:class:`text4seg_ros.metrics.MaskMetrics`) and box
Acc@0.5 over goals with a target (:class:`text4seg_ros.metrics.RecAccuracy`; the target box is
``meta["box"]`` when the sample has one, the pixel box of the object, else the decoded target's
box), over all goals and per goal kind (``meta["kind"]``, e.g. the tabletop kinds
``res_attr``... of :mod:`training.data.tabletop`; the task where a sample has no kind).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from text4seg_ros.descriptors import decode_mask
from text4seg_ros.metrics import MaskMetrics, RecAccuracy, mask_to_box
from text4seg_ros.model.types import Goal
from text4seg_ros.prompts import Task

from .data.sample import ChatSample, read_jsonl
from .dataset import load_image

REFERRING = (Task.RES.value, Task.GRES.value, Task.REC.value)


class _Group:
    """Metrics of one group of goals."""

    def __init__(self) -> None:
        self.masks, self.boxes, self.valid = MaskMetrics(), RecAccuracy(), 0

    def update(self, pred: np.ndarray, target: np.ndarray, box: Any, valid: bool) -> float:
        iou = self.masks.update(pred, target)
        if box is not None:
            self.boxes.update(pred, box)
        self.valid += valid
        return iou

    def compute(self) -> dict[str, float]:
        report = self.masks.compute()
        report["Acc@0.5"] = self.boxes.compute()["Acc@0.5"]
        n = report["queries"]
        report["valid"] = self.valid / n if n else float("nan")
        return report


def evaluate(
    segmenter: Any, samples: Iterable[ChatSample], limit: int | None = None
) -> dict[str, Any]:
    """Answer up to ``limit`` referring samples; returns metrics and per-sample answers.

    ``segmenter``: a :class:`text4seg_ros.model.segmenter.Segmenter` (anything with
    ``set_image``/``segment``). Samples without ``meta["label"]`` or of other tasks are skipped.
    Returns ``{"metrics": {...}, "by_kind": {kind: {...}}, "answers": [...]}``.
    """
    total = _Group()
    groups: dict[str, _Group] = {}
    answers: list[dict[str, Any]] = []
    for sample in samples:
        if limit is not None and len(answers) >= limit:
            break
        label = sample.meta.get("label")
        if sample.task not in REFERRING or not label:
            continue
        image = np.asarray(load_image(sample))
        target = decode_mask(sample.answer, label, image.shape[:2], sample.grid)
        segmenter.set_image(image)
        (result,) = segmenter.segment([Goal(text=label, task=Task(sample.task))])
        box = tuple(sample.meta["box"]) if sample.meta.get("box") else mask_to_box(target)
        kind = str(sample.meta.get("kind") or sample.task)
        valid = not result.repairs
        iou = total.update(result.mask, target, box, valid)
        groups.setdefault(kind, _Group()).update(result.mask, target, box, valid)
        answers.append(
            {
                "id": sample.id,
                "kind": kind,
                "goal": label,
                "iou": iou,
                "repairs": len(result.repairs),
                "descriptor": result.descriptor,
            }
        )
    by_kind = {k: groups[k].compute() for k in sorted(groups)}
    return {"metrics": total.compute(), "by_kind": by_kind, "answers": answers}


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: print the metrics (JSON) and optionally write every answer."""
    from text4seg_ros.model.segmenter import Segmenter

    ap = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__)
    ap.add_argument("--model", required=True, help="merged model, or base with --adapter")
    ap.add_argument("--adapter", default=None, help="LoRA adapter directory")
    ap.add_argument("--data", required=True, type=Path, help="JSONL samples")
    ap.add_argument(
        "--grid", type=int, default=None, help="G (default: the model's text4seg.json, else 16)"
    )
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None, help="write answers as JSON here")
    args = ap.parse_args(argv)
    segmenter = Segmenter.from_pretrained(args.model, grid=args.grid, adapter=args.adapter)
    samples = [s for s in read_jsonl(args.data) if s.grid == segmenter.grid]
    result = evaluate(segmenter, samples, args.limit)
    print(json.dumps(result["metrics"]))
    for kind, report in result["by_kind"].items():
        print(kind, json.dumps({k: round(v, 3) for k, v in report.items()}))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
