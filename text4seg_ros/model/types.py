"""Goal and result types of the Segmenter; the contract between the core and the ROS layer.

Frames: every array is in the camera image's pixel frame. Boxes are ``(x1, y1, x2, y2)`` pixel
edges, ``x2``/``y2`` exclusive (see :mod:`text4seg_ros.descriptors.geometry`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ..prompts import Task


@dataclass(frozen=True)
class Goal:
    """One language goal: what to segment, and how.

    ``text`` is the referring expression, class name or reasoning sentence (UTF-8). ``classes``
    is the class list of an open-vocabulary goal (without ``others``).
    """

    text: str
    task: Task = Task.RES
    id: str = ""
    classes: tuple[str, ...] = ()


@dataclass
class Timings:
    """Seconds spent per stage of one ``segment`` call (shared by all goals of the batch)."""

    encode_s: float = 0.0  # vision tower + shared prefix (from ``set_image``)
    decode_s: float = 0.0  # constrained decoding of the whole batch
    refine_s: float = 0.0  # SAM refinement
    total_s: float = 0.0


@dataclass
class GoalResult:
    """The answer to one goal on the current frame.

    * ``mask``: ``(H, W)`` bool, image size (for open vocabulary: any non-``others`` class).
    * ``label_map``: ``(H, W)`` ``int64`` class indices for open vocabulary (0 = others,
      ``i`` = ``labels[i]``), else None.
    * ``box``: tight box of ``mask`` or None when the mask is empty.
    * ``score``: confidence in ``[0, 1]`` (defined by the Segmenter's docs).
    * ``instances``: per-instance results for B-SD goals (each with its own mask and box).
    """

    goal: Goal
    mask: np.ndarray
    box: tuple[int, int, int, int] | None
    score: float
    descriptor: str
    labels: list[str]
    model_steps: int
    timings: Timings = field(default_factory=Timings)
    label_map: np.ndarray | None = None
    instances: list[GoalResult] = field(default_factory=list)
    repairs: list = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """True when no pixel belongs to the goal (a valid GRES answer)."""
        return not bool(self.mask.any())


class SegmenterLike(Protocol):
    """What the ROS node and the bag tools need from a segmenter."""

    def set_image(self, image: np.ndarray) -> None:
        """Encode an ``(H, W, 3)`` ``uint8`` RGB frame once for the following ``segment`` calls."""

    def segment(self, goals: Sequence[Goal]) -> list[GoalResult]:
        """Answer every goal against the current frame, batched; one result per goal, in order."""
