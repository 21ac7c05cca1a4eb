"""Segmenter.prepare (grammar and prompt built once per goal) and should_stop (a decode stops at
its next step), on a tiny random LLaVA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from text4seg_ros.decoding import DecodeCancelled
from text4seg_ros.model.segmenter import PreparedGoal, Segmenter
from text4seg_ros.model.tiny import build_tiny_model
from text4seg_ros.model.types import Goal
from text4seg_ros.prompts import Task

torch.set_num_threads(1)
GRID = 8
IMAGE = np.random.default_rng(5).integers(0, 255, (24, 32, 3), dtype=np.uint8)
GOALS = [
    Goal("red cup", id="a"),
    Goal("", Task.OPEN_VOCAB, id="b", classes=("cup", "table")),
    Goal("box", Task.INSTANCES, id="c"),
]


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    path = build_tiny_model("llava", tmp_path_factory.mktemp("llava"), seed=3)
    seg = Segmenter.from_pretrained(path, grid=GRID)
    seg.set_image(IMAGE)
    return seg


class CountingStep:
    """The Segmenter's decode step, counting forward calls (other attributes pass through)."""

    def __init__(self, step) -> None:
        self.step, self.calls = step, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.step(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.step, name)


def test_prepared_goals_give_the_same_answers_as_plain_goals(segmenter):
    prepared = [segmenter.prepare(g) for g in GOALS]
    assert all(isinstance(p, PreparedGoal) and p.goal is g for p, g in zip(prepared, GOALS))
    assert prepared[2].plan.kind == "bsd" and prepared[0].suffix
    plain = segmenter.segment(GOALS)
    again = segmenter.segment(prepared)
    assert [r.descriptor for r in again] == [r.descriptor for r in plain]
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(again, plain))
    mixed = segmenter.segment([prepared[0], GOALS[1]])
    assert [r.descriptor for r in mixed] == [r.descriptor for r in plain[:2]]


def test_a_goal_that_cannot_be_prepared_raises_naming_it(segmenter):
    with pytest.raises(ValueError, match="others"):
        segmenter.prepare(Goal("others", id="bg"))
    with pytest.raises(TypeError):
        segmenter.prepare("a cup")
    with pytest.raises(TypeError):
        segmenter.segment(segmenter.prepare(GOALS[0]))  # one goal, not a sequence


def test_should_stop_ends_the_decode_before_the_next_model_call(segmenter):
    full = CountingStep(segmenter._step)
    segmenter._step = full
    try:
        segmenter.segment([GOALS[2]])
        assert full.calls > 3, "the B-SD answer takes several steps"
        asked = []

        def stop_at_third() -> bool:
            asked.append(1)
            return len(asked) >= 3

        full.calls = 0
        with pytest.raises(DecodeCancelled):
            segmenter.segment([GOALS[2]], should_stop=stop_at_third)
        assert len(asked) == 3 and full.calls == 2, "checked once per step, before each call"
        never = segmenter.segment([GOALS[2]], should_stop=lambda: False)
        assert never[0].descriptor == segmenter.segment([GOALS[2]])[0].descriptor
    finally:
        segmenter._step = full.step


def test_a_goal_failing_in_the_real_decoder_fails_alone_in_the_node_worker(segmenter):
    """The node's worker with the real Segmenter: a prepared goal whose decode raises (here: an
    empty prompt suffix, refused by the decoder) gets its exception as its outcome; the other
    goals of the frame get the answers they get without it."""
    import dataclasses
    import threading
    import time

    from text4seg_ros.ros.goals import GoalBook
    from text4seg_ros.ros.worker import Frame, InferenceWorker

    book = GoalBook()
    good_a, good_c = segmenter.prepare(GOALS[0]), segmenter.prepare(GOALS[2])
    broken = dataclasses.replace(segmenter.prepare(GOALS[1]), suffix=())
    for goal, prepared in zip(GOALS, (good_a, broken, good_c)):
        book.add(goal, standing=False, prepared=prepared)
    got, done = [], threading.Event()

    def on_result(frame, active, outcomes, latency):
        got.append(outcomes)
        done.set()

    worker = InferenceWorker(segmenter, book, on_result, lambda *a: got.append(a) or done.set())
    worker.start()
    try:
        worker.submit(Frame(IMAGE, None, time.monotonic()))
        assert done.wait(60)
    finally:
        assert worker.stop(timeout=5)
    (outcomes,) = got
    assert isinstance(outcomes[1], ValueError) and "suffix" in str(outcomes[1])
    segmenter.set_image(IMAGE)
    alone = segmenter.segment([good_a, good_c])
    assert [o.descriptor for o in (outcomes[0], outcomes[2])] == [r.descriptor for r in alone]
