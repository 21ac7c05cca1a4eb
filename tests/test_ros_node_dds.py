"""perception_node as a subprocess with the REAL Segmenter and a tiny random model, over DDS.

Started exactly as launch/perception.launch.py starts it (``perception_node --ros-args
--params-file config/perception.yaml -p model_path:=... -r image:=...``) and driven through
its lifecycle services. One node process serves the module's tests, in order: lifecycle and
answers, bad input, load (a 30 Hz camera against a model slower than the camera), then
deactivate / cleanup / SIGTERM. A random tiny model still writes valid descriptors: decoding is
grammar-constrained, so the published mask must equal the decoded descriptor.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("transformers")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from rclpy.serialization import serialize_message  # noqa: E402
from ros_harness import (  # noqa: E402
    NodeProcess,
    RosClient,
    diag_values,
    node_command,
    wait_for,
)
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header, String  # noqa: E402
from text4seg_msgs.msg import Goal, SegmentationArray  # noqa: E402
from text4seg_msgs.srv import ListGoals  # noqa: E402
from vision_msgs.msg import Detection2DArray  # noqa: E402

from text4seg_ros.descriptors import decode_labels, decode_mask, grid_to_labels  # noqa: E402
from text4seg_ros.ros.image import array_to_image, image_to_array  # noqa: E402

pytestmark = pytest.mark.ros
GRID = 16
NS = "/dds_t"
CAMERA = f"{NS}/camera/color/image_raw"
FQN = f"{NS}/perception_node"


@pytest.fixture(scope="module")
def tiny_model(tiny_model_factory):
    return tiny_model_factory("llava", grid=GRID)


class Rig:
    """The node subprocess, a client, and the topics the tests use."""

    def __init__(self, model_dir, log_path) -> None:
        self.model_dir = model_dir
        params = {"model_path": model_dir, "grid": GRID, "diagnostics_period_s": 0.25}
        self.node = NodeProcess(node_command(NS, params, {"image": CAMERA}), log_path)
        self.client = c = RosClient("dds_test_client")
        self.segs = c.collect(SegmentationArray, f"{NS}/segmentations")
        self.dets = c.collect(Detection2DArray, f"{NS}/detections")
        self.masks = c.collect(Image, f"{NS}/mask")
        self.diags = c.collect(DiagnosticArray, "/diagnostics")
        self.camera = c.node.create_publisher(Image, CAMERA, qos_profile_sensor_data)
        self.goals = c.node.create_publisher(Goal, f"{NS}/goals", 10)
        self.goal_text = c.node.create_publisher(String, f"{NS}/goal_text", 10)

    def diag(self) -> dict[str, str]:
        mine = [m for m in list(self.diags) if m.status and m.status[0].name.startswith(FQN)]
        return diag_values(mine[-1]) if mine else {}

    def fresh_diag(self) -> dict[str, str]:
        """Diagnostics published after this call (counters up to date)."""
        n = len(self.diags)
        assert wait_for(lambda: len(self.diags) > n + 1, 10), self.node.log()[-3000:]
        return self.diag()

    def list_goals(self):
        return self.client.call(ListGoals, f"{FQN}/list_goals", ListGoals.Request()).goals


@pytest.fixture(scope="module")
def rig(tiny_model, tmp_path_factory):
    r = Rig(tiny_model, tmp_path_factory.mktemp("log") / "node.log")
    yield r
    r.client.close()
    r.node.stop()


def frame(seq: int, h: int = 48, w: int = 64) -> Image:
    rgb = np.full((h, w, 3), 40, np.uint8)
    rgb[10:30, 8:40] = (220, 30, 30)
    header = Header(frame_id="camera_color_optical_frame")
    header.stamp.sec, header.stamp.nanosec = 2000 + seq, 123
    return array_to_image(rgb, "rgb8", header)


def test_1_lifecycle_and_goal_and_frame_in_segmentation_out(rig):
    c = rig.client
    assert c.state(FQN, timeout=60) == "unconfigured", rig.node.log()[-3000:]
    from rcl_interfaces.srv import GetParameters

    names = ["model_path", "grid", "image_qos_reliability", "engine"]
    got = c.call(GetParameters, f"{FQN}/get_parameters", GetParameters.Request(names=names))
    values = [v.string_value or v.integer_value for v in got.values]
    assert values == [str(rig.model_dir), GRID, "best_effort", "torch"]  # file + overrides
    assert c.transition(FQN, "configure"), rig.node.log()[-3000:]
    assert c.state(FQN) == "inactive"
    assert c.transition(FQN, "activate")
    assert c.state(FQN) == "active"
    assert wait_for(lambda: rig.camera.get_subscription_count() == 1, 10)
    assert wait_for(lambda: rig.goals.get_subscription_count() == 1, 10)
    rig.goals.publish(Goal(id="mug", text="red mug", task="res", standing=False))
    assert wait_for(lambda: [g.id for g in rig.list_goals()] == ["mug"], 10)
    msg = frame(1)
    rig.camera.publish(msg)
    assert wait_for(lambda: rig.segs and rig.dets and rig.masks, 30), rig.node.log()[-3000:]
    arr = rig.segs[0]
    assert arr.header == msg.header
    (seg,) = arr.segmentations
    assert seg.header == msg.header and seg.goal_id == "mug" and seg.label == "red mug"
    mask = image_to_array(seg.mask)
    assert mask.shape == (48, 64) and set(np.unique(mask)) <= {0, 255}
    expected = decode_mask(seg.descriptor, "red mug", (48, 64), GRID)
    assert np.array_equal(mask == 255, expected), "published mask must be the decoded descriptor"
    assert seg.empty == (not expected.any()) and seg.model_steps > 0 and 0 <= seg.score <= 1
    assert seg.descriptor.count("\n") >= GRID, "a full G-row descriptor"
    assert rig.masks[0].header == msg.header
    assert wait_for(lambda: rig.list_goals() == [], 10), "one-shot goal answered once, then removed"
    # every other task kind through the real Segmenter, batched on one frame
    rig.goals.publish(Goal(id="g", text="cups", task="gres"))
    rig.goals.publish(Goal(id="ov", task="open_vocab", classes=["cup", "plate"]))
    rig.goals.publish(Goal(id="in", text="mug", task="instances"))
    assert wait_for(lambda: len(rig.list_goals()) == 3, 10)
    msg = frame(2)
    rig.camera.publish(msg)
    assert wait_for(lambda: len(rig.segs) == len(rig.dets) == 2, 30), rig.node.log()[-3000:]
    segs = rig.segs[1].segmentations
    assert all(s.header == msg.header for s in segs)
    whole = {s.goal_id: s for s in segs if s.instance == 0}
    assert set(whole) == {"g", "ov", "in"}
    assert whole["g"].task == "gres" and whole["in"].task == "instances"
    ov = whole["ov"]
    assert list(ov.labels) == ["others", "cup", "plate"]
    grid = decode_labels(ov.descriptor, ["others", "cup", "plate"], GRID)
    assert np.array_equal(image_to_array(ov.mask), grid_to_labels(grid, (48, 64)))
    instances = [s for s in segs if s.goal_id == "in" and s.instance > 0]
    assert [s.instance for s in instances] == list(range(1, len(instances) + 1))
    det_ids = {d.id for d in rig.dets[1].detections}
    assert det_ids <= {"g", "ov/cup", "ov/plate"} | {f"in/{s.instance}" for s in instances}
    assert wait_for(lambda: rig.list_goals() == [], 10)
    d = rig.fresh_diag()
    assert d["model"] == "loaded" and d["state"] == "active" and d["frames_processed"] == "2"


def test_2_bad_input_is_rejected_counted_and_the_node_stays_up(rig):
    # frames are converted (and so rejected) only while a goal is active: idle ones are skipped
    rig.goals.publish(Goal(id="hold", text="red mug", standing=True))
    assert wait_for(lambda: [g.id for g in rig.list_goals()] == ["hold"], 10)
    before = rig.fresh_diag()
    bad_images = []
    m = frame(10)
    m.encoding = "yuv422"
    bad_images.append(m)
    m = frame(11)
    m.step = 64 * 3 + 7  # does not match width x 3 for the data sent
    bad_images.append(m)
    bad_images.append(Image(encoding="rgb8", height=0, width=0, step=0))
    bad_images.append(Image(encoding="rgb8", height=4320, width=7680, step=7680 * 3))
    for m in bad_images:
        rig.camera.publish(m)
        time.sleep(0.05)
    # non-UTF-8 text: raw CDR bytes with the text's bytes replaced (rclpy cannot build it)
    raw = serialize_message(Goal(id="bin", text="ABCD", standing=True))
    raw = raw.replace(b"ABCD", b"\xff\xfe\xc3\x28")
    bad_goals = [Goal(text=""), Goal(text="x" * 100_000), Goal(text="cup", task="teleport")]
    for g in bad_goals:
        rig.goals.publish(g)
    rig.goals.publish(raw)
    rig.goal_text.publish(String(data="   "))
    n_goals = len(bad_goals) + 2

    def counted() -> bool:
        d = rig.diag()
        return (
            int(d.get("images_rejected", -1)) - int(before["images_rejected"]) == len(bad_images)
            and int(d.get("goals_rejected", -1)) - int(before["goals_rejected"]) == n_goals
        )

    assert wait_for(counted, 15), (rig.diag(), rig.node.log()[-3000:])
    log = rig.node.log()
    for text in (
        "unsupported image encoding 'yuv422'",
        "exceeds max_image_pixels",
        "zero size",
        "not valid UTF-8",
        "unknown task 'teleport'",
        "max_goal_chars",
        "is empty",
    ):
        assert text in log, text  # fmt: skip
    assert rig.node.alive() and rig.client.state(FQN) == "active"
    rig.goals.publish(Goal(id="hold", cancel=True))
    assert wait_for(lambda: rig.list_goals() == [], 10)
    rig.goal_text.publish(String(data="red mug"))
    assert wait_for(lambda: len(rig.list_goals()) == 1, 10)
    n = len(rig.segs)
    ok = frame(12)
    rig.camera.publish(ok)
    assert wait_for(lambda: len(rig.segs) > n, 30)
    assert rig.segs[-1].header == ok.header


def test_3_camera_faster_than_model_keeps_latency_bounded_memory_flat_newest_frames(rig):
    assert [g.id for g in rig.list_goals()] == ["text"]  # standing goal from the last test
    start = rig.fresh_diag()
    n0 = len(rig.segs)
    sent, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < 6.0:  # a 30 Hz camera, 640 x 480
        rig.camera.publish(frame(100 + sent, 480, 640))
        sent += 1
        time.sleep(max(0.0, t0 + sent / 30 - time.monotonic()))
    # A small last frame: 640 x 480 frames (921 kB) sent best effort can be lost whole in
    # transport (README "Large frames"); one lost at the very end leaves no sequence gap to
    # count, so the burst ends with a frame that always arrives.
    rig.camera.publish(frame(100 + sent, 48, 64))
    sent += 1
    stopped = time.monotonic()
    time.sleep(1.0)
    mid = rig.fresh_diag()
    answered = rig.segs[n0:]
    seqs = [a.header.stamp.sec - 2100 for a in answered]
    lat = np.array([a.segmentations[0].latency_s for a in answered])
    proc_s = 6.0 / max(len(answered), 1)
    dropped = int(mid["frames_dropped"]) - int(start["frames_dropped"])
    received = int(mid["frames_received"]) - int(start["frames_received"])
    missed = int(mid["frames_missed"]) - int(start["frames_missed"])
    print(
        f"\nload: sent {sent} frames in 6 s, node received {received} (missed {missed}), answered "
        f"{len(answered)}, dropped {dropped}; latency mean {lat.mean():.3f} s, max "
        f"{lat.max():.3f} s; rss {start['rss_mb']} -> {mid['rss_mb']} MiB"
    )
    assert len(answered) >= 3, rig.node.log()[-3000:]
    # The premise: the node gets frames faster than it answers them. Compare with the frames
    # it received, not those sent: how many 921 kB frames transport delivers varies by machine
    # (CI received 153 of 181 where this machine received 98, at the same model speed).
    assert len(answered) < received, "the model keeps up with the camera here: no load to test"
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert seqs[-1] >= sent - 1 - max(3, int(30 * 2 * proc_s)), "answers the newest frames"
    # no backlog: latency stays near one processing time (not growing with time)
    assert lat.max() < 3 * np.median(lat) + 0.5, lat
    assert lat[len(lat) // 2 :].mean() < 2 * lat[: len(lat) // 2].mean() + 0.2, lat
    # every frame the node received was answered or dropped in favour of a newer one
    assert received <= sent and dropped >= received - len(answered) - 1
    # frames replaced in the DDS queue before the callback are counted too: none unaccounted
    assert sent - 2 <= received + missed <= sent, (sent, received, missed)
    assert dropped > 0
    assert time.monotonic() - stopped < 10
    # memory flat over a second period of the same load
    t1 = time.monotonic()
    k = 0
    while time.monotonic() - t1 < 3.0:
        rig.camera.publish(frame(1000 + k, 480, 640))
        k += 1
        time.sleep(max(0.0, t1 + k / 30 - time.monotonic()))
    end = rig.fresh_diag()
    assert float(end["rss_mb"]) - float(mid["rss_mb"]) < 40, (mid["rss_mb"], end["rss_mb"])


def test_4_deactivate_stops_output_cleanup_frees_and_sigterm_exits(rig):
    c = rig.client
    assert c.transition(FQN, "deactivate")
    assert c.state(FQN) == "inactive"
    time.sleep(0.5)
    n = len(rig.segs)
    for k in range(5):
        rig.camera.publish(frame(5000 + k))
        time.sleep(0.05)
    time.sleep(1.0)
    assert len(rig.segs) == n, "an inactive node publishes nothing"
    assert [g.id for g in rig.list_goals()] == ["text"], "goals survive deactivate"
    assert c.transition(FQN, "cleanup")
    assert c.state(FQN) == "unconfigured"
    assert wait_for(lambda: rig.diag().get("model") == "unloaded", 5)
    assert rig.node.alive()
    assert rig.node.stop(timeout=15) == 0, rig.node.log()[-2000:]
