"""The shipped demo model (models/demo) answers held-out tabletop scenes, and reads the words.

Fast: 10 held-out scenes (seeds 10,000,000 + i, never trained on), every goal kind answered in
one batch per frame through the Segmenter, scored against the exact pixel masks. The floors sit
at about half the figures measured on these scenes when the model was trained (models/demo/
README.md, run AM; on them res_attr cIoU 0.500, res_size 0.264, res_spatial 0.348, gres_multi
0.563, gres_single 0.492, rec 0.538, openvocab 0.414, instances 0.137; T-acc gres_multi 0.944,
gres_single 0.917, res_spatial 0.833; gres_absent N-acc 0.85), so a change that breaks
prompting, decoding or the model files shows up as a failure. The word-reading diagnostic
(training.demo_diagnose) on the same seeds: the object each colour + kind goal's answer
overlaps best is the named one in 1.0 of the answers on two-object scenes (chance 0.5) and 0.89
on 2 to 6 objects (chance 0.30), and no scene got the same mask for all its goals; of the 60
absent-target goals it marks 0.15, none of the 38 whose colour is not in the scene. The floors
there sit well above chance, so a model (or a prompt layout) that ignores the words fails. The
model is weak, so these are regression floors, not quality bars.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from text4seg_ros.model.segmenter import Segmenter
from text4seg_ros.model.types import Goal
from text4seg_ros.prompts import Task
from training.data.tabletop import GOAL_KINDS, draw_tabletop, scene_seed, tabletop_goals
from training.demo_diagnose import absent_marked, which_object
from training.demo_eval import evaluate_scenes

torch.set_num_threads(1)

DEMO = Path(__file__).resolve().parents[1] / "models" / "demo"
SCENES = [scene_seed("heldout", i) for i in range(10)]
# Floors on SCENES, about half the measured figures (module docstring).
MIN_CIOU = {"res_attr": 0.23, "res_size": 0.15, "res_spatial": 0.2, "gres_multi": 0.28,
            "gres_single": 0.23, "rec": 0.27, "openvocab": 0.19, "instances": 0.05}  # fmt: skip
# GRES goals with targets are answered (T-acc 0.92 to 0.94 here, one goal of 12 missed; 0.83
# to 0.86 before stage 3 had them)
MIN_TACC = {"gres_multi": 0.85, "gres_single": 0.9, "res_spatial": 0.5, "instances": 0.9}
MIN_NACC = 0.5
# which_object on SCENES: (objects per scene, footprint scale) -> floor of picked_target
MIN_PICKED = {((2, 2), 1.5): 0.7, ((2, 6), 1.0): 0.5}

pytestmark = pytest.mark.skipif(
    not (DEMO / "model.safetensors").is_file(),
    reason="models/demo has no model.safetensors: run `make demo-model` to train it",
)


@pytest.fixture(scope="module")
def segmenter() -> Segmenter:
    return Segmenter.from_pretrained(DEMO)  # grid from the model's text4seg.json


def test_the_model_is_small_and_carries_its_grid_and_layout() -> None:
    assert (DEMO / "model.safetensors").stat().st_size <= 20 * 2**20
    meta = json.loads((DEMO / "text4seg.json").read_text())
    # the question before the image; refiner "auto" (the node, the CLI) runs GrabCut
    assert meta == {"grid": 8, "prompt": "question_first", "refiner": "grabcut"}
    assert (DEMO / "config.json").is_file() and (DEMO / "tokenizer.json").is_file()


def test_held_out_scenes_meet_the_floors(segmenter: Segmenter) -> None:
    assert segmenter.grid == 8
    report = evaluate_scenes(segmenter, SCENES)
    for kind, r in report.items():
        assert r["valid"] == 1.0, (kind, r)  # every descriptor parsed without repair
        assert r["goals"] > 0
    assert set(report) == set(GOAL_KINDS)  # every kind asked and answered
    for kind, floor in MIN_CIOU.items():
        assert report[kind]["cIoU"] >= floor, (kind, report[kind])
    for kind, floor in MIN_TACC.items():
        assert report[kind]["T-acc"] >= floor, (kind, report[kind])
    assert report["gres_absent"]["N-acc"] >= MIN_NACC, report["gres_absent"]


def test_the_refiner_the_model_names_sharpens_its_answers(segmenter: Segmenter) -> None:
    """refiner "auto" runs the model's GrabCut: on SCENES it lifts cIoU by 0.25 (res_attr),
    0.36 (rec) and 0.27 (gres_multi) over the raw answers (models/demo/README.md,
    "Refinement"); the floor is a lift of 0.1 each."""
    kinds = ("res_attr", "rec", "gres_multi")
    raw = evaluate_scenes(segmenter, SCENES, kinds=kinds)
    refined = evaluate_scenes(Segmenter.from_pretrained(DEMO, refiner="auto"), SCENES, kinds=kinds)
    for kind in kinds:
        assert refined[kind]["cIoU"] >= raw[kind]["cIoU"] + 0.1, (kind, raw[kind], refined[kind])


def test_the_answer_marks_the_object_the_words_name(segmenter: Segmenter) -> None:
    for (n_objects, scale), floor in MIN_PICKED.items():
        r = which_object(segmenter, SCENES, n_objects=n_objects, scale=scale)
        assert r["goals"] >= 10 and r["answered"] >= 0.8, r
        assert r["picked_target"] >= floor > r["chance"] + 0.15, r
        assert r["identical"] <= 0.34, r  # seldom one mask for every goal of a scene


def test_absent_goals_are_checked_by_kind_as_well_as_colour(segmenter: Segmenter) -> None:
    """Of SCENES' 60 absent-target goals the model marks 0.15, and none of the 38 that name a
    colour the scene lacks (the model before the longer alignment marked 0.45 on 40 scenes,
    every absent kind plural among them: models/demo/README.md, run AF)."""
    r = absent_marked(segmenter, SCENES)
    assert r["goals"] >= 40 and r["marked"] <= 0.35, r
    lacking = ("kind_present", "neither_present", "colour_group")  # the colour word is absent
    n = sum(r[f"{g}_goals"] for g in lacking)
    assert n >= 20 and sum(r[g] * r[f"{g}_goals"] for g in lacking) <= 0.1 * n, r


def test_answers_have_frame_sized_masks_and_boxes(segmenter: Segmenter) -> None:
    scene = draw_tabletop(SCENES[0], (96, 128))
    goals = tabletop_goals(scene, SCENES[0])
    segmenter.set_image(scene.image)
    asked = [Goal(g.text, g.task, classes=tuple(g.classes)) for g in goals]
    results = segmenter.segment(asked)
    assert len(results) == len(goals)
    for goal, r in zip(goals, results):
        assert r.mask.shape == (96, 128) and r.mask.dtype == bool
        assert 0.0 <= r.score <= 1.0
        assert (r.box is None) == (not r.mask.any())
        if goal.task is Task.OPEN_VOCAB:
            assert r.label_map is not None and r.label_map.max() <= len(goal.classes)


def test_empty_answer_check_scores_as_the_decoder_does(segmenter: Segmenter) -> None:
    """training.demo_empty_check's teacher-forced scores agree with the decoder's own
    probabilities, and its rule behaves at the extremes (its findings: models/demo/README.md)."""
    from training.demo_empty_check import apply_rule, collect, summarise

    records = collect(segmenter, SCENES[:2])
    assert records and {r["kind"] for r in records} <= {"gres_absent", "gres_single", "gres_multi"}
    for r in records:
        assert r["greedy_score"] == pytest.approx(r["decoder"], abs=1e-3)
        assert r["greedy_score"] <= 0 and r["empty_score"] <= 0
        if r["is_empty"]:  # the greedy answer is the empty one: the same score
            assert r["empty_score"] == pytest.approx(r["greedy_score"], abs=1e-6)
    every = apply_rule(records, 1e9)  # the empty answer everywhere
    assert every["gres_absent"]["N-acc"] == 1.0
    assert all(every[k]["T-acc"] == 0.0 for k in ("gres_single", "gres_multi") if k in every)
    summary = summarise(records)
    assert summary["goals"] == len(records) and summary["greedy"] == apply_rule(records, None)
