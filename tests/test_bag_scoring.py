"""Rows, metrics and report files of text4seg-bag eval (bag.scoring, bag.report, bag.evaluate).

The segmenters here are deterministic stand-ins with known answers (a fixed box, a failure on
one frame), so every expected number is computed independently with numpy. The real model runs
in tests/test_bag_eval.py.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from text4seg_ros.bag.evaluate import REPORT_FILES, montage_frames, run_eval
from text4seg_ros.bag.reader import Frame
from text4seg_ros.bag.record import make_goals, record_images
from text4seg_ros.bag.scoring import Answer, Scorer, percentiles
from text4seg_ros.model.types import Goal, GoalResult
from text4seg_ros.prompts import Task

H, W = 20, 30


def box_mask(x1: int, y1: int, x2: int, y2: int) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[y1:y2, x1:x2] = True
    return mask


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return 1.0 if union == 0 else (a & b).sum() / union


def test_scorer_rows_statuses_and_metrics() -> None:
    goals = [Goal("a", Task.GRES, "a"), Goal("b", Task.RES, "b")]
    scorer = Scorer(goals, montage_frames={1})
    rgb = np.zeros((H, W, 3), np.uint8)
    gt_a = [box_mask(0, 0, 10, 10), np.zeros((H, W), bool), box_mask(5, 5, 15, 15)]
    pred_a = [box_mask(0, 0, 10, 5), np.zeros((H, W), bool), None]
    # frame 0: both answered; frame 1: a answered, b missing; frame 2: dropped.
    scorer.add_frame(
        Frame(0, 100, "c", rgb, {"a": gt_a[0]}),
        {"a": Answer(pred_a[0], 0.5), "b": Answer(box_mask(1, 1, 3, 3))},
        0.2,
    )
    scorer.add_frame(Frame(1, 200, "c", rgb, {"a": gt_a[1]}), {"a": Answer(pred_a[1])}, 0.4)
    scorer.add_frame(Frame(2, 300, "c", rgb, {"a": gt_a[2]}), None)
    rows = scorer.rows
    assert [(r.frame, r.goal_id, r.status) for r in rows] == [
        (0, "a", "ok"), (0, "b", "ok"), (1, "a", "ok"), (1, "b", "missing"),
        (2, "a", "dropped"), (2, "b", "dropped"),
    ]  # fmt: skip
    assert rows[0].iou == pytest.approx(0.5) and rows[0].pred_box == [0, 0, 10, 5]
    assert rows[0].gt_box == [0, 0, 10, 10] and rows[0].box_iou == pytest.approx(0.5)
    assert rows[0].hit is False  # Acc@0.5 needs IoU strictly above 0.5
    assert rows[1].has_ground_truth is False and rows[1].iou is None and rows[1].pred_empty is False
    assert rows[2].iou == 1.0 and rows[2].gt_empty and rows[2].hit is None  # empty on empty
    s = scorer.summary()
    assert s["pairs_in_bag"] == 6 and s["answered_pairs"] == 3 and s["failed_pairs"] == 3
    assert s["scored_pairs"] == 2 and s["dropped_frames"] == 1 and s["frames"] == 3
    assert s["cIoU"] == pytest.approx(50 / 100)  # frame 1 adds no pixels
    assert s["gIoU"] == pytest.approx((0.5 + 1.0) / 2)
    assert s["N-acc"] == 1.0 and s["T-acc"] == 1.0 and s["Acc@0.5"] == 0.0
    assert s["latency_s"]["p50"] == pytest.approx(0.3) and s["latency_s"]["max"] == 0.4
    assert math.isnan(s["per_goal"]["b"]["cIoU"])
    (sample,) = scorer.samples
    assert sample.frame == 1 and sample.goal_text == "a" and sample.iou == 1.0


def test_shape_mismatch_is_an_error_row_not_a_crash() -> None:
    scorer = Scorer([Goal("a", id="a")])
    frame = Frame(0, 1, "c", np.zeros((H, W, 3), np.uint8), {"a": box_mask(0, 0, 2, 2)})
    (row,) = scorer.add_frame(frame, {"a": Answer(np.zeros((5, 5), bool))}, 0.1)
    assert row.status == "error" and "mask shape (5, 5)" in row.error
    assert scorer.summary()["scored_pairs"] == 0


def test_each_pair_is_counted_once_for_global_and_per_goal_metrics(monkeypatch) -> None:
    from text4seg_ros.metrics import MaskMetrics

    calls = []
    update = MaskMetrics.update
    monkeypatch.setattr(
        MaskMetrics, "update", lambda self, p, t: calls.append(1) or update(self, p, t)
    )
    scorer = Scorer([Goal("a", id="a")])
    rgb = np.zeros((H, W, 3), np.uint8)
    for i, (pred, gt) in enumerate([((0, 0, 10, 5), (0, 0, 10, 10)), ((2, 2, 6, 6), (3, 3, 9, 9))]):
        scorer.add_frame(
            Frame(i, i, "c", rgb, {"a": box_mask(*gt)}), {"a": Answer(box_mask(*pred))}
        )
    assert len(calls) == 2  # one pixel count per scored pair
    s = scorer.summary()
    assert s["per_goal"]["a"] == {k: s[k] for k in s["per_goal"]["a"]}
    assert s["cIoU"] == pytest.approx((50 + 9) / (100 + 43))
    assert s["gIoU"] == pytest.approx((0.5 + 9 / 43) / 2)


def test_percentiles_and_montage_frames() -> None:
    p = percentiles([float(v) for v in range(1, 101)])
    assert p["p50"] == pytest.approx(50.5) and p["p99"] == pytest.approx(99.01)
    assert percentiles([])["p90"] is None
    assert montage_frames(50, 8) == {0, 7, 14, 21, 28, 35, 42, 49}
    assert montage_frames(3, 8) == {0, 1, 2} and montage_frames(0, 8) == set()


class BoxSegmenter:
    """Answers every goal with one fixed box; raises on the frame number ``fail_on``."""

    def __init__(self, box: tuple[int, int, int, int], fail_on: int = -1) -> None:
        self.box, self.fail_on, self.calls = box, fail_on, 0

    def set_image(self, image: np.ndarray) -> None:
        assert image.shape == (H, W, 3) and image.dtype == np.uint8
        self.calls += 1
        if self.calls - 1 == self.fail_on:
            raise RuntimeError("simulated engine failure")

    def segment(self, goals: Sequence[Goal]) -> list[GoalResult]:
        mask = box_mask(*self.box)
        return [GoalResult(g, mask, self.box, 0.9, "", [], 3) for g in goals]


@pytest.fixture
def small_bag(tmp_path: Path) -> tuple[Path, list[np.ndarray]]:
    (tmp_path / "img").mkdir()
    (tmp_path / "gt").mkdir()
    gts = [box_mask(2 * i, 0, 2 * i + 10, 10) for i in range(5)]
    for i, gt in enumerate(gts):
        Image.fromarray(np.full((H, W, 3), 40 * i, np.uint8)).save(tmp_path / "img" / f"{i}.png")
        Image.fromarray(gt.astype(np.uint8) * 255).save(tmp_path / "gt" / f"{i}.png")
    record_images(tmp_path / "img", tmp_path / "bag", goals=make_goals(["box", "none"]),
                  mask_dirs=[tmp_path / "gt"], storage="sqlite3", start_ns=1)  # fmt: skip
    return tmp_path / "bag", gts


def test_run_eval_writes_every_report_file(tmp_path: Path, small_bag, capsys) -> None:
    bag, gts = small_bag
    box = (0, 0, 10, 10)
    out = tmp_path / "report"
    run_eval(bag, out, model="box-stand-in", segmenter=BoxSegmenter(box, fail_on=3),
                      progress=False)  # fmt: skip
    printed = capsys.readouterr().out
    for name in REPORT_FILES.values():
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for name in ("overlay_montage.png", "iou_per_frame.png", "latency.png"):
        with Image.open(out / name) as img:
            assert img.format == "PNG" and img.size[0] > 100
    data = json.loads((out / "report.json").read_text())  # strict JSON (NaN written as null)
    assert data["pairs_in_bag"] == len(data["rows"]) == 10
    ious = [iou(box_mask(*box), gt) for i, gt in enumerate(gts) if i != 3]
    inter = sum((box_mask(*box) & gt).sum() for i, gt in enumerate(gts) if i != 3)
    union = sum((box_mask(*box) | gt).sum() for i, gt in enumerate(gts) if i != 3)
    assert data["cIoU"] == pytest.approx(inter / union)
    assert data["gIoU"] == pytest.approx(np.mean(ious))
    assert data["Acc@0.5"] == pytest.approx(np.mean([v > 0.5 for v in ious]))
    assert data["T-acc"] == 1.0 and data["N-acc"] is None
    assert data["dropped_frames"] == 1 and data["failed_pairs"] == 2
    errors = [r for r in data["rows"] if r["status"] == "error"]
    assert [r["frame"] for r in errors] == [3, 3]
    assert errors[0]["error"] == "RuntimeError: simulated engine failure"
    assert data["per_goal"]["g1"]["gIoU"] is None  # goal g1 ("none") has no ground truth
    for key in ("cIoU", "gIoU", "N-acc", "T-acc", "Acc@0.5"):
        assert key in data
    assert set(data["latency_s"]) == {"p50", "p90", "p99", "mean", "max"}
    assert data["latency_s"]["p50"] > 0
    md = (out / "report.md").read_text()
    assert "| cIoU | " in md and "![montage](overlay_montage.png)" in md
    assert "| 3 | g0 | error | RuntimeError: simulated engine failure |" in md
    assert f"| cIoU | {data['cIoU']:.4f} |" in printed
    assert "pairs in bag (answered, scored) | 10 (8, 4)" in printed


def test_eval_refuses_a_bag_without_goals(tmp_path: Path, small_bag) -> None:
    (tmp_path / "img2").mkdir()
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "img2" / "0.png")
    record_images(tmp_path / "img2", tmp_path / "nogoals")
    with pytest.raises(ValueError, match="has no goals"):
        run_eval(
            tmp_path / "nogoals", tmp_path / "r", model="x", segmenter=BoxSegmenter((0, 0, 1, 1))
        )
    with pytest.raises(ValueError, match="mode must be"):
        run_eval(small_bag[0], tmp_path / "r", model="x", mode="magic")
    with pytest.raises(FileNotFoundError, match="not a ROS 2 bag"):
        run_eval(tmp_path / "img2", tmp_path / "r", model="x", segmenter=BoxSegmenter((0, 0, 1, 1)))
