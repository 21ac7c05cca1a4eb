"""A deterministic stand-in Segmenter for node tests that exercise the ROS shell, not the model.

:class:`ColourSegmenter` "segments" the pixels whose red channel is above 127 (so a test knows
the right mask for any image it sends) and can be made slower than a camera with ``delay_s``.
The node is also tested with the real Segmenter and a tiny model (tests/test_ros_node_dds.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import numpy as np

from text4seg_ros.descriptors.geometry import mask_to_box
from text4seg_ros.model.types import Goal, GoalResult, Timings
from text4seg_ros.prompts import Task


class ThreadKiller(BaseException):
    """Not an Exception: nothing in the worker catches it, so its thread ends."""


class ColourSegmenter:
    """SegmenterLike: the target of every goal is where ``image[..., 0] > 127``.

    Goals whose text contains ``fail`` raise RuntimeError at ``segment`` (to test error
    handling); ``die`` raises :class:`ThreadKiller`, a ``BaseException`` (to test the node's
    watchdog on a dead inference thread). :meth:`prepare` refuses texts containing
    ``forbidden`` as the real Segmenter refuses goals it cannot prepare. ``calls`` records the
    goal ids per ``segment`` call; ``frames`` the images set. While ``gate`` is closed,
    ``segment`` waits, checking ``should_stop`` like the real decode loop does once per step
    (``honour_stop = False``: a model call that ignores it, like a stuck kernel).
    """

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.gate: threading.Event | None = None  # when set up, segment() waits until it is set
        self.entered = threading.Event()  # set when segment() starts
        self.image: np.ndarray | None = None
        self.frames: list[np.ndarray] = []
        self.calls: list[list[str]] = []
        self.lock = threading.Lock()
        self.honour_stop = True
        self.prepared: list[str] = []

    def set_image(self, image: np.ndarray) -> None:
        assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8, image.shape
        self.image = image
        with self.lock:
            self.frames.append(image)

    def prepare(self, goal: Goal) -> Goal:
        if "forbidden" in goal.text:
            raise ValueError(f"goal {goal.id!r}: the model refuses {goal.text!r}")
        self.prepared.append(goal.text)
        return goal

    def segment(self, goals: Sequence[Goal], should_stop=None) -> list[GoalResult]:
        assert self.image is not None, "set_image first"
        if any("fail" in g.text for g in goals):
            raise RuntimeError("model failure requested by the goal text")
        if any("die" in g.text for g in goals):
            raise ThreadKiller("the inference thread is ended by the goal text")
        self.entered.set()
        if self.gate is not None:
            end = time.monotonic() + 30
            while not self.gate.wait(0.01):
                if self.honour_stop and should_stop is not None and should_stop():
                    raise InterruptedError("decode stopped at a step (should_stop)")
                assert time.monotonic() < end, "gate never opened"
        time.sleep(self.delay_s)
        with self.lock:
            self.calls.append([g.id for g in goals])
        mask = self.image[..., 0] > 127
        out = []
        for goal in goals:
            labels = (
                ["others", *goal.classes] if goal.task is Task.OPEN_VOCAB else ["others", goal.text]
            )
            label_map = mask.astype(np.int64) if goal.task is Task.OPEN_VOCAB else None
            out.append(
                GoalResult(
                    goal=goal,
                    mask=mask.copy(),
                    box=mask_to_box(mask),
                    score=0.9,
                    descriptor=f"<seg>{goal.text} *1\n</seg>",
                    labels=labels,
                    model_steps=3,
                    timings=Timings(total_s=self.delay_s),
                    label_map=label_map,
                )
            )
        return out
