"""The node's inference thread over real DDS (issue 9, item 5), with the stand-in Segmenter.

Idle frames are never converted; deactivate returns within a second while a decode runs (the
decode stops at its next step, or the thread is detached when the model call ignores it); a
stuck inference shows as ERROR in /diagnostics and is cancelled; a dead inference thread shows
as ERROR and is restarted, and the node answers again.
"""

from __future__ import annotations

import threading
import time

import pytest

pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from ros_harness import wait_for  # noqa: E402
from ros_node_harness import Harness, frame, red_square  # noqa: E402
from text4seg_msgs.msg import Goal  # noqa: E402

pytestmark = pytest.mark.ros


@pytest.fixture
def harness(request):
    made = []

    def make(params: dict | None = None) -> Harness:
        name = request.node.name.replace("test_", "")[:20]
        h = Harness(f"/w{name}_{len(made)}", params={"diagnostics_period_s": 0.1, **(params or {})})
        made.append(h)
        h.start()
        return h

    yield make
    for h in made:
        if h.fake.gate is not None:
            h.fake.gate.set()
        h.close()


def status(h: Harness) -> DiagnosticStatus | None:
    mine = [m for m in list(h.diags) if m.status and m.status[0].name.startswith(h.fqn)]
    return mine[-1].status[0] if mine else None


def saw_level(h: Harness, level: bytes, text: str, since: int = 0) -> bool:
    return any(
        m.status and m.status[0].name.startswith(h.fqn) and m.status[0].level == level
        and text in m.status[0].message
        for m in list(h.diags)[since:]
    )  # fmt: skip


def add_goal(h: Harness, **fields) -> None:
    n = len(h.list_goals())
    h.goals.publish(Goal(**fields))
    assert wait_for(lambda: len(h.list_goals()) == n + 1, 5)


def test_idle_frames_are_never_converted(harness):
    h = harness()
    bad = frame(red_square(), 1)
    bad.encoding = "yuv422"  # converting it would reject it
    h.images.publish(bad)
    assert wait_for(lambda: h.diag("frames_skipped") == "1", 5)
    assert h.diag("images_rejected") == "0" and h.fake.frames == []
    add_goal(h, id="g", text="red", standing=True)
    h.images.publish(bad)
    assert wait_for(lambda: h.diag("images_rejected") == "1", 5)


def test_deactivate_returns_within_a_second_while_a_decode_runs(harness):
    h = harness()
    h.fake.gate = threading.Event()  # the decode "runs" until stopped (it checks should_stop)
    add_goal(h, id="once", text="red", standing=False)
    h.images.publish(frame(red_square(), 1))
    assert h.fake.entered.wait(10)
    start = time.monotonic()
    assert h.client.transition(h.fqn, "deactivate")
    assert time.monotonic() - start < 1.0
    assert wait_for(lambda: h.diag("frames_cancelled") == "1", 5)
    assert h.segs == [] and [g.id for g in h.list_goals()] == ["once"], "not answered: stays"
    # a model call that ignores should_stop (a stuck kernel): deactivate still returns in time
    h.fake.gate, h.fake.honour_stop = threading.Event(), False
    h.fake.entered.clear()
    assert h.client.transition(h.fqn, "activate")
    assert wait_for(lambda: h.images.get_subscription_count() > 0, 10)
    h.images.publish(frame(red_square(), 2))
    assert h.fake.entered.wait(10)
    start = time.monotonic()
    assert h.client.transition(h.fqn, "deactivate")
    assert time.monotonic() - start < 1.5  # 0.9 s wait for the thread + the service round trip
    assert h.node._detached is not None
    h.fake.gate.set()  # the model call returns; the detached thread ends without publishing
    assert h.client.transition(h.fqn, "activate")
    assert wait_for(lambda: h.images.get_subscription_count() > 0, 10)
    h.images.publish(frame(red_square(), 3))
    assert wait_for(lambda: len(h.segs) == 1, 10)
    assert h.segs[0].header.stamp.sec == 1003
    # the node publishes a frame's answers, then retires its one-shot goals: wait, not race
    assert wait_for(lambda: h.list_goals() == [], 5)


def test_a_model_call_stuck_past_deactivate_blocks_activate_until_a_fresh_model_is_loaded(
    harness,
):
    """The detached thread still holds the loaded model: activating it again fails, with the
    way out; after cleanup and configure (a fresh model) the node activates and answers, and
    the old thread, once its call returns, publishes nothing."""
    h = harness()
    stuck = h.fake
    stuck.gate, stuck.honour_stop = threading.Event(), False
    try:
        add_goal(h, id="g", text="red", standing=True)
        h.images.publish(frame(red_square(), 1))
        assert stuck.entered.wait(10)
        assert h.client.transition(h.fqn, "deactivate")
        assert h.node._detached is not None
        assert not h.client.transition(h.fqn, "activate"), "same model, still in use"
        assert h.client.state(h.fqn) == "inactive"
        assert h.client.transition(h.fqn, "cleanup")
        h.fake = type(stuck)()  # what the next configure loads
        assert h.client.transition(h.fqn, "configure")
        assert h.client.transition(h.fqn, "activate")
        assert h.node._detached is None and h.node.segmenter is h.fake
        assert wait_for(lambda: h.images.get_subscription_count() > 0, 10)
        add_goal(h, id="g2", text="red", standing=False)
        h.images.publish(frame(red_square(), 2))
        assert wait_for(lambda: len(h.segs) == 1, 10)
        assert h.segs[0].header.stamp.sec == 1002
        stuck.gate.set()  # the old call returns: that thread ends without publishing
        time.sleep(0.5)
        assert len(h.segs) == 1
    finally:
        stuck.gate.set()  # the old call returns (in any case: no thread left stuck)


def test_a_stuck_inference_shows_as_error_and_is_cancelled(harness):
    h = harness({"inference_timeout_s": 0.3})
    h.fake.gate = threading.Event()
    add_goal(h, id="g", text="red", standing=True)
    n = len(h.diags)
    h.images.publish(frame(red_square(), 1))
    assert wait_for(lambda: saw_level(h, DiagnosticStatus.ERROR, "stuck", n), 5)
    assert wait_for(lambda: h.diag("frames_cancelled") == "1", 5)  # its decode was stopped
    h.fake.gate.set()
    h.images.publish(frame(red_square(), 2))
    assert wait_for(lambda: len(h.segs) == 1, 10)
    assert wait_for(lambda: status(h).level == DiagnosticStatus.OK, 5), status(h).message
    assert h.diag("worker_alive") == "True" and h.diag("worker_callback_errors") == "0"


def test_a_dead_inference_thread_shows_as_error_and_is_restarted(harness):
    h = harness()
    add_goal(h, id="kill", text="die now", standing=True)
    hook, threading.excepthook = threading.excepthook, lambda args: None
    try:
        n = len(h.diags)
        h.images.publish(frame(red_square(), 1))
        assert wait_for(lambda: saw_level(h, DiagnosticStatus.ERROR, "died", n), 5)
        assert wait_for(lambda: h.diag("worker_restarts") == "1", 5)
    finally:
        threading.excepthook = hook
    h.goals.publish(Goal(id="kill", cancel=True))
    add_goal(h, id="ok", text="red", standing=False)
    h.images.publish(frame(red_square(), 2))
    assert wait_for(lambda: len(h.segs) == 1, 10)
    assert [s.goal_id for s in h.segs[0].segmentations] == ["ok"]
    assert wait_for(lambda: status(h).level == DiagnosticStatus.OK, 5)
    assert h.client.state(h.fqn) == "active"


def test_the_node_main_loop_survives_a_callback_that_raises():
    """``node.spin`` (what ``perception_node`` runs): an exception out of any executor callback
    is logged and counted in ``callback_errors``; the loop goes on serving the node."""
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from ros_fakes import ColourSegmenter
    from ros_harness import DOMAIN_ID

    from text4seg_ros.ros.node import PerceptionNode, spin

    ctx = Context()
    rclpy.init(context=ctx, domain_id=DOMAIN_ID)
    node = PerceptionNode(
        segmenter_factory=lambda cfg: ColourSegmenter(), context=ctx, namespace="/spin_raise"
    )
    ticks = []

    def bad_timer() -> None:
        ticks.append(1)
        raise RuntimeError("a callback bug")

    node.create_timer(0.05, bad_timer)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)

    def run() -> None:
        try:
            spin(node, executor)
        except ExternalShutdownException:  # main() ends on it too
            pass

    loop = threading.Thread(target=run, daemon=True)
    loop.start()
    try:
        assert wait_for(lambda: node.stats.counts["callback_errors"] >= 5, 10)
        assert loop.is_alive() and len(ticks) >= 5
    finally:
        rclpy.shutdown(context=ctx)
        loop.join(5)
        node.destroy_node()
    assert not loop.is_alive(), "the loop ends when the context shuts down"
