"""Newest-frame mailbox and inference thread (text4seg_ros.ros.worker); ROS-free."""

from __future__ import annotations

import threading
import time

import numpy as np
from ros_fakes import ColourSegmenter

from text4seg_ros.model.types import Goal
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
    assert rec.errors and "failure requested" in str(rec.errors[0][1])
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
