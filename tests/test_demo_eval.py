"""Per-kind evaluation: training.evaluate (descriptor targets) and training.demo_eval (pixel
targets) with oracle and blind segmenters, so the numbers are known exactly."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from text4seg_ros.metrics import mask_to_box
from text4seg_ros.model.types import Goal, GoalResult
from text4seg_ros.prompts import Task
from training.data.tabletop import draw_tabletop, scene_seed, tabletop_goals
from training.data.tabletop_samples import build_tabletop
from training.demo_eval import evaluate_scenes
from training.evaluate import evaluate

SEEDS = [scene_seed("heldout", i) for i in range(4)]
SIZE = (64, 64)


class Oracle:
    """Answers every goal with its exact target (``blind``: always the empty answer)."""

    def __init__(self, blind: bool = False) -> None:
        self.blind = blind
        self.truth: dict[tuple[bytes, str, str], object] = {}
        for seed in SEEDS:
            scene = draw_tabletop(seed, SIZE)
            for g in tabletop_goals(scene, seed):
                self.truth[(scene.image.tobytes(), g.text, g.task.value)] = g
        self.image = b""

    def set_image(self, image: np.ndarray) -> None:
        self.image = image.tobytes()
        self.shape = image.shape[:2]

    def segment(self, goals: Sequence[Goal]) -> list[GoalResult]:
        out = []
        for goal in goals:
            g = self.truth[(self.image, goal.text, goal.task.value)]
            mask = np.zeros(self.shape, bool) if self.blind else g.mask
            label_map = None
            if goal.task is Task.OPEN_VOCAB:
                label_map = np.zeros(self.shape, np.int64) if self.blind else g.label_map
            out.append(
                GoalResult(goal, mask, mask_to_box(mask), 1.0, "", [], 1, label_map=label_map)
            )
        return out


def test_demo_eval_reports_every_kind_exactly() -> None:
    perfect = evaluate_scenes(Oracle(), SEEDS, SIZE)
    assert {"res_attr", "gres_absent", "rec", "openvocab", "instances"} <= set(perfect)
    for kind, r in perfect.items():
        assert r["valid"] == 1.0 and r["goals"] > 0
        if kind == "gres_absent":
            assert r["N-acc"] == 1.0 and np.isnan(r["T-acc"])
        else:
            assert r["cIoU"] == 1.0 and r["Acc@0.5"] == 1.0, (kind, r)
    blind = evaluate_scenes(Oracle(blind=True), SEEDS, SIZE)
    assert blind["res_attr"]["cIoU"] == 0.0 and blind["res_attr"]["T-acc"] == 0.0
    assert blind["gres_absent"]["N-acc"] == 1.0 and blind["rec"]["Acc@0.5"] == 0.0
    only = evaluate_scenes(Oracle(), SEEDS, SIZE, kinds=["rec"])
    assert set(only) == {"rec"} and only["rec"]["goals"] == perfect["rec"]["goals"]


def test_training_evaluate_groups_by_kind(tmp_path: Path) -> None:
    samples = [s for s in build_tabletop(tmp_path, 3, split="heldout", size=SIZE, grid=8)]
    report = evaluate(Oracle(), samples)
    kinds = {s.meta["kind"] for s in samples if s.task in ("res", "gres", "rec")}
    assert set(report["by_kind"]) == kinds
    total = sum(r["queries"] for r in report["by_kind"].values())
    assert total == report["metrics"]["queries"] == len(report["answers"])
    # The oracle answers with pixel masks; targets are the G = 8 grids, so IoU is below 1
    # but boxes of the object (meta["box"]) still match.
    assert report["by_kind"]["rec"]["Acc@0.5"] == 1.0
    assert report["by_kind"]["gres_absent"]["N-acc"] == 1.0


DEMO = Path(__file__).resolve().parents[1] / "models" / "demo"


def test_demo_eval_command_refines_with_the_band_asked_for(tmp_path, monkeypatch) -> None:
    """``--refiner grabcut --band B`` cuts with that band; ``--band`` alone is refused."""
    from text4seg_ros.model.segmenter import Segmenter
    from text4seg_ros.refine import GrabCutRefiner
    from training.demo_eval import main

    if not (DEMO / "model.safetensors").is_file():
        pytest.skip("models/demo has no model.safetensors")
    with pytest.raises(SystemExit) as exc:
        main(["--model", str(DEMO), "--band", "0.25"])
    assert exc.value.code == 2
    used = []
    real_segment = Segmenter.segment

    def spy(self, goals, *a, **kw):
        used.append(self.refiner)
        return real_segment(self, goals, *a, **kw)

    monkeypatch.setattr(Segmenter, "segment", spy)
    out = tmp_path / "eval.json"
    argv = ["--model", str(DEMO), "--scenes", "2", "--kinds", "res_attr", "--out", str(out)]
    assert main([*argv, "--refiner", "grabcut", "--band", "0.25"]) == 0
    assert isinstance(used[-1], GrabCutRefiner) and used[-1].config.band == 0.25
    assert json.loads(out.read_text())["res_attr"]["goals"] > 0
    assert main([*argv, "--refiner", "none"]) == 0 and used[-1] is None
