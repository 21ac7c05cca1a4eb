"""Bags whose goals change per frame: record (--goals-file), read back, score per kind, report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from text4seg_ros.bag import messages as m
from text4seg_ros.bag.cli import main
from text4seg_ros.bag.reader import EvalBag
from text4seg_ros.bag.record_frames import (
    FrameGoal,
    FramePlan,
    read_goals_file,
    record_frames,
    write_goals_file,
)
from text4seg_ros.bag.report import decoding_table, per_kind_table, write_markdown
from text4seg_ros.bag.scoring import Answer, Scorer, decoding_summary, group_metrics
from text4seg_ros.model.types import Goal
from text4seg_ros.prompts import Task

START = 1_763_000_000_000_000_000
H, W = 12, 16


def box_mask(x1: int, y1: int, x2: int, y2: int) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[y1:y2, x1:x2] = True
    return mask


def scene(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8)


def label_map() -> np.ndarray:
    labels = np.zeros((H, W), np.uint8)
    labels[0:4, 0:4] = 1  # mug
    labels[6:10, 8:14] = 2  # ball
    return labels


def plans() -> list[FramePlan]:
    """Frame 0: a RES and an open-vocabulary goal; frame 1: a GRES goal with an empty target and
    a REC goal; frame 2: one RES goal without ground truth."""
    return [
        FramePlan(scene(0), [
            FrameGoal(Goal("red mug", Task.RES, "res_attr/0/0"), box_mask(0, 0, 4, 4)),
            FrameGoal(Goal("", Task.OPEN_VOCAB, "openvocab/0/1", ("mug", "ball")), label_map()),
        ]),
        FramePlan(scene(1), [
            FrameGoal(Goal("purple plates", Task.GRES, "gres_absent/1/0"), np.zeros((H, W), bool)),
            FrameGoal(Goal("blue ball", Task.REC, "rec/1/1"), box_mask(8, 6, 14, 10)),
        ]),
        FramePlan(scene(2), [FrameGoal(Goal("green block", Task.RES, "res_attr/2/0"))]),
    ]  # fmt: skip


@pytest.fixture
def frames_bag(tmp_path: Path) -> Path:
    record_frames(plans(), tmp_path / "bag", start_ns=START)
    return tmp_path / "bag"


def test_reader_gives_each_frame_its_own_goals_and_truth(frames_bag: Path) -> None:
    with EvalBag(frames_bag) as bag:
        assert [[g.id for g in goals] for goals in bag.frame_goals] == [
            ["res_attr/0/0", "openvocab/0/1"], ["gres_absent/1/0", "rec/1/1"], ["res_attr/2/0"],
        ]  # fmt: skip
        # one-shot goals: the previous frame's are gone before the next frame's arrive
        assert bag.goals_before == [set(), set(), set()]
        assert bag.pairs == 5 and len(bag.goals) == 5 and not bag.standing
        frames = list(bag.frames())
    # The node names an open-vocabulary goal without text by its classes.
    assert frames[0].goals[1].text == "mug|ball" and frames[0].goals[1].classes == ("mug", "ball")
    truth = frames[0].ground_truth
    assert truth["res_attr/0/0"].dtype == bool and truth["res_attr/0/0"].sum() == 16
    assert truth["openvocab/0/1"].dtype == np.uint8
    assert np.array_equal(truth["openvocab/0/1"], label_map())  # class indices kept
    assert not frames[1].ground_truth["gres_absent/1/0"].any()
    assert frames[2].ground_truth == {}  # no ground truth given for that goal
    assert np.array_equal(frames[1].rgb, scene(1))


def test_goal_messages_are_one_shot_and_logged_before_their_frame(frames_bag: Path) -> None:
    from rosbags.rosbag2 import Reader

    with Reader(frames_bag) as reader:
        log = [(c.topic, t, d) for c, t, d in reader.messages()]
    topics = [t for t, _, _ in log]
    assert topics == [m.GOALS_TOPIC, m.GOALS_TOPIC, m.IMAGE_TOPIC, m.GROUND_TRUTH_TOPIC] * 2 + [
        m.GOALS_TOPIC, m.IMAGE_TOPIC,
    ]  # fmt: skip
    goal = m.deserialize(log[1][2], m.GOAL_TYPE)
    assert goal.standing is False and goal.text == "" and list(goal.classes) == ["mug", "ball"]
    gt = m.deserialize(log[3][2], m.SEGMENTATION_ARRAY_TYPE).segmentations[1]
    assert list(gt.labels) == ["others", "mug", "ball"] and not gt.empty


def test_goals_file_round_trip_through_the_cli(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "scenes"
    (folder / "truth").mkdir(parents=True)
    on_disk = []
    for i, plan in enumerate(plans()):
        Image.fromarray(plan.image).save(folder / f"{i}.png")
        goals = []
        for k, g in enumerate(plan.goals):
            truth = None
            if g.truth is not None:
                truth = folder / "truth" / f"{i}_{k}.png"
                pixels = g.truth if g.truth.dtype == np.uint8 else g.truth * np.uint8(255)
                Image.fromarray(pixels.astype(np.uint8), mode="L").save(truth)
            goals.append(FrameGoal(g.goal, truth))
        on_disk.append(FramePlan(folder / f"{i}.png", goals))
    goals_file = write_goals_file(folder / "frames.jsonl", folder, on_disk)
    first = json.loads(goals_file.read_text().splitlines()[0])
    assert first["goals"][1] == {
        "text": "", "task": "open_vocab", "kind": "openvocab", "classes": ["mug", "ball"],
        "truth": "truth/0_1.png",
    }  # fmt: skip
    assert [len(p.goals) for p in read_goals_file(goals_file, folder)] == [2, 2, 1]
    bag = tmp_path / "bag"
    args = ["record-images", str(folder), str(bag), "--goals-file", str(goals_file)]
    assert main(args) == 0
    assert "3 frames" in capsys.readouterr().out
    with EvalBag(bag) as read:
        frames = list(read.frames())
    assert np.array_equal(frames[0].ground_truth["openvocab/0/1"], label_map())
    assert np.array_equal(frames[1].ground_truth["rec/1/1"], box_mask(8, 6, 14, 10))


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"image": "0.png"}', "expected {'image': ..., 'goals': [...]}"),
        ('{"image": "nope.png", "goals": []}', "does not exist"),
        ('{"image": "0.png", "goals": [{"text": "a", "kind": "Bad Kind"}]}', "kind must match"),
        ('{"image": "0.png", "goals": [{"text": "a|b"}]}', "would be rejected by the node"),
        ('{"image": "0.png", "goals": [{"text": "a", "truth": "t.png"}]}', "does not exist"),
        ('{"image": "0.png", "goals": []}', "frame 0 has no goal"),
        ('{"image": "0.png", "goals": [' + ", ".join(['{"text": "a"}'] * 9) + "]}", "takes 8"),
    ],
)
def test_bad_goals_files_exit_2_with_the_reason(tmp_path, capsys, line, message) -> None:
    Image.fromarray(scene(0)).save(tmp_path / "0.png")
    (tmp_path / "frames.jsonl").write_text(line + "\n")
    argv = ["record-images", str(tmp_path), str(tmp_path / "bag"), "--goals-file"]
    assert main([*argv, str(tmp_path / "frames.jsonl")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "bag").exists()


def test_goals_file_and_goal_flags_exclude_each_other(tmp_path: Path, capsys) -> None:
    (tmp_path / "f.jsonl").write_text("")
    argv = ["record-images", str(tmp_path), str(tmp_path / "bag"), "--goal", "a"]
    assert main([*argv, "--goals-file", str(tmp_path / "f.jsonl")]) == 2
    assert "replaces --goal and --masks" in capsys.readouterr().err


def answers_for(frame) -> dict[str, Answer]:
    """Frame 0: the mug exactly, the label map with the ball half found; frame 1: the empty
    target answered empty, the REC box shifted by one column; frame 2: anything."""
    half_ball = label_map()
    half_ball[6:10, 11:14] = 0
    by_frame = {
        0: {
            "res_attr/0/0": Answer(box_mask(0, 0, 4, 4), model_steps=4, descriptor="x"),
            "openvocab/0/1": Answer(half_ball != 0, model_steps=6, label_map=half_ball),
        },
        1: {
            "gres_absent/1/0": Answer(np.zeros((H, W), bool), model_steps=2),
            "rec/1/1": Answer(box_mask(9, 6, 15, 10), model_steps=4),
        },
        2: {"res_attr/2/0": Answer(box_mask(0, 0, 2, 2), model_steps=4)},
    }
    return by_frame[frame.index]


def scored(frames_bag: Path) -> Scorer:
    with EvalBag(frames_bag) as bag:
        scorer = Scorer(bag.goals, montage_frames={0, 1, 2})
        for frame in bag.frames():
            scorer.add_frame(frame, answers_for(frame), latency_s=0.1)
    for row, tokens in zip(scorer.rows, (40, 60, 10, 40, 20)):
        row.answer_tokens = tokens
    return scorer


def test_scorer_keeps_metrics_per_kind_and_scores_label_maps_class_by_class(frames_bag) -> None:
    scorer = scored(frames_bag)
    summary = scorer.summary()
    kinds = summary["per_kind"]
    assert list(kinds) == ["gres_absent", "openvocab", "rec", "res_attr"]
    assert kinds["res_attr"]["cIoU"] == 1.0 and kinds["res_attr"]["pairs"] == 2
    assert kinds["res_attr"]["answered"] == 2  # frame 2's goal has no truth: answered, unscored
    # open vocabulary: mug IoU 1, ball 12 of 24 pixels: cIoU (16 + 12) / (16 + 24)
    assert kinds["openvocab"]["cIoU"] == pytest.approx(28 / 40)
    assert kinds["openvocab"]["gIoU"] == pytest.approx(0.75)
    assert math.isnan(kinds["openvocab"]["Acc@0.5"])  # no single box to hit
    assert kinds["gres_absent"]["N-acc"] == 1.0 and kinds["gres_absent"]["task"] == "gres"
    # REC: boxes 24 px each, overlap 20: IoU 20 / 28 > 0.5
    assert kinds["rec"]["Acc@0.5"] == 1.0 and kinds["rec"]["task"] == "rec"
    row = next(r for r in scorer.rows if r.goal_id == "openvocab/0/1")
    assert row.kind == "openvocab" and row.iou == pytest.approx(0.75)
    both = group_metrics(kinds, ("res_attr", "rec"))
    assert both["cIoU"] == pytest.approx((16 + 20) / (16 + 28)) and both["Acc@0.5"] == 1.0
    assert math.isnan(group_metrics(kinds, ("res_spatial",))["cIoU"])
    # the montage takes, per sampled frame, a goal of the kind shown least so far
    assert [(s.frame, s.kind) for s in scorer.samples] == [
        (0, "res_attr"), (1, "gres_absent"), (2, "res_attr"),
    ]  # fmt: skip


def test_decoding_summary_relates_answer_tokens_to_model_calls(frames_bag) -> None:
    dec = decoding_summary(scored(frames_bag).rows)
    assert dec["goals"] == 5
    assert dec["model_calls_per_goal"] == pytest.approx(20 / 5)
    assert dec["answer_tokens_per_goal"] == pytest.approx(170 / 5)
    assert dec["tokens_per_call"] == pytest.approx(170 / 20)
    assert dec["per_kind"]["openvocab"]["tokens_per_call"] == pytest.approx(60 / 6)
    assert decoding_summary([])["tokens_per_call"] is None


def test_report_has_per_kind_and_decoding_tables(frames_bag, tmp_path: Path) -> None:
    summary = scored(frames_bag).summary()
    table = per_kind_table(summary)
    assert "| openvocab | open_vocab | 1 | 1 | 0.700 | 0.750 |" in table
    assert "| res_attr | res | 2 | 2 | 1.000 |" in table
    dec = decoding_table(summary)
    assert "| **all** | 5 | 4.0 | 34.0 | 8.50 |" in dec
    report = {**summary, "bag": "b", "mode": "node", "model": "m", "created": "now", "rows": []}
    write_markdown(report, tmp_path / "report.md", {"montage": "overlay_montage.png"})
    md = (tmp_path / "report.md").read_text()
    assert "## Per goal kind" in md and "## Decoding" in md and table in md


def test_label_map_montage_tile_tints_predicted_classes_and_outlines_true_ones() -> None:
    from text4seg_ros.bag.plots import CLASS_COLOURS, label_overlay

    rgb = np.zeros((H, W, 3), np.uint8)
    out = label_overlay(rgb, label_map(), label_map())
    first = (np.array(CLASS_COLOURS[0]) * 255).astype(np.uint8)
    assert np.array_equal(out[3, 0], first)  # the mug's border: its class colour
    assert np.array_equal(out[1, 1], (0.55 * first.astype(np.float32)).astype(np.uint8))
    assert not out[0, 8].any()  # others: the dimmed (black) frame


def test_a_goal_the_node_failed_is_an_error_row_not_a_score(frames_bag) -> None:
    with EvalBag(frames_bag) as bag:
        scorer = Scorer(bag.goals)
        frame = next(bag.frames())
    answers = answers_for(frame)
    answers["res_attr/0/0"].error = "RuntimeError: decode failed"
    rows = scorer.add_frame(frame, answers, latency_s=0.1)
    assert (rows[0].status, rows[0].error, rows[0].iou) == (
        "error", "RuntimeError: decode failed", None,
    )  # fmt: skip
    assert rows[1].status == "ok" and "res_attr" not in scorer.per_kind


def test_goal_sync_waits_for_each_frames_goals_and_notes_a_node_out_of_step() -> None:
    from text4seg_ros.bag import messages as msgs
    from text4seg_ros.bag.node_eval import GoalSync

    class Node:
        def __init__(self) -> None:
            self.calls: list = []
            self.active = set()

        def wait_goals(self, ids: set[str], timeout_s: float, exact: bool = False) -> None:
            assert exact
            self.calls.append(ids)
            if ids != self.active:
                raise TimeoutError(f"node lists goals {sorted(self.active)}, expected "
                                   f"{sorted(ids)}; log:\n...")  # fmt: skip

        def clear_goals(self) -> None:
            self.calls.append("clear")
            self.active = set()

    node = Node()
    sync = GoalSync(node, [{"a"}, {"b"}, {"c"}], [set(), set(), set()])
    sync(msgs.GOALS_TOPIC, 0)
    node.active = {"a"}  # the goal messages arrive
    sync(msgs.GOALS_TOPIC, 0)  # a frame's second goal message: no second wait
    sync(msgs.IMAGE_TOPIC, 0)
    # frame 0 fails as a whole: its one-shot goal stays; cleared before frame 1's goals
    sync(msgs.GOALS_TOPIC, 0)
    node.active = {"x"}  # the node never lists "b"
    sync(msgs.IMAGE_TOPIC, 0)  # noted, the run goes on
    node.active = set()
    sync(msgs.GOALS_TOPIC, 0)
    node.active = {"c"}
    sync(msgs.IMAGE_TOPIC, 0)
    sync(msgs.GOALS_TOPIC, 0)  # after the last frame: nothing to wait for
    assert node.calls == [set(), {"a"}, set(), "clear", {"b"}, set(), {"c"}]
    assert sync.out_of_step == [
        (1, "node lists goals ['a'], expected []"), (1, "node lists goals ['x'], expected ['b']"),
    ]  # fmt: skip
