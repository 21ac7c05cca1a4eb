"""Inference off the executor thread: a one-frame mailbox and the thread that drains it.

The camera callback puts each frame into :class:`LatestFrame`, which holds only the newest one:
a frame that arrives before the previous one was taken replaces it (counted as dropped). So a
model slower than the camera never builds a backlog, and what it answers is always the newest
frame. :class:`InferenceWorker` takes frames, snapshots the active goals (a frame taken while
no goal is active is skipped unconverted), converts the frame (on its own thread: a replaced
frame is never converted), runs the segmenter and hands the results to a callback (the node's
publishers). ROS-free.
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


class _Stopped(Exception):
    """The worker stopped a frame between two goals (the decode's own check raises
    ``DecodeCancelled``; the worker needs neither: it asks :meth:`InferenceWorker.should_stop`)."""


Outcome = GoalResult | Exception  # a goal's answer, or the exception that failed it alone
ResultCallback = Callable[[Frame, list[ActiveGoal], list[Outcome], float], None]
ErrorCallback = Callable[[Frame, list[ActiveGoal], BaseException], None]
SkipCallback = Callable[[Frame], None]
RejectCallback = Callable[[Frame, Exception], None]


class InferenceWorker:
    """A daemon thread answering the active goals on the newest frame.

    ``on_result(frame, goals, outcomes, latency_s)`` runs on the worker thread after each frame
    with goals (``latency_s``: frame arrival to results ready); ``outcomes[i]`` is goal ``i``'s
    ``GoalResult``, or the exception that failed that goal alone: when the batch raises, every
    goal is decoded on its own, so one goal's failure never costs the others their answers.
    ``on_error(frame, goals, exc)`` when the frame failed as a whole (``set_image``, or
    ``on_result`` itself, e.g. publishing during shutdown); its one-shot goals were neither
    answered nor failed, so they stay. Frames that arrive while no goal is active are skipped
    before they are converted: ``on_skip(frame)``. A frame whose ``decode()`` raised goes to
    ``on_reject(frame, exc)``. ``on_cancel(frame)``: the decode was stopped (:meth:`stop`,
    :meth:`cancel_current`) before it answered.

    No exception of the segmenter or a callback ends the thread (each is reported, the loop
    goes on); :meth:`alive` and :meth:`busy_s` let the node's watchdog see a dead or stuck one.
    The segmenter is called with ``should_stop`` (its decode checks it once per model call).
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
        on_cancel: SkipCallback | None = None,
    ) -> None:
        self.segmenter = segmenter
        self.goals = goals
        self.on_result = on_result
        self.on_error = on_error
        self.on_skip = on_skip
        self.on_reject = on_reject
        self.on_cancel = on_cancel
        self.mailbox = LatestFrame()
        self.callback_errors = 0  # exceptions raised by the callbacks themselves
        self._stop = threading.Event()
        self._cancel = threading.Event()
        self._busy_since: float | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def submit(self, frame: Frame) -> bool:
        """Offer a frame (never blocks); True when an untaken older frame was dropped."""
        return self.mailbox.put(frame)

    def alive(self) -> bool:
        """True while the thread runs (False before :meth:`start` and after it ended)."""
        return self._thread.is_alive()

    def busy_s(self, now: float | None = None) -> float:
        """Seconds the current frame's inference has been running (0.0 when idle)."""
        since = self._busy_since
        return 0.0 if since is None else (time.monotonic() if now is None else now) - since

    def should_stop(self) -> bool:
        """The decode's stop check: stopping, or the current frame cancelled."""
        return self._stop.is_set() or self._cancel.is_set()

    def cancel_current(self) -> None:
        """Stop the current frame's decode at its next step; the thread goes on with the next."""
        if self._busy_since is not None:
            self._cancel.set()

    def stop(self, timeout: float = 1.0) -> bool:
        """Stop (an in-flight decode at its next step); True when the thread ended in time."""
        self._stop.set()
        self.mailbox.close()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _call(self, callback: Callable | None, *args: Any) -> None:
        """Run a callback; an exception in it is counted, never ends the thread."""
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:  # noqa: BLE001  the thread must survive its callbacks
            self.callback_errors += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            frame = self.mailbox.take()
            if frame is None:
                return
            try:
                self._frame(frame)
            except Exception as exc:  # noqa: BLE001  last resort: report, keep the thread
                self._call(self.on_error, frame, [], exc)
            finally:
                self._busy_since = None

    def _frame(self, frame: Frame) -> None:
        active = self.goals.snapshot()
        if not active:
            self._call(self.on_skip, frame)  # idle: never converted
            return
        if frame.rgb is None:
            try:
                frame = dataclasses.replace(frame, rgb=frame.decode(), decode=None)
            except Exception as exc:  # noqa: BLE001  a bad image must not kill the thread
                self._call(self.on_reject, frame, exc)
                return
        self._cancel.clear()
        self._busy_since = time.monotonic()
        try:
            self.segmenter.set_image(frame.rgb)
            outcomes = self._answer(active)
        except Exception as exc:  # noqa: BLE001  the frame failed as a whole, or was stopped
            if self.should_stop():  # DecodeCancelled (or whatever the stop interrupted)
                self._call(self.on_cancel, frame)
            else:
                self._call(self.on_error, frame, active, exc)
            return
        finally:
            self._busy_since = None
        if self._stop.is_set():
            self._call(self.on_cancel, frame)  # deactivated while the model ran
            return
        latency = time.monotonic() - frame.received
        try:
            self.on_result(frame, active, outcomes, latency)
        except Exception as exc:  # noqa: BLE001  e.g. publishing while the node shuts down
            self._call(self.on_error, frame, active, exc)

    def _answer(self, active: list[ActiveGoal]) -> list[Outcome]:
        """Every goal's outcome: the batch, or each goal alone when the batch raised."""
        items = [e.goal if e.prepared is None else e.prepared for e in active]
        try:
            return self._segment(items)
        except Exception as exc:  # noqa: BLE001  isolate: which goal failed?
            if self.should_stop():
                raise
            if len(items) == 1:
                return [exc]
        outcomes: list[Outcome] = []
        for item in items:
            if self.should_stop():
                raise _Stopped("stopped between goals")
            try:
                outcomes += self._segment([item])
            except Exception as exc:  # noqa: BLE001  this goal's failure stays this goal's
                if self.should_stop():
                    raise
                outcomes.append(exc)
        return outcomes

    def _segment(self, items: list) -> list[GoalResult]:
        results = self.segmenter.segment(items, should_stop=self.should_stop)
        if len(results) != len(items):
            raise RuntimeError(f"segmenter returned {len(results)} results for {len(items)} goals")
        return list(results)
