"""Segmenter results -> ROS messages (text4seg_msgs, vision_msgs, mono8 masks, rgb8 overlay).

Every message carries the camera frame's header unchanged. Boxes are pixel edges
``(x1, y1, x2, y2)``, ``x2``/``y2`` exclusive, in the camera image frame; in
``vision_msgs/BoundingBox2D`` the same box is its centre ``((x1 + x2) / 2, (y1 + y2) / 2)`` and
size ``(x2 - x1, y2 - y1)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from text4seg_msgs.msg import Goal as GoalMsg
from text4seg_msgs.msg import Segmentation, SegmentationArray
from vision_msgs.msg import BoundingBox2D, Detection2D, Detection2DArray, ObjectHypothesisWithPose

from ..descriptors.geometry import mask_to_box
from ..model.types import GoalResult
from ..overlay import Layer, render_overlay
from ..prompts import Task
from .goals import ActiveGoal
from .image import array_to_image


@dataclass(frozen=True)
class Answer:
    """One published answer: a goal, or one instance of an instances goal (``instance >= 1``)."""

    goal_id: str
    goal_text: str
    task: str
    instance: int
    label: str
    labels: list[str]
    mask: np.ndarray  # (H, W) bool
    label_map: np.ndarray | None  # (H, W) int64 class indices for open_vocab
    box: tuple[int, int, int, int] | None
    score: float
    descriptor: str
    repairs: int
    model_steps: int
    error: str = ""  # non-empty: this goal failed on this frame (mask empty, no box)


def _clean(mask: np.ndarray, box: tuple | None, min_pixels: int) -> tuple[np.ndarray, tuple | None]:
    """``mask`` and ``box`` (the result's tight box), or empty and None below ``min_pixels``."""
    mask = np.asarray(mask, dtype=bool)
    if min_pixels and int(mask.sum()) < min_pixels:
        return np.zeros_like(mask), None
    return mask, box


def answers(entry: ActiveGoal, result: GoalResult, min_pixels: int = 0) -> list[Answer]:
    """The answers of one goal: the goal itself, then its instances (B-SD goals).

    Masks with fewer than ``min_pixels`` pixels are reported empty.
    """
    goal = entry.goal
    # labels[0] is "others"; the goal's own label follows (the goal text for referring tasks)
    label = result.labels[1] if len(result.labels) > 1 else goal.text
    if goal.task is Task.OPEN_VOCAB:
        label = goal.text
    mask, box = _clean(result.mask, result.box, min_pixels)
    label_map = result.label_map
    if label_map is not None and not mask.any():
        label_map = np.zeros_like(label_map)
    out = [
        Answer(
            goal.id,
            goal.text,
            goal.task.value,
            0,
            label,
            list(result.labels),
            mask,
            label_map,
            box,
            float(result.score),
            result.descriptor,
            len(result.repairs),
            int(result.model_steps),
        )
    ]
    for i, inst in enumerate(result.instances, start=1):
        inst_mask, inst_box = _clean(inst.mask, inst.box, min_pixels)
        out.append(
            Answer(
                goal.id,
                goal.text,
                goal.task.value,
                i,
                label,
                list(inst.labels or result.labels),
                inst_mask,
                None,
                inst_box,
                float(inst.score),
                inst.descriptor,
                len(inst.repairs),
                int(inst.model_steps),
            )
        )
    return out


def error_answer(entry: ActiveGoal, reason: str, shape: tuple[int, int]) -> Answer:
    """The error result of a goal that failed alone on a frame: empty ``shape`` mask, no box,
    score 0, ``error`` = ``reason``."""
    goal = entry.goal
    labels = ["others", *goal.classes] if goal.task is Task.OPEN_VOCAB else ["others", goal.text]
    return Answer(
        goal.id, goal.text, goal.task.value, 0, goal.text, labels,
        np.zeros(shape, dtype=bool), None, None, 0.0, "", 0, 0, error=reason,
    )  # fmt: skip


def mono8(mask: np.ndarray, label_map: np.ndarray | None = None) -> np.ndarray:
    """``(H, W)`` uint8: 255 where ``mask``, or the class indices of ``label_map`` (<= 255)."""
    if label_map is not None:
        return np.clip(label_map, 0, 255).astype(np.uint8)
    return np.where(mask, np.uint8(255), np.uint8(0))


def segmentation_array(
    header: Header, items: Sequence[Answer], latency_s: float
) -> SegmentationArray:
    """A ``SegmentationArray`` with one ``Segmentation`` per answer, in order."""
    out = SegmentationArray(header=header)
    for a in items:
        seg = Segmentation(header=header, goal_id=a.goal_id, goal_text=a.goal_text, task=a.task)
        seg.instance = a.instance
        seg.label = a.label
        seg.labels = a.labels
        seg.mask = array_to_image(mono8(a.mask, a.label_map), "mono8", header)
        seg.empty = not bool(a.mask.any())
        seg.box = [float(v) for v in (a.box or (0, 0, 0, 0))]
        seg.score = min(max(a.score, 0.0), 1.0)
        seg.descriptor = a.descriptor
        seg.repairs = a.repairs
        seg.model_steps = max(a.model_steps, 0)
        seg.latency_s = float(latency_s)
        seg.error = a.error
        out.segmentations.append(seg)
    return out


def _detection(header: Header, det_id: str, class_id: str, score: float, box) -> Detection2D:
    x1, y1, x2, y2 = box
    det = Detection2D(header=header, id=det_id)
    det.bbox = BoundingBox2D()
    det.bbox.center.position.x = (x1 + x2) / 2.0
    det.bbox.center.position.y = (y1 + y2) / 2.0
    det.bbox.size_x = float(x2 - x1)
    det.bbox.size_y = float(y2 - y1)
    hyp = ObjectHypothesisWithPose()
    hyp.hypothesis.class_id = class_id
    hyp.hypothesis.score = float(score)
    hyp.pose.pose.orientation.w = 1.0
    det.results.append(hyp)
    return det


def detection_array(
    header: Header, items: Sequence[Answer], score_threshold: float = 0.0
) -> Detection2DArray:
    """``vision_msgs/Detection2DArray``: one detection per non-empty answer above the threshold.

    Instances goals contribute their instances (not the union); open-vocabulary goals one
    detection per class present (``id`` ``goal_id/class``). ``class_id`` is the label text.
    """
    out = Detection2DArray(header=header)
    has_instances = {a.goal_id for a in items if a.instance > 0}
    for a in items:
        if a.box is None or a.score < score_threshold:
            continue
        if a.instance == 0 and a.goal_id in has_instances:
            continue
        if a.label_map is not None:
            for k in np.unique(a.label_map):
                if k == 0 or k >= len(a.labels):
                    continue
                box = mask_to_box(a.label_map == k)
                det_id = f"{a.goal_id}/{a.labels[k]}"
                out.detections.append(_detection(header, det_id, a.labels[k], a.score, box))
            continue
        det_id = a.goal_id if a.instance == 0 else f"{a.goal_id}/{a.instance}"
        out.detections.append(_detection(header, det_id, a.label, a.score, a.box))
    return out


def mask_image(header: Header, items: Sequence[Answer], shape: tuple[int, int], mode: str) -> Image:
    """The ``mask`` topic: mono8 ``union`` (255 = any goal) or ``label_map`` (goal index + 1)."""
    out = np.zeros(shape, dtype=np.uint8)
    goal_ids = list(dict.fromkeys(a.goal_id for a in items))
    for a in items:
        if a.instance > 0:
            continue
        out[a.mask] = 255 if mode == "union" else min(goal_ids.index(a.goal_id) + 1, 255)
    return array_to_image(out, "mono8", header)


def overlay_layers(items: Sequence[Answer]) -> list[Layer]:
    """One overlay layer per goal (in order, palette colour = goal index): its mask or label
    map, its instances' boxes (instances goals) or else its own box, named by the goal text."""
    instance_boxes: dict[str, list] = {}
    for a in items:
        if a.instance > 0 and a.box is not None:
            instance_boxes.setdefault(a.goal_id, []).append(a.box)
    layers = []
    for a in items:
        if a.instance > 0:
            continue
        boxes = instance_boxes.get(a.goal_id) or ([a.box] if a.box is not None else [])
        layers.append(
            Layer(
                mask=a.mask,
                colour=len(layers),
                boxes=tuple(tuple(int(v) for v in b) for b in boxes),
                label=a.goal_text if a.label_map is None else "",
                label_map=a.label_map,
                class_names=tuple(a.labels) if a.label_map is not None else (),
            )
        )
    return layers


def overlay_image(header: Header, rgb: np.ndarray, items: Sequence[Answer]) -> Image:
    """rgb8 debug image (:func:`text4seg_ros.overlay.render_overlay`): each goal's mask tinted
    in its palette colour, boxes outlined; with an open-vocabulary goal, a legend strip of the
    class names below the frame (the image is then taller than the camera frame)."""
    return array_to_image(render_overlay(rgb, overlay_layers(items)), "rgb8", header)


def goal_msg(entry: ActiveGoal) -> GoalMsg:
    """An active goal as a ``text4seg_msgs/Goal`` (for ``list_goals``)."""
    g = entry.goal
    return GoalMsg(
        id=g.id, text=g.text, task=g.task.value, standing=entry.standing, classes=list(g.classes)
    )
