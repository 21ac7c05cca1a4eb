"""The perception node over real DDS, in-process, with a stand-in Segmenter (tests/ros_fakes.py).

Exercises the ROS shell: lifecycle, topics, headers, services, goal bookkeeping, rejections,
diagnostics and the newest-frame policy under load. The same node with the real Segmenter and a
tiny model runs as a subprocess in tests/test_ros_node_dds.py.
"""

from __future__ import annotations

import statistics
import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.context import Context  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from ros_fakes import ColourSegmenter  # noqa: E402
from ros_harness import DOMAIN_ID, wait_for  # noqa: E402
from ros_node_harness import Harness, frame, red_square  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from text4seg_msgs.msg import Goal  # noqa: E402

from text4seg_ros.ros.image import image_to_array  # noqa: E402
from text4seg_ros.ros.node import PerceptionNode  # noqa: E402

pytestmark = pytest.mark.ros


@pytest.fixture
def harness(request):
    made = []

    def make(delay_s: float = 0.0, params: dict | None = None) -> Harness:
        h = Harness(f"/t{request.node.name.replace('test_', '')[:20]}_{len(made)}", delay_s, params)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def test_lifecycle_goal_and_frame_give_results_with_the_frame_header(harness):
    h = harness(params={"diagnostics_period_s": 0.2})
    assert h.client.state(h.fqn) == "unconfigured"
    h.start()
    h.goals.publish(Goal(id="mug", text="red mug", task="res", standing=False))
    assert wait_for(lambda: len(h.list_goals()) == 1, 5)
    img = red_square()
    # bgr8 with 4 padding bytes per row: exercised end to end
    bgr = img[:, :, ::-1].copy()
    msg = frame(bgr, 1, "bgr8")
    padded = np.zeros((bgr.shape[0], bgr.shape[1] * 3 + 4), np.uint8)
    padded[:, : bgr.shape[1] * 3] = bgr.reshape(bgr.shape[0], -1)
    msg.step, msg.data = padded.shape[1], padded.tobytes()
    h.images.publish(msg)
    assert wait_for(lambda: h.segs and h.dets and h.masks and h.overlays, 10)
    seg_array = h.segs[0]
    assert seg_array.header == msg.header
    (seg,) = seg_array.segmentations
    assert seg.header == msg.header and seg.goal_id == "mug" and seg.goal_text == "red mug"
    assert seg.label == "red mug" and seg.task == "res" and not seg.empty
    assert np.allclose(seg.box, [10, 8, 30, 20])
    mask = image_to_array(seg.mask)
    assert seg.mask.encoding == "mono8" and mask.shape == (48, 64)
    assert np.array_equal(mask == 255, img[..., 0] > 127)
    assert seg.model_steps == 3 and 0 < seg.latency_s < 10 and seg.score == pytest.approx(0.9)
    (det,) = h.dets[0].detections
    assert h.dets[0].header == msg.header and det.id == "mug"
    assert det.results[0].hypothesis.class_id == "red mug"
    assert (det.bbox.center.position.x, det.bbox.center.position.y) == (20.0, 14.0)
    assert (det.bbox.size_x, det.bbox.size_y) == (20.0, 12.0)
    assert h.masks[0].header == msg.header
    assert np.array_equal(image_to_array(h.masks[0]) == 255, img[..., 0] > 127)
    assert h.overlays[0].encoding == "rgb8" and h.overlays[0].header == msg.header
    # one-shot: answered once, then gone
    assert wait_for(lambda: h.list_goals() == [], 5)
    h.images.publish(frame(img, 2))
    time.sleep(0.5)
    assert len(h.segs) == 1
    assert wait_for(lambda: h.diag("frames_processed") == "1", 5)
    assert h.diag("state") == "active" and h.diag("model") == "loaded"


def test_standing_goals_answer_every_frame_and_can_be_replaced_cancelled_cleared(harness):
    h = harness()
    h.start()
    h.goal_text.publish(String(data="  red thing "))
    h.goals.publish(Goal(id="cls", text="", task="open_vocab", standing=True, classes=["red"]))
    assert wait_for(lambda: len(h.list_goals()) == 2, 5)
    order = [g.id for g in h.list_goals()]  # arrival order (two topics: either may be first)
    assert sorted(order) == ["cls", "text"]
    listed = {g.id: g for g in h.list_goals()}
    assert listed["text"].text == "red thing" and listed["text"].standing
    assert listed["cls"].task == "open_vocab" and list(listed["cls"].classes) == ["red"]
    for seq in range(3):
        h.images.publish(frame(red_square(), seq))
        assert wait_for(lambda s=seq: len(h.segs) == s + 1, 10)
    assert [[s.goal_id for s in a.segmentations] for a in h.segs] == [order] * 3
    ov = h.segs[-1].segmentations[order.index("cls")]
    assert list(ov.labels) == ["others", "red"] and ov.label == "red"
    assert wait_for(lambda: len(h.dets) == 3, 5)  # another topic: may trail segmentations
    assert {d.id for d in h.dets[-1].detections} == {"text", "cls/red"}
    # replacing the shortcut goal keeps one goal with id "text"
    h.goal_text.publish(String(data="grey wall"))
    assert wait_for(lambda: {g.text for g in h.list_goals()} == {"grey wall", "red"}, 5)
    h.goals.publish(Goal(id="cls", cancel=True))
    assert wait_for(lambda: [g.id for g in h.list_goals()] == ["text"], 5)
    # deactivate: no answers, goals kept; activate again: answers resume
    assert h.client.transition(h.fqn, "deactivate")
    n = len(h.segs)
    h.images.publish(frame(red_square(), 10))
    time.sleep(0.5)
    assert len(h.segs) == n and [g.id for g in h.list_goals()] == ["text"]
    assert h.client.transition(h.fqn, "activate")
    assert wait_for(lambda: h.images.get_subscription_count() > 0, 10)
    h.images.publish(frame(red_square(), 11))
    assert wait_for(lambda: len(h.segs) == n + 1, 10)
    assert h.segs[-1].header.stamp.sec == 1011
    reply = h.client.call(Trigger, f"{h.fqn}/clear_goals", Trigger.Request())
    assert reply.success and reply.message == "cleared 1 goals"
    assert h.list_goals() == []


def test_bad_input_is_rejected_and_counted_and_the_node_stays_up(harness):
    h = harness(params={"max_image_pixels": 100 * 100, "diagnostics_period_s": 0.2})
    h.start()
    h.goals.publish(Goal(id="ok", text="red", standing=True))
    assert wait_for(lambda: len(h.list_goals()) == 1, 5)
    good = frame(red_square(), 0)
    bad_images = []
    m = frame(red_square(), 1)
    m.encoding = "yuv422"  # unsupported
    bad_images.append(m)
    m = frame(red_square(), 2)
    m.step = 64 * 3 - 1  # shorter than a row
    bad_images.append(m)
    m = Image(encoding="rgb8", height=0, width=0, step=0)  # zero size
    bad_images.append(m)
    bad_images.append(Image(encoding="rgb8", height=4320, width=7680, step=7680 * 3))  # 8K
    m = frame(red_square(), 3)
    m.data = bytes(10)  # too short
    bad_images.append(m)
    for m in bad_images:
        h.images.publish(m)
        time.sleep(0.05)
    assert wait_for(lambda: h.diag("images_rejected") == str(len(bad_images)), 10)
    bad_goals = [
        Goal(text=""),
        Goal(text="   "),
        Goal(text="x" * 5000),
        Goal(text="cup", task="teleport"),
        Goal(text="a | b"),
        Goal(text="cup", classes=["cup"]),
        Goal(id="nope", cancel=True),
        Goal(text="forbidden fruit"),  # refused by the Segmenter's own goal check
    ]
    for g in bad_goals:
        h.goals.publish(g)
    h.goal_text.publish(String(data=""))
    n_bad = len(bad_goals) + 1
    assert wait_for(lambda: h.diag("goals_rejected") == str(n_bad), 10), h.diag("last_rejection")
    assert [g.id for g in h.list_goals()] == ["ok"]
    h.images.publish(good)  # still answering
    assert wait_for(lambda: len(h.segs) == 1, 10)
    assert h.segs[0].header == good.header
    # a goal whose decoding fails gets an error result; the frame's other goal is answered
    h.goals.publish(Goal(id="boom", text="fail now", standing=False))
    assert wait_for(lambda: len(h.list_goals()) == 2, 5)
    h.images.publish(frame(red_square(), 5))
    assert wait_for(lambda: len(h.segs) == 2, 10)
    ok, boom = h.segs[1].segmentations
    assert (ok.goal_id, ok.error, ok.empty) == ("ok", "", False)
    assert boom.goal_id == "boom" and boom.empty and boom.score == 0.0
    assert boom.error == "RuntimeError: model failure requested by the goal text"
    assert wait_for(lambda: h.diag("goal_errors") == "1", 10)
    assert h.diag("inference_errors") == "0"
    assert [g.id for g in h.list_goals()] == ["ok"]  # the failed one-shot retired: it was answered
    h.images.publish(frame(red_square(), 6))
    assert wait_for(lambda: len(h.segs) == 3, 10)
    assert [s.goal_id for s in h.segs[2].segmentations] == ["ok"]
    assert h.client.state(h.fqn) == "active"


def test_frames_without_goals_are_counted_as_skipped(harness):
    h = harness(params={"diagnostics_period_s": 0.1})
    h.start()
    for seq in range(3):  # no goal yet: taken by the worker and skipped
        h.images.publish(frame(red_square(), seq))
        assert wait_for(lambda s=seq: h.node.stats.counts["frames_skipped"] == s + 1, 5)
    assert h.fake.calls == [] and h.segs == []
    h.goals.publish(Goal(id="g", text="red", standing=True))
    assert wait_for(lambda: len(h.list_goals()) == 1, 5)
    h.images.publish(frame(red_square(), 3))
    assert wait_for(lambda: len(h.segs) == 1, 10)
    assert wait_for(lambda: h.diag("frames_processed") == "1", 5)
    assert h.diag("frames_skipped") == "3" and h.diag("frames_received") == "4"


# Best-effort frames of about 1 MB go out in fragments over DDS: now and then one is lost, or
# held back until the next frame is written (then it arrives seconds late), on a quiet machine
# too (seen about once in ten runs). The node is not at fault there, so these two timing tests
# get two more tries; a real backlog or a blocked callback fails all three.
@pytest.mark.flaky(reruns=2)
def test_slow_model_processes_only_the_newest_frames_without_backlog(harness):
    delay = 0.25
    h = harness(delay_s=delay, params={"diagnostics_period_s": 0.2})
    h.start()
    h.goals.publish(Goal(id="g", text="red", standing=True))
    assert wait_for(lambda: len(h.list_goals()) == 1, 5)
    sent = 0
    end = time.monotonic() + 3.0
    while time.monotonic() < end:  # a 30 Hz camera
        h.images.publish(frame(red_square(), sent))
        sent += 1
        time.sleep(1 / 30)
    # End with one lone frame: the last frames of a burst can be lost whole by best-effort
    # transport on a loaded machine, which would leave the node nothing new to answer.
    time.sleep(delay)
    h.images.publish(frame(red_square(), sent))
    sent += 1
    last_sent_at = time.monotonic()
    assert wait_for(lambda: h.fake.calls and len(h.segs) == len(h.fake.calls), 5)
    time.sleep(3 * delay)
    # no backlog: at most the one frame in flight at the end was answered after the camera stopped
    seqs = [a.header.stamp.sec - 1000 for a in h.segs]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert len(seqs) <= 3.0 / delay + 2, (len(seqs), sent)
    assert seqs[-1] >= sent - 3, "the last answer must be one of the newest frames"
    lat = [a.segmentations[0].latency_s for a in h.segs]
    # A backlog shows as latency growing frame after frame (about 2.7 s by the end here); one
    # scheduling stall of this process on a loaded 2-core machine is not a backlog (seen once:
    # a single 1.15 s answer among 0.25 to 0.3 s ones), so bound the median and the newest
    # answers rather than every single one.
    assert statistics.median(lat) < 2 * delay + 0.1, lat
    assert sum(lat[-3:]) / 3 < 2 * delay + 0.5, lat
    assert max(lat) < 2 * delay + 1.5, lat
    assert time.monotonic() - last_sent_at < 5
    # Every frame the node received but did not answer was dropped (one may be in flight);
    # frames best-effort transport lost before the node saw them are "missed", not dropped.
    assert wait_for(
        lambda: (
            int(h.diag("frames_dropped") or 0)
            >= int(h.diag("frames_received") or 0) - len(seqs) - 1
        ),
        5,
    ), [h.diag(k) for k in ("frames_received", "frames_dropped", "frames_missed")]
    received, missed = int(h.diag("frames_received")), int(h.diag("frames_missed"))
    assert received <= sent and sent - 2 <= received + missed <= sent, (sent, received, missed)


def test_compressed_input_when_enabled(harness):
    import io

    from PIL import Image as PILImage
    from sensor_msgs.msg import CompressedImage

    h = harness(params={"compressed": True})
    assert h.client.transition(h.fqn, "configure") and h.client.transition(h.fqn, "activate")
    pub = h.client.node.create_publisher(
        CompressedImage, f"{h.ns}/image/compressed", qos_profile_sensor_data
    )
    assert wait_for(lambda: pub.get_subscription_count() == 1, 10)
    assert h.images.get_subscription_count() == 0, "raw image is not subscribed then"
    h.goals.publish(Goal(id="r", text="red", standing=True))
    assert wait_for(lambda: len(h.list_goals()) == 1, 5)
    img = red_square()
    buf = io.BytesIO()
    PILImage.fromarray(img).save(buf, format="png")
    msg = CompressedImage(format="png", data=buf.getvalue())
    msg.header.frame_id = "cam"
    pub.publish(msg)
    assert wait_for(lambda: len(h.segs) == 1, 10)
    seg = h.segs[0].segmentations[0]
    assert seg.header.frame_id == "cam" and np.allclose(seg.box, [10, 8, 30, 20])


def test_parameters_are_validated_when_set_and_live_ones_apply(harness):
    from rcl_interfaces.msg import Parameter as ParameterMsg
    from rcl_interfaces.msg import ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    h = harness()
    h.start()

    def set_param(name, **value):
        req = SetParameters.Request()
        req.parameters = [ParameterMsg(name=name, value=ParameterValue(**value))]
        return h.client.call(SetParameters, f"{h.fqn}/set_parameters", req).results[0]

    res = set_param("engine", type=ParameterType.PARAMETER_STRING, string_value="magic")
    assert not res.successful and "unknown engine 'magic'" in res.reason
    res = set_param("max_goals", type=ParameterType.PARAMETER_INTEGER, integer_value=0)
    assert not res.successful and "out of range" in res.reason  # the descriptor range
    res = set_param("max_goals", type=ParameterType.PARAMETER_INTEGER, integer_value=1)
    assert res.successful and h.node.goals.max_goals == 1
    h.goals.publish(Goal(id="a", text="red", standing=True))
    h.goals.publish(Goal(id="b", text="blue", standing=True))
    assert wait_for(lambda: h.node.stats.counts["goals_rejected"] == 1, 5)
    assert [g.id for g in h.list_goals()] == ["a"]


def test_diagnostics_period_set_before_configure_applies_on_configure(harness):
    h = harness()  # the default period: 1 s
    assert h.node.health.timer.timer_period_ns == 1_000_000_000
    h.node.set_parameters([rclpy.parameter.Parameter("diagnostics_period_s", value=0.1)])
    h.start()
    assert h.node.health.timer.timer_period_ns == 100_000_000
    n = len(h.diags)
    time.sleep(1.0)
    assert len(h.diags) - n >= 5, "about ten /diagnostics messages a second"


def test_configure_fails_cleanly_without_a_model_and_the_node_stays_up(tmp_path, monkeypatch):
    from rclpy.lifecycle import TransitionCallbackReturn

    from text4seg_ros.model import meta
    from text4seg_ros.ros.model_loader import load_segmenter

    # No model_path and no shipped demo model where the node looks for one.
    monkeypatch.setattr(meta, "demo_model_candidates", lambda: [tmp_path / "no_demo"])

    ctx = Context()
    rclpy.init(context=ctx, domain_id=DOMAIN_ID)
    try:
        node = PerceptionNode(segmenter_factory=load_segmenter, context=ctx, namespace="/nomodel")
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert node.model_state.startswith("failed: parameter model_path is empty")
        assert "shipped demo model is missing" in node.model_state
        node.set_parameters([rclpy.parameter.Parameter("model_path", value="/no/such/dir")])
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert "is not a directory" in node.model_state
        status = node.stats.status("n", "cpu", "unconfigured", node.model_state, 0)
        assert status.level == status.ERROR
        # the node is still unconfigured and can be configured again
        node.segmenter_factory = lambda cfg: ColourSegmenter()
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.model_state == "loaded"
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        assert node.model_state == "unloaded" and node.segmenter is None
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)


@pytest.mark.flaky(reruns=2)  # see test_slow_model_processes_only_the_newest_frames_...
def test_a_busy_model_blocks_no_callback_and_the_newest_frame_comes_next(harness):
    h = harness(params={"diagnostics_period_s": 0.2})
    h.start()
    h.fake.gate = threading.Event()  # the model "runs" until the test opens the gate
    h.goals.publish(Goal(id="a", text="red", standing=True))
    assert wait_for(lambda: len(h.list_goals()) == 1, 5)
    h.images.publish(frame(red_square(), 0))
    assert h.fake.entered.wait(10)
    # inference is in progress: services, goals and camera callbacks still run
    start = time.monotonic()
    assert [g.id for g in h.list_goals()] == ["a"]
    h.goals.publish(Goal(id="b", text="red too", standing=True))
    assert wait_for(lambda: len(h.list_goals()) == 2, 5)
    for seq in range(1, 6):
        h.images.publish(frame(red_square(), seq))
        time.sleep(0.1)
    # frames 1..4 replaced by newer ones in the mailbox, 5 waits for the model. On a loaded
    # machine best-effort transport may lose a frame before the node sees it: it is then
    # counted missed (by its sequence gap), not received, and one fewer is dropped.

    def counted() -> bool:
        received, dropped, missed = (
            int(h.diag(k) or 0) for k in ("frames_received", "frames_dropped", "frames_missed")
        )
        return received + missed == 6 and dropped == received - 2 and received >= 2

    assert wait_for(counted, 5), [h.diag(k) for k in ("frames_received", "frames_dropped")]
    assert h.segs == [] and time.monotonic() - start < 10
    h.fake.gate.set()
    assert wait_for(lambda: len(h.segs) == 2, 10)
    time.sleep(0.3)
    assert [a.header.stamp.sec - 1000 for a in h.segs] == [0, 5]
    assert [len(a.segmentations) for a in h.segs] == [1, 2]  # goal b joined on the next frame


def test_params_file_values_reach_the_node_config(tmp_path):
    import yaml
    from ros_harness import PARAMS_FILE

    data = yaml.safe_load(PARAMS_FILE.read_text())
    data["/**"]["ros__parameters"].update(max_goals=3, score_threshold=0.5, mask_mode="label_map")
    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump(data))
    ctx = Context()
    rclpy.init(context=ctx, domain_id=DOMAIN_ID)
    try:
        node = PerceptionNode(
            segmenter_factory=lambda cfg: ColourSegmenter(),
            context=ctx,
            namespace="/yaml",
            cli_args=["--ros-args", "--params-file", str(params), "-p", "model_path:=/m"],
        )
        assert node.trigger_configure() == rclpy.lifecycle.TransitionCallbackReturn.SUCCESS
        cfg = node.config
        assert (cfg.max_goals, cfg.score_threshold, cfg.mask_mode) == (3, 0.5, "label_map")
        assert cfg.model_path == "/m" and node.goals.max_goals == 3
        node.trigger_cleanup()
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)
