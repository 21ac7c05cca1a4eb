"""Hostile input, bounded (issue 9, item 10): hypothesis-made messages at the live node over DDS.

perception_node runs as its own process with the real Segmenter and a tiny model. Hypothesis
draws a fixed number of messages (derandomized: the same ones every run) with hostile field
contents: ``Goal`` ids, texts (any unicode, control characters, over-long), tasks, classes and
flags; ``Image`` headers, sizes, encodings, steps, endianness and data lengths, and consistent
images of every encoding; ``CompressedImage`` formats and bytes (random, truncated, valid PNG
and JPEG, headers claiming huge sizes). Each message is sent alone and the test waits until the
node accounts for it in /diagnostics: every goal is accepted, cancelled or counted as rejected;
every frame is processed, skipped, dropped or counted as rejected (nothing else: no inference
error, no callback error). The node stays up and answers a plain goal on a plain frame at the
end. Samples that are not even valid CDR are dropped by the middleware before any callback
(nothing to count): they are sent too, and the node must survive them.
"""

from __future__ import annotations

import io
import string

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("transformers")
hypothesis = pytest.importorskip("hypothesis")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from PIL import Image as PILImage  # noqa: E402
from rcl_interfaces.msg import Parameter as ParameterMsg  # noqa: E402
from rcl_interfaces.msg import ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from ros_harness import NodeProcess, RosClient, diag_values, node_command, wait_for  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from text4seg_msgs.msg import Goal, SegmentationArray  # noqa: E402

pytestmark = pytest.mark.ros
NS = "/hostile"
FQN = f"{NS}/perception_node"
GRID = 8
GOALS, IMAGES, COMPRESSED = 100, 50, 30
FRAME_KEYS = (
    "frames_processed", "frames_dropped", "frames_skipped", "frames_cancelled",
    "images_rejected", "inference_errors",
)  # fmt: skip
ENCODINGS = ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "8UC1", "mono16", "16UC1"]
CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "8UC1": 1}
FOREVER = settings(
    max_examples=1,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)

texts = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=string.printable, max_size=300),
    st.sampled_from(["", " ", "red mug", "others", "a|b", "<seg>", "\x00", "\ufffd", "cup *3"]),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=200, max_size=5000),
)
goal_msgs = st.builds(
    Goal,
    id=st.one_of(st.just(""), st.text(max_size=20), st.text(min_size=120, max_size=200)),
    text=texts,
    task=st.one_of(
        st.sampled_from(["", "res", "gres", "rec", "open_vocab", "instances", "reason"]),
        st.text(max_size=12),
    ),
    standing=st.booleans(),
    classes=st.lists(texts, max_size=70),
    cancel=st.booleans(),
)


@st.composite
def headers(draw) -> Header:
    h = Header(frame_id=draw(st.text(max_size=64)))
    h.stamp.sec = draw(st.integers(-(2**31), 2**31 - 1))
    h.stamp.nanosec = draw(st.integers(0, 2**32 - 1))
    return h


@st.composite
def raw_images(draw) -> Image:
    """Arbitrary fields (mostly inconsistent), or a consistent image of a random encoding."""
    msg = Image(header=draw(headers()))
    if draw(st.booleans()):
        enc = draw(st.sampled_from(ENCODINGS))
        h, w = draw(st.integers(1, 40)), draw(st.integers(1, 40))
        size = 2 if enc in ("mono16", "16UC1") else 1
        pad = draw(st.integers(0, 8))
        msg.encoding, msg.height, msg.width = enc, h, w
        msg.step = w * CHANNELS.get(enc, 1) * size + pad
        msg.is_bigendian = draw(st.integers(0, 1))
        msg.data = draw(st.binary(min_size=msg.step * h, max_size=msg.step * h))
        return msg
    msg.encoding = draw(st.one_of(st.sampled_from(ENCODINGS), st.text(max_size=16)))
    msg.height = draw(st.one_of(st.integers(0, 64), st.integers(0, 2**32 - 1)))
    msg.width = draw(st.one_of(st.integers(0, 64), st.integers(0, 2**32 - 1)))
    msg.step = draw(st.one_of(st.integers(0, 256), st.integers(0, 2**32 - 1)))
    msg.is_bigendian = draw(st.integers(0, 255))
    msg.data = draw(st.binary(max_size=20_000))
    return msg


def _encoded(rgb: np.ndarray, fmt: str) -> bytes:
    out = io.BytesIO()
    PILImage.fromarray(rgb).save(out, format=fmt)
    return out.getvalue()


@st.composite
def compressed_images(draw) -> CompressedImage:
    msg = CompressedImage(header=draw(headers()))
    msg.format = draw(st.one_of(st.sampled_from(["jpeg", "png", "rgb8; jpeg compressed"]),
                                st.text(max_size=20)))  # fmt: skip
    kind = draw(st.sampled_from(["random", "png", "jpeg", "truncated", "huge"]))
    if kind == "random":
        msg.data = draw(st.binary(max_size=5000))
        return msg
    h, w = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    rgb = np.frombuffer(draw(st.binary(min_size=h * w * 3, max_size=h * w * 3)), np.uint8)
    data = _encoded(rgb.reshape(h, w, 3), "PNG" if kind != "jpeg" else "JPEG")
    if kind == "truncated":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif kind == "huge":  # a PNG header claiming 100000 x 100000 pixels
        data = data[:16] + (100_000).to_bytes(4, "big") * 2 + data[24:]
    msg.data = data
    return msg


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from text4seg_ros.model.tiny import build_tiny_model

    return build_tiny_model("llava", tmp_path_factory.mktemp("tiny") / "llava", grid=GRID)


class Rig:
    def __init__(self, model_dir, log_path) -> None:
        params = {
            "model_path": model_dir, "grid": GRID, "diagnostics_period_s": 0.05,
            "max_goals": 64, "max_image_pixels": 64 * 64,
        }  # fmt: skip
        self.node = NodeProcess(node_command(NS, params, {}), log_path)
        self.client = c = RosClient("hostile_client")
        self.diags = c.collect(DiagnosticArray, "/diagnostics")
        self.segs = c.collect(SegmentationArray, f"{NS}/segmentations")
        self.goals = c.node.create_publisher(Goal, f"{NS}/goals", 10)
        self.camera = c.node.create_publisher(Image, f"{NS}/image", qos_profile_sensor_data)
        self.compressed = c.node.create_publisher(
            CompressedImage, f"{NS}/image/compressed", qos_profile_sensor_data
        )

    def diag(self) -> dict[str, int]:
        """The newest counters (ints) of this node."""
        mine = [m for m in list(self.diags) if m.status and m.status[0].name.startswith(FQN)]
        values = diag_values(mine[-1]) if mine else {}
        return {k: int(v) for k, v in values.items() if v.lstrip("-").isdigit()}

    def activate(self) -> None:
        c = self.client
        assert c.transition(FQN, "configure"), self.node.log()[-3000:]
        assert c.transition(FQN, "activate")
        assert wait_for(lambda: self.goals.get_subscription_count() == 1, 10)

    def add_plain_goal(self) -> None:
        n = self.diag().get("goals_accepted", 0)
        self.goals.publish(Goal(id="plain", text="red mug", standing=True))
        assert wait_for(lambda: self.diag().get("goals_accepted", 0) == n + 1, 10)


def goals_seen(d: dict[str, int]) -> int:
    return d.get("goals_accepted", 0) + d.get("goals_rejected", 0) + d.get("goals_cancelled", 0)


def frames_done(d: dict[str, int]) -> int:
    return sum(d.get(k, 0) for k in FRAME_KEYS)


@pytest.fixture(scope="module")
def rig(tiny_model, tmp_path_factory):
    r = Rig(tiny_model, tmp_path_factory.mktemp("log") / "node.log")
    assert r.client.state(FQN, timeout=60) == "unconfigured", r.node.log()[-3000:]
    r.activate()
    yield r
    r.client.close()
    r.node.stop()


def test_hostile_goals_are_each_accepted_cancelled_or_counted(rig):
    sent = [0]

    @settings(FOREVER, max_examples=GOALS)
    @given(msg=goal_msgs)
    def send(msg: Goal) -> None:
        before = goals_seen(rig.diag())
        rig.goals.publish(msg)
        sent[0] += 1
        assert wait_for(lambda: goals_seen(rig.diag()) == before + 1, 10), (
            msg, rig.node.log()[-2000:],
        )  # fmt: skip
        if sent[0] % 20 == 0:
            rig.client.call(Trigger, f"{FQN}/clear_goals", Trigger.Request())

    send()
    d = rig.diag()
    assert sent[0] == GOALS and goals_seen(d) == GOALS and rig.node.alive()
    assert d["goals_accepted"] > 0 and d["goals_rejected"] > 0, d
    # the accepted hostile goals still active are answered on a frame (or fail alone)
    active = d["goals_active"]
    rgb = np.zeros((24, 32, 3), np.uint8)
    frame = Image(height=24, width=32, encoding="rgb8", step=96, data=rgb.tobytes())
    n = len(rig.segs)
    rig.camera.publish(frame)
    if active:
        assert wait_for(lambda: len(rig.segs) > n, 60), rig.node.log()[-3000:]
        ids = {s.goal_id for s in rig.segs[-1].segmentations}
        assert len(ids) == active
    assert rig.diag().get("inference_errors", 0) == 0 and rig.diag().get("callback_errors") == 0


def _send_frames(rig, publisher, strategy, count: int) -> None:
    sent = [0]

    @settings(FOREVER, max_examples=count)
    @given(msg=strategy)
    def send(msg) -> None:
        d0 = rig.diag()
        publisher.publish(msg)
        sent[0] += 1

        def accounted() -> bool:
            d = rig.diag()
            arrived = d["frames_received"] - d0["frames_received"]
            lost = d["frames_missed"] - d0["frames_missed"]
            return arrived + lost == 1 and frames_done(d) == d["frames_received"]

        if not wait_for(accounted, 60):
            log = "\n".join(x for x in rig.node.log().splitlines() if "goal" not in x)
            raise AssertionError(f"{msg!r:.300}\n{d0}\n{rig.diag()}\n{log[-3000:]}")

    send()
    assert sent[0] == count


def _assert_each_answered_or_counted(rig, start: dict, sent: int, what: str) -> None:
    """Since ``start`` (a diagnostics snapshot): every one of ``sent`` frames reached the node
    or was counted missed; some were processed, some rejected; nothing raised."""
    d = rig.diag()
    got = {k: d[k] - start[k] for k in (*FRAME_KEYS, "frames_received", "frames_missed")}
    print(f"\nhostile {what}: {got}")
    assert got["frames_received"] + got["frames_missed"] == sent
    assert got["frames_processed"] > 0 and got["images_rejected"] > 0, got
    assert got["inference_errors"] == 0 and d["callback_errors"] == 0


def test_hostile_images_are_each_answered_or_counted(rig):
    rig.client.call(Trigger, f"{FQN}/clear_goals", Trigger.Request())
    rig.add_plain_goal()
    start = rig.diag()
    _send_frames(rig, rig.camera, raw_images(), IMAGES)
    _assert_each_answered_or_counted(rig, start, IMAGES, "images")
    for data in (b"", b"\x00\x01\x00\x00", bytes(range(256))):  # not even CDR: dropped by rmw
        rig.camera.publish(data)
        rig.goals.publish(data)
    assert rig.node.alive()


def test_hostile_compressed_images_are_each_answered_or_counted(rig):
    c = rig.client
    value = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=True)
    req = SetParameters.Request(parameters=[ParameterMsg(name="compressed", value=value)])
    assert c.call(SetParameters, f"{FQN}/set_parameters", req).results[0].successful
    assert c.transition(FQN, "deactivate") and c.transition(FQN, "cleanup")
    rig.activate()
    assert wait_for(lambda: rig.compressed.get_subscription_count() == 1, 10)
    rig.add_plain_goal()
    start = rig.diag()
    _send_frames(rig, rig.compressed, compressed_images(), COMPRESSED)
    _assert_each_answered_or_counted(rig, start, COMPRESSED, "compressed images")
    # still answering a plain frame
    n = len(rig.segs)
    msg = CompressedImage(format="png", data=_encoded(np.zeros((16, 16, 3), np.uint8), "PNG"))
    rig.compressed.publish(msg)
    assert wait_for(lambda: len(rig.segs) > n, 30)
    assert [s.goal_id for s in rig.segs[-1].segmentations] == ["plain"]
    assert rig.node.alive() and c.state(FQN) == "active"
