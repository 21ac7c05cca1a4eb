"""Newest-frame mailbox and inference thread (text4seg_ros.ros.worker); ROS-free."""

from __future__ import annotations

import threading
import time

import numpy as np
from ros_fakes import ColourSegmenter, ThreadKiller

from text4seg_ros.model.types import Goal, GoalResult
from text4seg_ros.ros.goals import GoalBook
from text4seg_ros.ros.worker import Frame, InferenceWorker, LatestFrame


def make_frame(seq: int) -> Frame:
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[0, 0, 0] = 200
    return Frame(rgb=rgb, header=seq, received=time.monotonic())


def test_mailbox_keeps_only_the_newest_frame():
    box = LatestFrame()
    assert box.put(make_frame(1)) is False
    assert box.put(make_frame(2)) is True  # frame 1 dropped
    assert box.take(0).header == 2
    assert box.take(0.01) is None
    box.close()
    assert box.take() is None  # no block after close


class Recorder:
    def __init__(self) -> None:
        self.results, self.errors = [], []
        self.done = threading.Event()

    def on_result(self, frame, goals, results, latency) -> None:
        self.results.append((frame.header, [g.goal.id for g in goals], results, latency))
        self.done.set()

    def on_error(self, frame, goals, exc) -> None:
        self.errors.append((frame.header, exc))
        self.done.set()


def test_slow_model_answers_newest_frames_and_drops_the_rest():
    model = ColourSegmenter(delay_s=0.1)
    book = GoalBook()
    book.add(Goal("red", id="r"), standing=True)
    rec = Recorder()
    worker = InferenceWorker(model, book, rec.on_result, rec.on_error)
    worker.start()
    dropped = 0
    for seq in range(40):  # 40 frames at 200 Hz against a 10 Hz model
        dropped += worker.submit(make_frame(seq))
        time.sleep(0.005)
    time.sleep(0.35)
    assert worker.stop(timeout=5)
    seqs = [r[0] for r in rec.results]
    assert 1 <= len(seqs) <= 6 and seqs == sorted(seqs)
    assert seqs[-1] == 39, "the last frame sent must be answered"
    assert dropped + len(seqs) == 40
    assert all(lat < 0.4 for *_, lat in rec.results)
    header, ids, results, _ = rec.results[0]
    assert ids == ["r"] and results[0].mask[0, 0] and results[0].mask.sum() == 1


def test_frames_without_goals_are_skipped_and_errors_do_not_stop_the_thread():
    model = ColourSegmenter()
    book = GoalBook()
    rec = Recorder()
    skipped = []
    worker = InferenceWorker(model, book, rec.on_result, rec.on_error, on_skip=skipped.append)
    worker.start()
    worker.submit(make_frame(0))
    deadline = time.monotonic() + 5
    while not skipped and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [f.header for f in skipped] == [0] and model.frames == []
    book.add(Goal("please fail", id="bad"), standing=False)
    worker.submit(make_frame(1))
    assert rec.done.wait(5)
    (header, ids, outcomes, _) = rec.results.pop()  # the goal's failure is its outcome
    assert ids == ["bad"] and "failure requested" in str(outcomes[0]) and rec.errors == []
    rec.done.clear()
    book.clear()
    book.add(Goal("red", id="ok"), standing=True)
    worker.submit(make_frame(2))
    assert rec.done.wait(5)
    assert [r[0] for r in rec.results] == [2]
    assert [f.header for f in skipped] == [0], "frames with goals are not skipped"
    assert worker.stop(timeout=5)


def test_frames_are_decoded_on_the_worker_only_when_taken_and_bad_ones_rejected():
    model = ColourSegmenter()
    model.gate = threading.Event()  # the model "runs" until the test opens the gate
    book = GoalBook()
    book.add(Goal("red", id="r"), standing=True)
    rec = Recorder()
    decoded, rejected = [], []
    worker = InferenceWorker(
        model, book, rec.on_result, rec.on_error, on_reject=lambda f, e: rejected.append(f.header)
    )

    def lazy(seq: int) -> Frame:
        def decode() -> np.ndarray:
            decoded.append(seq)
            if seq == 9:
                raise ValueError("bad image")
            return make_frame(seq).rgb

        return Frame(rgb=None, header=seq, received=time.monotonic(), decode=decode)

    worker.start()
    worker.submit(lazy(0))
    assert model.entered.wait(5)
    for seq in range(1, 6):  # 1..4 replaced in the mailbox while the model runs: never decoded
        worker.submit(lazy(seq))
    assert decoded == [0]
    model.gate.set()
    deadline = time.monotonic() + 5
    while len(rec.results) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [r[0] for r in rec.results] == [0, 5] and decoded == [0, 5]
    worker.submit(lazy(9))
    deadline = time.monotonic() + 5
    while not rejected and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rejected == [9] and rec.errors == []
    worker.submit(lazy(10))  # the thread carries on after a bad image
    deadline = time.monotonic() + 5
    while len(rec.results) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [r[0] for r in rec.results] == [0, 5, 10]
    assert worker.stop(timeout=5)


def wait(predicate, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while not predicate() and time.monotonic() < end:
        time.sleep(0.01)
    return bool(predicate())


def test_a_failing_goal_fails_alone_and_the_others_of_its_frame_are_answered():
    model = ColourSegmenter()
    book = GoalBook()
    for gid, text in (("a", "red"), ("bad", "fail here"), ("c", "red too")):
        book.add(Goal(text, id=gid), standing=False)
    rec = Recorder()
    worker = InferenceWorker(model, book, rec.on_result, rec.on_error)
    worker.start()
    worker.submit(make_frame(0))
    assert rec.done.wait(5)
    (_, ids, outcomes, _) = rec.results[0]
    assert ids == ["a", "bad", "c"]
    assert isinstance(outcomes[0], GoalResult) and isinstance(outcomes[2], GoalResult)
    assert isinstance(outcomes[1], RuntimeError) and rec.errors == []
    assert model.calls == [["a"], ["c"]], "after the batch raised, each goal alone"
    assert worker.stop()


def test_idle_frames_are_never_converted():
    model = ColourSegmenter()
    book = GoalBook()
    decoded, skipped = [], []

    def lazy(seq: int) -> Frame:
        return Frame(None, seq, time.monotonic(), decode=lambda: decoded.append(seq) or 1 / 0)

    worker = InferenceWorker(model, book, Recorder().on_result, Recorder().on_error,
                             on_skip=skipped.append)  # fmt: skip
    worker.start()
    for seq in range(3):
        worker.submit(lazy(seq))
        assert wait(lambda s=seq: len(skipped) == s + 1)
    assert decoded == [] and model.frames == []
    assert worker.stop()


def test_callbacks_that_raise_never_end_the_thread():
    model = ColourSegmenter()
    book = GoalBook()
    book.add(Goal("red", id="r"), standing=True)
    calls = []

    def bad_result(*args):
        calls.append("result")
        raise RuntimeError("publisher gone")

    def bad_error(*args):
        calls.append("error")
        raise ValueError("logging failed too")

    worker = InferenceWorker(model, book, bad_result, bad_error,
                             on_skip=lambda f: 1 / 0)  # fmt: skip
    worker.start()
    for seq in range(3):
        worker.submit(make_frame(seq))
        assert wait(lambda s=seq: calls.count("error") == s + 1)
    book.clear()
    worker.submit(make_frame(9))  # skipped: on_skip raises
    assert wait(lambda: worker.callback_errors == 4)
    assert worker.alive() and calls == ["result", "error"] * 3
    assert worker.stop()


def test_stop_and_cancel_end_a_decode_at_its_next_step():
    model = ColourSegmenter()
    model.gate = threading.Event()  # never opened: the decode "runs" until stopped
    book = GoalBook()
    book.add(Goal("red", id="r"), standing=True)
    rec, cancelled = Recorder(), []
    worker = InferenceWorker(model, book, rec.on_result, rec.on_error,
                             on_cancel=cancelled.append)  # fmt: skip
    worker.start()
    worker.submit(make_frame(0))
    assert model.entered.wait(5)
    assert wait(lambda: worker.busy_s() > 0.1)
    worker.cancel_current()  # the watchdog's cancel: this frame only
    assert wait(lambda: [f.header for f in cancelled] == [0])
    assert worker.alive() and worker.busy_s() == 0.0
    model.entered.clear()
    worker.submit(make_frame(1))
    assert model.entered.wait(5)
    start = time.monotonic()
    assert worker.stop(timeout=1.0)
    assert time.monotonic() - start < 1.0
    assert [f.header for f in cancelled] == [0, 1] and rec.results == rec.errors == []


def test_a_thread_ended_by_a_base_exception_shows_as_not_alive():
    model = ColourSegmenter()
    book = GoalBook()
    book.add(Goal("die now", id="d"), standing=True)
    worker = InferenceWorker(model, book, Recorder().on_result, Recorder().on_error)
    worker.start()
    assert worker.alive()
    import threading as _t

    hook, _t.excepthook = _t.excepthook, lambda args: None  # keep pytest's output clean
    try:
        worker.submit(make_frame(0))
        assert wait(lambda: not worker.alive())
    finally:
        _t.excepthook = hook
    assert isinstance(ThreadKiller("x"), BaseException)
