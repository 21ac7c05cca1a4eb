"""Read a text4seg bag for evaluation: goals, camera frames and per-goal ground truth.

Frames are the messages on the image topic, in log-time order. Ground truth is matched to a
frame by header stamp (nanoseconds) and to a goal by ``goal_id``; it is read in a first pass and
kept bit-packed (about 51 kB per 854 x 480 mask), so images stream one at a time.

The goals of each frame are rebuilt from the goals topic with the node's own
:class:`~text4seg_ros.ros.goals.GoalBook` and :func:`~text4seg_ros.ros.goals.validate_goal`, in
log order with the images: the last definition of an id wins, a ``cancel`` removes it, an unnamed
goal gets the ``gN`` id the node would give it, a goal the node would reject is left out (listed
in :attr:`EvalBag.rejected_goals`), and a one-shot goal (``standing`` false) is answered by the
next frame only. So a frame's goals are exactly what the node answers on it when the goals
reach it before the frame. Ground truth of open-vocabulary goals is a label map (``uint8``
class indices); of any other goal a bool mask.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import Reader

from ..model.types import Goal
from ..prompts import Task
from ..ros.goals import GoalBook, GoalError, validate_goal
from . import messages as m


@dataclass
class Frame:
    """One camera frame: ``rgb`` is ``(H, W, 3)`` uint8; ``ground_truth`` maps goal id to an
    ``(H, W)`` bool mask, or ``uint8`` label map for open-vocabulary goals (only goals with
    ground truth on this frame); ``goals``: the goals active on this frame, in the node's order
    (None: the scorer's goal list)."""

    index: int
    stamp_ns: int
    frame_id: str
    rgb: np.ndarray
    ground_truth: dict[str, np.ndarray] = field(default_factory=dict)
    goals: list[Goal] | None = None


@dataclass
class PackedMask:
    """An ``(H, W)`` bool mask stored as bits (1/8 of the bytes) while many are held."""

    bits: np.ndarray
    shape: tuple[int, int]

    @classmethod
    def pack(cls, mask: np.ndarray) -> PackedMask:
        return cls(np.packbits(mask, axis=None), mask.shape)

    def unpack(self) -> np.ndarray:
        count = self.shape[0] * self.shape[1]
        return np.unpackbits(self.bits, count=count).reshape(self.shape).astype(bool)


def goal_from_msg(msg: object) -> Goal:
    """:class:`Goal` from a ``text4seg_msgs/Goal`` (rosbags or rclpy object)."""
    return Goal(
        text=str(msg.text),
        task=Task.parse(str(msg.task)),
        id=str(msg.id),
        classes=tuple(str(c) for c in msg.classes),
    )


class EvalBag:
    """A bag opened for evaluation (use as a context manager or call :meth:`close`).

    Raises ``ValueError`` when the bag has no image topic of type ``sensor_msgs/msg/Image``.
    """

    def __init__(
        self,
        path: str | Path,
        image_topic: str = m.IMAGE_TOPIC,
        goals_topic: str = m.GOALS_TOPIC,
        ground_truth_topic: str = m.GROUND_TRUTH_TOPIC,
    ) -> None:
        self.path = Path(path)
        if not (self.path / "metadata.yaml").is_file():
            raise FileNotFoundError(f"{self.path} is not a ROS 2 bag (no metadata.yaml)")
        self._reader = Reader(self.path)
        self._reader.open()
        conns = self._reader.connections
        self._images = [c for c in conns if c.topic == image_topic and c.msgtype == m.IMAGE_TYPE]
        if not self._images:
            topics = sorted({f"{c.topic} ({c.msgtype})" for c in conns})
            self.close()
            raise ValueError(
                f"bag {self.path} has no {m.IMAGE_TYPE} on {image_topic}; it has {topics}"
            )
        self.frame_count = sum(c.msgcount for c in self._images)
        self._read_goals([c for c in conns if c.topic == goals_topic])
        self._truth = self._read_truth([c for c in conns if c.topic == ground_truth_topic])

    def _read_goals(self, conns: list) -> None:
        """Fill :attr:`frame_goals`, :attr:`goals_before`, :attr:`goals` and
        :attr:`rejected_goals` by replaying goals and frames in log order."""
        # The node's goal book (default max_goals and max_goal_chars) names and validates the
        # goals exactly as the node does, so the ids here are the ones the node lists.
        book = GoalBook()
        self.rejected_goals: list[tuple[str, str]] = []  # (goal id, reason) the node would reject
        self.frame_goals: list[list[Goal]] = []  # per frame: the goals it answers
        self.goals_before: list[set[str]] = []  # per frame: ids active before its new goals
        before: set[str] | None = None
        for conn, _, data in self._reader.messages([*conns, *self._images]):
            if conn.msgtype == m.IMAGE_TYPE and conn in self._images:
                snapshot = book.snapshot()
                self.goals_before.append(before if before is not None else self._ids(snapshot))
                self.frame_goals.append([entry.goal for entry in snapshot])
                book.answered(snapshot)  # one-shot goals are answered by this frame
                before = None
                continue
            if before is None:
                before = self._ids(book.snapshot())
            msg = m.deserialize(data, conn.msgtype)
            if msg.cancel:
                book.cancel(str(msg.id).strip())
                continue
            try:
                goal = validate_goal(
                    str(msg.text), str(msg.task), str(msg.id), [str(c) for c in msg.classes]
                )
                book.add(goal, bool(msg.standing))
            except GoalError as exc:
                self.rejected_goals.append((str(msg.id), str(exc)))
        # Every goal some frame asks (its last definition), in order of first appearance.
        asked: dict[str, Goal] = {}
        for goals in self.frame_goals:
            asked.update((g.id, g) for g in goals)
        self.goals: list[Goal] = list(asked.values())
        # Standing goals only (every frame asks the same): the report keeps per-goal metrics.
        self.standing = all(goals == self.goals for goals in self.frame_goals)

    @staticmethod
    def _ids(entries: list) -> set[str]:
        return {entry.goal.id for entry in entries}

    def _read_truth(self, conns: list) -> dict[int, dict[str, PackedMask | np.ndarray]]:
        truth: dict[int, dict[str, PackedMask | np.ndarray]] = {}
        for conn, _, data in self._reader.messages(conns) if conns else ():
            array = m.deserialize(data, conn.msgtype)
            per_goal = truth.setdefault(m.stamp_to_ns(array.header.stamp), {})
            for seg in array.segmentations:
                if seg.instance != 0:
                    continue
                if str(seg.task) == Task.OPEN_VOCAB.value:  # a label map: keep the values
                    per_goal[str(seg.goal_id)] = m.image_to_labels(seg.mask)
                else:
                    per_goal[str(seg.goal_id)] = PackedMask.pack(m.image_to_mask(seg.mask))
        return truth

    @property
    def ground_truth_goals(self) -> list[str]:
        """Goal ids that have ground truth on at least one frame."""
        return sorted({gid for per_goal in self._truth.values() for gid in per_goal})

    @property
    def pairs(self) -> int:
        """Number of (frame, goal) pairs: each frame's goals answered on it."""
        return sum(len(goals) for goals in self.frame_goals)

    def frames(self) -> Iterator[Frame]:
        """Yield every frame in log-time order with its goals and ground truth (unpacked on
        demand)."""
        for index, (conn, _, data) in enumerate(self._reader.messages(self._images)):
            msg = m.deserialize(data, conn.msgtype)
            stamp = m.stamp_to_ns(msg.header.stamp)
            truth = {
                gid: p.unpack() if isinstance(p, PackedMask) else p
                for gid, p in self._truth.get(stamp, {}).items()
            }
            rgb = m.image_to_rgb(msg)
            yield Frame(
                index, stamp, str(msg.header.frame_id), rgb, truth, list(self.frame_goals[index])
            )

    def close(self) -> None:
        if self._reader.is_open:
            self._reader.close()

    def __enter__(self) -> EvalBag:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
