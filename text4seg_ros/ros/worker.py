"""Inference off the executor thread: a one-frame mailbox and the thread that drains it.

The camera callback puts each frame into :class:`LatestFrame`, which holds only the newest one:
a frame that arrives before the previous one was taken replaces it (counted as dropped). So a
model slower than the camera never builds a backlog, and what it answers is always the newest
frame. :class:`InferenceWorker` takes frames, decodes them (on its own thread: a replaced frame
is never decoded), snapshots the active goals, runs the segmenter and hands the results to a
callback (the node's publishers). ROS-free.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..model.types import GoalResult, SegmenterLike
from .goals import ActiveGoal, GoalBook


@dataclass
class Frame:
    """One camera frame: ``rgb`` is ``(H, W, 3)`` uint8 RGB; ``header`` is passed through.

    ``rgb`` may be None with ``decode`` set: the worker calls ``decode()`` (returning the RGB
    array, raising for a bad image) after taking the frame, so replaced frames cost nothing.
    """

    rgb: np.ndarray | None
    header: Any
    received: float  # time.monotonic() when the message arrived
    decode: Callable[[], np.ndarray] | None = None


class LatestFrame:
    """A mailbox of capacity one: ``put`` replaces, ``take`` blocks until a frame or close."""

    def __init__(self) -> None:
        self._frame: Frame | None = None
        self._closed = False
        self._cond = threading.Condition()

    def put(self, frame: Frame) -> bool:
        """Store ``frame``; True when it replaced a frame nobody took (a dropped frame)."""
        with self._cond:
            dropped = self._frame is not None
            self._frame = frame
            self._cond.notify()
            return dropped

    def take(self, timeout: float | None = None) -> Frame | None:
        """The newest frame (removing it), or None on timeout or after :meth:`close`."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._frame is not None or self._closed, timeout):
                return None
            if self._closed:
                return None
            frame, self._frame = self._frame, None
            return frame

    def close(self) -> None:
        """Wake the taker for good; later ``take`` calls return None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


ResultCallback = Callable[[Frame, list[ActiveGoal], list[GoalResult], float], None]
ErrorCallback = Callable[[Frame, list[ActiveGoal], BaseException], None]
SkipCallback = Callable[[Frame], None]
RejectCallback = Callable[[Frame, Exception], None]


class InferenceWorker:
    """A daemon thread answering the active goals on the newest frame.

    ``on_result(frame, goals, results, latency_s)`` runs on the worker thread after each frame
    with goals (``latency_s``: frame arrival to results ready); ``on_error(frame, goals, exc)``
    when the segmenter or ``on_result`` raised (the thread carries on). Frames that arrive
    while no goal is active are taken and skipped: nothing to answer; ``on_skip(frame)`` (if
    given) reports each one (the node counts them as ``frames_skipped``). A frame whose
    ``decode()`` raised is reported to ``on_reject(frame, exc)`` (if given) and not answered.
    """

    def __init__(
        self,
        segmenter: SegmenterLike,
        goals: GoalBook,
        on_result: ResultCallback,
        on_error: ErrorCallback,
        name: str = "text4seg-inference",
        on_skip: SkipCallback | None = None,
        on_reject: RejectCallback | None = None,
    ) -> None:
        self.segmenter = segmenter
        self.goals = goals
        self.on_result = on_result
        self.on_error = on_error
        self.on_skip = on_skip
        self.on_reject = on_reject
        self.mailbox = LatestFrame()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def submit(self, frame: Frame) -> bool:
        """Offer a frame (never blocks); True when an untaken older frame was dropped."""
        return self.mailbox.put(frame)

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop after the current frame; True when the thread ended within ``timeout`` s."""
        self._stop.set()
        self.mailbox.close()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            frame = self.mailbox.take()
            if frame is None:
                return
            if frame.rgb is None:
                try:
                    frame = dataclasses.replace(frame, rgb=frame.decode(), decode=None)
                except Exception as exc:  # noqa: BLE001  a bad image must not kill the thread
                    if self.on_reject is not None:
                        self.on_reject(frame, exc)
                    continue
            active = self.goals.snapshot()
            if not active:
                if self.on_skip is not None:
                    self.on_skip(frame)
                continue
            try:
                self.segmenter.set_image(frame.rgb)
                results = self.segmenter.segment([entry.goal for entry in active])
                if len(results) != len(active):
                    raise RuntimeError(
                        f"segmenter returned {len(results)} results for {len(active)} goals"
                    )
            except Exception as exc:  # noqa: BLE001  a model error must not kill the thread
                self.on_error(frame, active, exc)
                continue
            latency = time.monotonic() - frame.received
            if self._stop.is_set():
                return  # deactivated while the model ran: publishers are off
            try:
                self.on_result(frame, active, results, latency)
            except Exception as exc:  # noqa: BLE001  e.g. publishing while the node shuts down
                self.on_error(frame, active, exc)
