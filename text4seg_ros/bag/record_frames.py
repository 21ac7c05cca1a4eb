"""Bags whose goals change from frame to frame: ``text4seg-bag record-images --goals-file``.

Each frame's goals are one-shot ``Goal`` messages (``standing`` false: the node answers them on
the next frame and retires them), logged half a frame period before the image. Their ids are
``KIND/FRAME/K`` (:func:`frame_goal_id`): ``KIND`` tags what the goal tests (e.g. ``res_attr``,
``gres_absent``; the task when none is given; read back with
:func:`~text4seg_ros.bag.record.goal_kind`), ``FRAME`` the frame index, ``K`` the goal's index on
that frame. Ground truth goes on ``/ground_truth/segmentations`` as in
:mod:`~text4seg_ros.bag.record`; an open-vocabulary goal's is a label map (``mask`` mono8 pixel =
class index into ``labels`` = ``["others", *classes]``), as the node publishes it.

The goals file (``--goals-file``, JSON Lines) has one object per frame, in order::

    {"image": "scene_0000.png",
     "goals": [{"text": "the red mug", "task": "res", "kind": "res_attr",
                "truth": "truth/0000_0.png"},
               {"text": "", "task": "open_vocab", "classes": ["mug", "ball"],
                "kind": "openvocab", "truth": "truth/0000_1.png"}]}

Paths are relative to the image folder. ``task`` defaults to ``res``, ``kind`` to the task,
``truth`` to none (no ground truth for that goal).
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from rosbags.rosbag2 import Writer

from ..model.types import Goal
from ..prompts import Task
from ..ros.goals import GoalError, validate_goal
from . import messages as m
from .record import (
    STORAGES,
    RecordSummary,
    _goal_msg,
    ground_truth_segmentation,
    open_connections,
    write_image,
    write_truth,
)

KIND_PATTERN = re.compile(r"[a-z0-9_]+")


@dataclass(frozen=True)
class FrameGoal:
    """A goal asked on one frame and its ground truth (None: no ground truth).

    ``truth``: ``(H, W)`` bool mask (nonzero = target), or for an open-vocabulary goal an
    ``(H, W)`` integer label map (0 = others, ``i`` = ``goal.classes[i - 1]``); a path to a PNG
    holding either is read when the frame is written.
    """

    goal: Goal
    truth: np.ndarray | Path | None = None


@dataclass(frozen=True)
class FramePlan:
    """One frame of a :func:`record_frames` bag: the image (``(H, W, 3)`` uint8 RGB or a path)
    and the goals asked on it."""

    image: np.ndarray | Path
    goals: Sequence[FrameGoal]


def frame_goal_id(kind: str, frame: int, k: int) -> str:
    """``KIND/FRAME/K``, the id of the ``k``-th goal of frame ``frame`` (see module doc)."""
    return f"{kind}/{frame}/{k}"


def check_frame_goals(goals: Sequence[Goal], frame: int, max_goals: int = 8) -> None:
    """ValueError unless the node (``max_goals``, its default 8) accepts all of ``goals`` on one
    frame: validated texts, unique ids, at most ``max_goals``."""
    if not goals:
        raise ValueError(f"frame {frame} has no goal: the node answers nothing on it")
    if len(goals) > max_goals:
        raise ValueError(f"frame {frame} has {len(goals)} goals; the node takes {max_goals}")
    if len({g.id for g in goals}) != len(goals):
        raise ValueError(f"goal ids of frame {frame} must be unique")
    for g in goals:
        try:
            validate_goal(g.text, g.task.value, g.id, g.classes)
        except GoalError as exc:
            raise ValueError(f"goal {g.id!r} of frame {frame} would be rejected: {exc}") from None


def _read_truth(goal: FrameGoal, size: tuple[int, int]) -> np.ndarray | None:
    if goal.truth is None:
        return None
    if isinstance(goal.truth, np.ndarray):
        truth = goal.truth
    else:
        with Image.open(goal.truth) as img:
            truth = np.asarray(img)
    if truth.shape[:2] != size or truth.ndim != 2:
        raise ValueError(f"ground truth of goal {goal.goal.id!r} is {truth.shape}, image {size}")
    return truth if goal.goal.task is Task.OPEN_VOCAB else truth != 0


def _rgb(image: np.ndarray | Path) -> np.ndarray:
    if isinstance(image, np.ndarray):
        return np.ascontiguousarray(image, dtype=np.uint8)
    with Image.open(image) as img:
        return np.asarray(img.convert("RGB"))


def record_frames(
    frames: Sequence[FramePlan],
    out_bag: str | Path,
    *,
    rate: float = 10.0,
    storage: str = "mcap",
    frame_id: str = "camera",
    start_ns: int | None = None,
    progress: bool = False,
) -> RecordSummary:
    """Write a bag whose goals change from frame to frame (see module doc).

    Frame ``i`` is stamped ``start + (i + 1) / rate`` s; its goals (one-shot, checked with
    :func:`check_frame_goals`) are logged half a period earlier. ``RecordSummary.goals`` lists
    every goal of the bag in order. A write that fails part way removes the partial bag.
    """
    out_bag = Path(out_bag)
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {sorted(STORAGES)}, got {storage!r}")
    if not rate > 0:
        raise ValueError(f"rate must be > 0 frames per second, got {rate}")
    if not frames:
        raise ValueError("no frames to record")
    for i, plan in enumerate(frames):
        check_frame_goals([g.goal for g in plan.goals], i)
    start_ns = time.time_ns() if start_ns is None else int(start_ns)
    period_ns = round(1e9 / rate)
    counts = {m.GOALS_TOPIC: 0, m.IMAGE_TOPIC: 0, m.GROUND_TRUTH_TOPIC: 0}
    writer = Writer(out_bag, version=Writer.VERSION_LATEST, storage_plugin=STORAGES[storage])
    try:
        _write_frames(writer, frames, start_ns, period_ns, frame_id, counts, progress)
    except BaseException:
        shutil.rmtree(out_bag, ignore_errors=True)
        raise
    goals = [g.goal for plan in frames for g in plan.goals]
    return RecordSummary(
        bag=out_bag,
        storage=storage,
        frames=len(frames),
        goals=goals,
        ground_truth_goals=[
            g.goal.id for plan in frames for g in plan.goals if g.truth is not None
        ],
        start_ns=start_ns,
        topics={t: c for t, c in counts.items() if c or t != m.GROUND_TRUTH_TOPIC},
    )


def _write_frames(
    writer: Writer,
    frames: Sequence[FramePlan],
    start_ns: int,
    period_ns: int,
    frame_id: str,
    counts: dict[str, int],
    progress: bool,
) -> None:
    from tqdm import tqdm

    with writer:
        conn_goal, conn_img, conn_gt = open_connections(writer, truth=True)
        for i, plan in enumerate(tqdm(frames, desc="record", unit="frame", disable=not progress)):
            stamp = start_ns + (i + 1) * period_ns
            for goal in plan.goals:
                msg = _goal_msg(goal.goal, standing=False)
                writer.write(conn_goal, stamp - period_ns // 2, m.serialize(msg, m.GOAL_TYPE))
                counts[m.GOALS_TOPIC] += 1
            rgb = _rgb(plan.image)
            header = write_image(writer, conn_img, rgb, stamp, frame_id, counts)
            segs = []
            for goal in plan.goals:
                truth = _read_truth(goal, rgb.shape[:2])
                if truth is not None:
                    segs.append(ground_truth_segmentation(goal.goal, truth, header))
            if segs:
                write_truth(writer, conn_gt, stamp, header, segs, counts)


def read_goals_file(path: str | Path, image_dir: str | Path) -> list[FramePlan]:
    """The frames of a goals file (see module doc); ValueError naming the line on bad input."""
    path, image_dir = Path(path), Path(image_dir)
    if not path.is_file():
        raise FileNotFoundError(f"goals file {path} does not exist")
    plans = []
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        try:
            entry = json.loads(line)
            image = image_dir / entry["image"]
            raw_goals = entry["goals"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{where}: expected {{'image': ..., 'goals': [...]}}: {exc}") from None
        if not image.is_file():
            raise FileNotFoundError(f"{where}: image {image} does not exist")
        frame = len(plans)
        goals = []
        for k, raw in enumerate(raw_goals):
            if not isinstance(raw, dict):
                raise ValueError(f"{where}: goal {k} must be an object, got {raw!r:.60}")
            task = raw.get("task") or "res"
            kind = raw.get("kind") or task
            if not KIND_PATTERN.fullmatch(kind):
                raise ValueError(f"{where}: goal {k} kind must match [a-z0-9_]+, got {kind!r}")
            try:
                checked = validate_goal(
                    raw.get("text", ""), task, frame_goal_id(kind, frame, k),
                    list(raw.get("classes", [])),
                )  # fmt: skip
                # The text as given: an open-vocabulary goal without one stays without (the
                # node names it from its classes; "a|b" would be descriptor syntax in a message).
                text = str(raw.get("text", "")).strip()
                goal = Goal(text, checked.task, checked.id, checked.classes)
            except GoalError as exc:
                raise ValueError(
                    f"{where}: goal {k} would be rejected by the node: {exc}"
                ) from None
            truth = raw.get("truth")
            if truth is not None and not (image_dir / truth).is_file():
                raise FileNotFoundError(f"{where}: ground truth {image_dir / truth} does not exist")
            goals.append(FrameGoal(goal, None if truth is None else image_dir / truth))
        plans.append(FramePlan(image, goals))
    if not plans:
        raise ValueError(f"goals file {path} lists no frame")
    return plans


def write_goals_file(path: str | Path, image_dir: str | Path, plans: Sequence[FramePlan]) -> Path:
    """Write ``plans`` (images and truths given as paths under ``image_dir``) as a goals file."""
    path, image_dir = Path(path), Path(image_dir)
    lines = []
    for plan in plans:
        goals = []
        for g in plan.goals:
            entry = {
                "text": g.goal.text,
                "task": g.goal.task.value,
                "kind": g.goal.id.split("/")[0],
            }
            if g.goal.classes:
                entry["classes"] = list(g.goal.classes)
            if g.truth is not None:
                entry["truth"] = str(Path(g.truth).relative_to(image_dir))
            goals.append(entry)
        image = str(Path(plan.image).relative_to(image_dir))
        lines.append(json.dumps({"image": image, "goals": goals}))
    path.write_text("\n".join(lines) + "\n")
    return path
