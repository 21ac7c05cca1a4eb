"""Segmenter results -> ROS messages (text4seg_ros.ros.messages) and diagnostics."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("text4seg_msgs")

from std_msgs.msg import Header  # noqa: E402

from text4seg_ros.descriptors.geometry import mask_to_box  # noqa: E402
from text4seg_ros.model.types import Goal, GoalResult  # noqa: E402
from text4seg_ros.prompts import Task  # noqa: E402
from text4seg_ros.ros import messages  # noqa: E402
from text4seg_ros.ros.diagnostics import NodeStats  # noqa: E402
from text4seg_ros.ros.goals import ActiveGoal  # noqa: E402
from text4seg_ros.ros.image import image_to_array  # noqa: E402


def result(goal: Goal, mask: np.ndarray, **kw) -> GoalResult:
    labels = kw.pop("labels", ["others", goal.text])
    return GoalResult(goal=goal, mask=mask, box=mask_to_box(mask), score=kw.pop("score", 0.8),
                      descriptor="<seg>...</seg>", labels=labels, model_steps=5, **kw)  # fmt: skip


def rect(h, w, x1, y1, x2, y2) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y1:y2, x1:x2] = True
    return m


HEADER = Header(frame_id="cam")


def test_res_goal_becomes_segmentation_detection_mask_and_overlay():
    entry = ActiveGoal(Goal("cup", id="c"), standing=True)
    items = messages.answers(entry, result(entry.goal, rect(10, 12, 2, 3, 6, 8)))
    arr = messages.segmentation_array(HEADER, items, latency_s=0.25)
    (seg,) = arr.segmentations
    assert (
        seg.header.frame_id == "cam"
        and seg.label == "cup"
        and list(seg.labels) == ["others", "cup"]
    )
    assert list(seg.box) == [2.0, 3.0, 6.0, 8.0] and not seg.empty and seg.instance == 0
    assert seg.latency_s == pytest.approx(0.25) and seg.model_steps == 5 and seg.repairs == 0
    assert np.array_equal(image_to_array(seg.mask) == 255, rect(10, 12, 2, 3, 6, 8))
    (det,) = messages.detection_array(HEADER, items).detections
    assert det.id == "c" and det.results[0].hypothesis.class_id == "cup"
    assert (det.bbox.center.position.x, det.bbox.center.position.y) == (4.0, 5.5)
    assert (det.bbox.size_x, det.bbox.size_y) == (4.0, 5.0)
    assert det.results[0].pose.pose.orientation.w == 1.0
    assert messages.detection_array(HEADER, items, score_threshold=0.9).detections == []
    ov = image_to_array(messages.overlay_image(HEADER, np.zeros((10, 12, 3), np.uint8), items))
    assert ov[5, 4].any() and not ov[0, 0].any() and ov.shape == (10, 12, 3)


def test_empty_and_small_masks_are_empty_with_zero_box_and_no_detection():
    entry = ActiveGoal(Goal("ghost", id="g", task=Task.GRES), standing=True)
    items = messages.answers(entry, result(entry.goal, rect(8, 8, 0, 0, 2, 1)), min_pixels=3)
    (seg,) = messages.segmentation_array(HEADER, items, 0.0).segmentations
    assert seg.empty and list(seg.box) == [0.0] * 4 and seg.task == "gres"
    assert not image_to_array(seg.mask).any()
    assert messages.detection_array(HEADER, items).detections == []


def test_answers_reuse_the_results_tight_box(monkeypatch):
    def no_recompute(mask):
        raise AssertionError("the result's box is already the tight box of its mask")

    monkeypatch.setattr(messages, "mask_to_box", no_recompute)
    entry = ActiveGoal(Goal("cup", id="c", task=Task.INSTANCES), standing=True)
    one, two = rect(10, 12, 2, 3, 6, 8), rect(10, 12, 8, 0, 10, 2)
    res = result(entry.goal, one | two)
    res.instances = [result(entry.goal, one), result(entry.goal, two)]
    goal, first, second = messages.answers(entry, res, min_pixels=5)
    assert goal.box == (2, 0, 10, 8) and first.box == (2, 3, 6, 8)
    assert second.box is None and not second.mask.any(), "4 pixels < min_pixels: empty"


def test_open_vocab_label_map_and_per_class_detections():
    goal = Goal("cup|plate", task=Task.OPEN_VOCAB, id="ov", classes=("cup", "plate"))
    label_map = np.zeros((6, 6), np.int64)
    label_map[0:2, 0:3] = 1
    label_map[4:6, 2:6] = 2
    res = result(goal, label_map > 0, labels=["others", "cup", "plate"], label_map=label_map)
    items = messages.answers(ActiveGoal(goal, True), res)
    (seg,) = messages.segmentation_array(HEADER, items, 0.0).segmentations
    assert np.array_equal(image_to_array(seg.mask), label_map.astype(np.uint8))
    dets = {d.id: d for d in messages.detection_array(HEADER, items).detections}
    assert set(dets) == {"ov/cup", "ov/plate"}
    assert (dets["ov/plate"].bbox.size_x, dets["ov/plate"].bbox.size_y) == (4.0, 2.0)


def test_instances_publish_each_instance_and_detect_instances_not_the_union():
    goal = Goal("mug", task=Task.INSTANCES, id="m")
    a, b = rect(8, 8, 0, 0, 2, 2), rect(8, 8, 5, 5, 8, 8)
    res = result(goal, a | b, instances=[result(goal, a), result(goal, b)])
    items = messages.answers(ActiveGoal(goal, True), res)
    segs = messages.segmentation_array(HEADER, items, 0.0).segmentations
    assert [s.instance for s in segs] == [0, 1, 2]
    assert [d.id for d in messages.detection_array(HEADER, items).detections] == ["m/1", "m/2"]


def test_overlay_is_the_shared_renderer_with_goal_colours_instances_and_legend():
    from text4seg_ros.overlay import PALETTE, Layer, render_overlay

    rgb = np.full((12, 12, 3), 40, np.uint8)
    cup = ActiveGoal(Goal("cup", id="c"), True)
    mug = ActiveGoal(Goal("mug", task=Task.INSTANCES, id="m"), True)
    a, b = rect(12, 12, 6, 0, 8, 2), rect(12, 12, 9, 9, 12, 12)
    items = messages.answers(cup, result(cup.goal, rect(12, 12, 0, 0, 4, 4))) + messages.answers(
        mug, result(mug.goal, a | b, instances=[result(mug.goal, a), result(mug.goal, b)])
    )
    layers = messages.overlay_layers(items)
    assert [(layer.colour, layer.label, layer.boxes) for layer in layers] == [
        (0, "cup", ((0, 0, 4, 4),)),
        (1, "mug", ((6, 0, 8, 2), (9, 9, 12, 12))),  # each instance's box, not the union's
    ]
    ov = image_to_array(messages.overlay_image(HEADER, rgb, items))
    assert np.array_equal(ov, render_overlay(rgb, layers))
    assert np.array_equal(ov[0, 6], PALETTE[1]) and np.array_equal(ov[9, 9], PALETTE[2])
    # an open-vocabulary goal adds the legend strip of its class names below the frame
    goal = Goal("scene", task=Task.OPEN_VOCAB, id="ov", classes=("cup", "plate"))
    label_map = np.zeros((12, 12), np.int64)
    label_map[:3] = 1
    res = result(goal, label_map > 0, labels=["others", "cup", "plate"], label_map=label_map)
    ov_items = messages.answers(ActiveGoal(goal, True), res)
    (layer,) = messages.overlay_layers(ov_items)
    assert layer.class_names == ("others", "cup", "plate") and isinstance(layer, Layer)
    ov = image_to_array(messages.overlay_image(HEADER, rgb, ov_items))
    assert ov.shape[0] > 12 and ov.shape[1] == 12


def test_mask_topic_union_and_label_map():
    g1 = ActiveGoal(Goal("a", id="1"), True)
    g2 = ActiveGoal(Goal("b", id="2"), True)
    items = messages.answers(g1, result(g1.goal, rect(4, 4, 0, 0, 2, 2))) + messages.answers(
        g2, result(g2.goal, rect(4, 4, 2, 2, 4, 4))
    )
    union = image_to_array(messages.mask_image(HEADER, items, (4, 4), "union"))
    assert union.sum() == 8 * 255
    labels = image_to_array(messages.mask_image(HEADER, items, (4, 4), "label_map"))
    assert labels[0, 0] == 1 and labels[3, 3] == 2 and labels[0, 3] == 0


def test_goal_msg_round_trip():
    msg = messages.goal_msg(ActiveGoal(Goal("x", Task.OPEN_VOCAB, "i", ("a",)), False))
    assert (msg.id, msg.text, msg.task, msg.standing, list(msg.classes)) == (
        "i", "x", "open_vocab", False, ["a"]
    )  # fmt: skip


def test_diagnostics_report_counts_rates_latency_and_levels():
    stats = NodeStats()
    stats.reject("images_rejected", "bad encoding")
    for lat in (0.1, 0.2, 0.3):
        stats.processed(lat)
    status = stats.status("n", "cpu", state="active", model="loaded", goals_active=2)
    values = {kv.key: kv.value for kv in status.values}
    assert values["images_rejected"] == "1" and values["last_rejection"] == "bad encoding"
    assert values["frames_processed"] == "3" and float(values["latency_max_s"]) == 0.3
    assert float(values["latency_p50_s"]) == pytest.approx(0.2) and values["goals_active"] == "2"
    assert float(values["rss_mb"]) > 10 and status.level == status.OK
    failed = stats.status("n", "cpu", state="unconfigured", model="failed: x", goals_active=0)
    assert failed.level == failed.ERROR
    stats.add("inference_errors")
    assert stats.status("n", "cpu", "active", "loaded", 0).level == status.WARN
    assert stats.status("n", "cpu", "active", "loaded", 0).level == status.OK  # no new errors
