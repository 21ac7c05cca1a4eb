"""The camera-silence warning (ImageFlowMonitor) and the node's private goal services.

Units: :class:`text4seg_ros.ros.diagnostics.ImageFlowMonitor` on explicit times. Over real DDS
(in-process node, stand-in Segmenter): a camera publisher that matches but delivers nothing
turns /diagnostics to WARN with ``image_stalls`` counted, and the first frame clears it; two
nodes in one namespace each serve their own ``~/list_goals`` while sharing the goal topics.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import pytest

from text4seg_ros.ros.diagnostics import ImageFlowMonitor

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from ros_harness import wait_for  # noqa: E402
from ros_node_harness import Harness, frame, red_square  # noqa: E402
from text4seg_msgs.msg import Goal  # noqa: E402
from text4seg_msgs.srv import ListGoals  # noqa: E402

pytestmark = pytest.mark.ros


# ------------------------------------------------------------------ ImageFlowMonitor (units)


def test_monitor_warns_once_per_silence_with_a_matched_publisher():
    flow = ImageFlowMonitor()
    assert not flow.check(100.0, publishers=1, limit_s=5.0), "not subscribed: nothing to watch"
    flow.start(0.0)
    assert not flow.check(1.0, 1, 5.0) and flow.silent_s(1.0) == 0.0  # matched from t=1
    assert not flow.check(6.0, 1, 5.0) and flow.silent_s(6.0) == 5.0  # exactly the limit: ok
    assert flow.check(6.5, 1, 5.0) and flow.stalled, "5.5 s silent with a publisher: stall"
    assert "5 s" in flow.stall_log("/cam/image", 5.0) and "fastdds_large_frames" in (
        flow.stall_log("/cam/image", 5.0)
    )
    assert not flow.check(9.0, 1, 5.0) and flow.stalled, "one stall, reported once"
    assert flow.warning(9.0).startswith("no camera frame for 8 s with 1 publisher")
    flow.frame(9.5)
    assert not flow.stalled and flow.warning(9.6) == ""
    assert not flow.check(14.0, 1, 5.0)
    assert flow.check(15.0, 1, 5.0), "a new silence is a new stall"


def test_monitor_counts_silence_only_while_a_publisher_is_matched():
    flow = ImageFlowMonitor()
    flow.start(0.0)
    assert not flow.check(50.0, 0, 5.0) and flow.silent_s(50.0) == 0.0, "no camera: no warning"
    assert not flow.check(51.0, 2, 5.0), "silence counts from the match"
    assert not flow.check(55.5, 2, 5.0)
    assert flow.check(56.5, 2, 5.0)
    assert not flow.check(57.0, 0, 5.0) and not flow.stalled, "camera gone: stall over"
    flow.stop()
    assert not flow.check(500.0, 1, 5.0) and flow.silent_s(500.0) == 0.0


def test_monitor_does_not_count_silence_while_the_node_works_on_a_frame():
    """An acked replay sends the next frame only after the answer: a slow frame is silence
    that no transport lost. The silence counts again from the last busy check."""
    flow = ImageFlowMonitor()
    flow.start(0.0)
    assert not flow.check(1.0, 1, 5.0)
    flow.frame(2.0)
    assert not flow.check(9.0, 1, 5.0, busy=True) and not flow.stalled, "busy 7 s: no stall"
    assert not flow.check(12.0, 1, 5.0, busy=True) and flow.silent_s(12.0) == 0.0
    assert not flow.check(16.5, 1, 5.0), "idle since 12: 4.5 s of silence"
    assert flow.check(17.5, 1, 5.0), "idle and silent for 5.5 s: frames are lost"
    assert not flow.check(18.0, 1, 5.0, busy=True) and not flow.stalled


# ------------------------------------------------------------------ the node over DDS


@pytest.fixture
def make_harness(request):
    made: list[Harness] = []

    def make(ns: str, **kwargs) -> Harness:
        h = Harness(f"/flow_{ns}", **kwargs)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


@contextlib.contextmanager
def _camera_feeding(h: Harness, period_s: float) -> Iterator[None]:
    """Publish a frame on ``h.images`` every ``period_s`` seconds (a live camera) meanwhile."""
    stop = threading.Event()

    def feed() -> None:
        stamp = 2
        while not stop.wait(period_s):
            h.images.publish(frame(red_square(), stamp))
            stamp += 1

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _status(h: Harness):
    mine = [m for m in list(h.diags) if m.status and m.status[0].name.startswith(h.fqn)]
    return mine[-1].status[0] if mine else None


def test_silent_matched_camera_turns_diagnostics_to_warn_until_a_frame_arrives(make_harness):
    h = make_harness("stall", params={"diagnostics_period_s": 0.2, "image_stall_warn_s": 1.0})
    h.start()  # the camera publisher is matched, and sends nothing
    assert wait_for(lambda: h.diag("image_stalls") == "1", 8), h.diag("image_silent_s")
    status = _status(h)
    assert status.level == DiagnosticStatus.WARN and "no camera frame" in status.message
    values = {kv.key: kv.value for kv in status.values}
    assert values["image_publishers"] == "1" and float(values["image_silent_s"]) > 1.0
    h.images.publish(frame(red_square(), 1))
    assert wait_for(lambda: _status(h).level == DiagnosticStatus.OK, 5), _status(h).message
    assert h.diag("image_stalls") == "1" and int(h.diag("frames_received")) >= 1
    # deactivated: no subscription, nothing to watch. The camera keeps sending until then: a
    # silent second (image_stall_warn_s) while the transition runs would be a real new stall.
    with _camera_feeding(h, period_s=0.2):
        assert h.client.transition(h.fqn, "deactivate")
        assert wait_for(lambda: h.diag("image_publishers") == "0", 5)
    n = len(h.diags)
    assert wait_for(lambda: len(h.diags) > n + 8, 5)  # > 1.6 s of reports
    assert h.diag("image_stalls") == "1" and _status(h).level == DiagnosticStatus.OK


def test_goal_services_are_private_so_two_nodes_share_a_namespace(make_harness):
    a = make_harness("shared", node_name="seg_a")
    b = Harness(a.ns, node_name="seg_b")  # same namespace, own client
    try:
        for h in (a, b):
            assert h.client.transition(h.fqn, "configure")
        # the graph is learnt through discovery: wait until both nodes' services are seen
        wanted = {f"{a.ns}/seg_a/list_goals", f"{a.ns}/seg_b/clear_goals"}

        def services() -> dict:
            return dict(a.client.node.get_service_names_and_types())

        assert wait_for(lambda: wanted <= set(services()), 10), sorted(services())
        assert f"{a.ns}/list_goals" not in services(), "no namespace-level service left"
        # one goal stream for the namespace reaches both nodes; each lists its own book
        assert wait_for(lambda: a.goals.get_subscription_count() == 2, 10)
        a.goals.publish(Goal(id="mug", text="red mug", standing=True))
        for h in (a, b):
            assert wait_for(lambda h=h: [g.id for g in h.list_goals()] == ["mug"], 5)
        b.node.goals.clear()
        assert b.list_goals() == [] and [g.id for g in a.list_goals()] == ["mug"]
        assert a.client.call(ListGoals, f"{a.fqn}/list_goals", ListGoals.Request()).goals
    finally:
        b.close()
