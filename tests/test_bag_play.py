"""text4seg-bag play: a bag to live subscribers over real DDS (Fast DDS on loopback).

Each test process uses its own ROS domain id, and topics are remapped under a per-process
prefix, so parallel test runs never hear each other.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from helpers import DOMAIN_ID  # noqa: E402
from PIL import Image  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from rclpy.serialization import deserialize_message  # noqa: E402
from rosbags.rosbag2 import Reader  # noqa: E402

from text4seg_ros.bag import messages as m  # noqa: E402
from text4seg_ros.bag.play import BagPlayer, parse_remaps, ros_message_class  # noqa: E402
from text4seg_ros.bag.record import make_goals, record_images  # noqa: E402

PREFIX = f"/t4s_play_{os.getpid()}"
REMAP = {t: PREFIX + t for t in (m.IMAGE_TOPIC, m.GOALS_TOPIC, m.GROUND_TRUTH_TOPIC)}
FRAMES, RATE_HZ = 6, 20.0


@pytest.fixture(scope="module")
def bag(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("play")
    (root / "img").mkdir()
    (root / "gt").mkdir()
    rng = np.random.default_rng(3)
    for i in range(FRAMES):
        Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(
            root / "img" / f"{i:03d}.png"
        )
        Image.fromarray(np.full((32, 48), 255 * (i % 2), np.uint8)).save(
            root / "gt" / f"{i:03d}.png"
        )
    out = root / "bag"
    record_images(root / "img", out, goals=make_goals(["the thing"]), mask_dirs=[root / "gt"],
                  rate=RATE_HZ, start_ns=10**18)  # fmt: skip
    return out


def bag_messages(path: Path, topic: str) -> list[bytes]:
    with Reader(path) as reader:
        conns = [c for c in reader.connections if c.topic == topic]
        return [bytes(d) for _, _, d in reader.messages(conns)]


class Ros:
    """A context on this process's domain, a listener node spun in a thread, a player node."""

    def __init__(self) -> None:
        self.context = Context()
        rclpy.init(context=self.context, domain_id=DOMAIN_ID)
        self.listener = rclpy.create_node("listener", context=self.context)
        self.player_node = rclpy.create_node("player", context=self.context)
        self.player_exec = SingleThreadedExecutor(context=self.context)
        self.player_exec.add_node(self.player_node)
        self.received: dict[str, list[bytes]] = {}
        self._exec = SingleThreadedExecutor(context=self.context)
        self._exec.add_node(self.listener)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set():
            self._exec.spin_once(timeout_sec=0.05)

    def listen(self, topic: str, msgtype: str, durable: bool = False, callback=None) -> None:
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        if durable:
            qos.durability = DurabilityPolicy.TRANSIENT_LOCAL
        store = self.received.setdefault(topic, [])
        cb = callback or store.append
        self.listener.create_subscription(ros_message_class(msgtype), topic, cb, qos, raw=True)

    def wait_for(self, topic: str, count: int, timeout_s: float = 10.0) -> list[bytes]:
        deadline = time.monotonic() + timeout_s
        while len(self.received.get(topic, [])) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.received.get(topic, [])

    def spin_player(self, timeout_s: float) -> None:
        self.player_exec.spin_once(timeout_sec=timeout_s)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._exec.shutdown()
        self.player_exec.shutdown()
        self.listener.destroy_node()
        self.player_node.destroy_node()
        rclpy.try_shutdown(context=self.context)


@pytest.fixture
def ros() -> Iterator[Ros]:
    r = Ros()
    yield r
    r.close()


def test_real_time_play_reaches_a_live_subscriber_paced(ros: Ros, bag: Path) -> None:
    ros.listen(REMAP[m.IMAGE_TOPIC], m.IMAGE_TYPE)
    ros.listen(REMAP[m.GOALS_TOPIC], m.GOAL_TYPE, durable=True)
    player = BagPlayer(ros.player_node, bag, remap=REMAP, topics=[m.IMAGE_TOPIC, m.GOALS_TOPIC])
    try:
        assert player.wait_for_subscribers(10.0) == []
        stats = player.play(rate=1.0, spin=ros.spin_player)
    finally:
        player.close()
    assert stats.published == {m.GOALS_TOPIC: 1, m.IMAGE_TOPIC: FRAMES}
    # The last frame is logged FRAMES periods after the goals: real time cannot be faster.
    assert stats.wall_s >= 0.95 * FRAMES / RATE_HZ
    images = ros.wait_for(REMAP[m.IMAGE_TOPIC], FRAMES)
    assert images == bag_messages(bag, m.IMAGE_TOPIC)  # every frame, in order, byte for byte
    goals = ros.wait_for(REMAP[m.GOALS_TOPIC], 1)
    assert m.deserialize(goals[0], m.GOAL_TYPE).text == "the thing"


def test_faster_rate_plays_faster(ros: Ros, bag: Path) -> None:
    ros.listen(REMAP[m.IMAGE_TOPIC], m.IMAGE_TYPE)
    player = BagPlayer(ros.player_node, bag, remap=REMAP, topics=[m.IMAGE_TOPIC])
    try:
        assert player.wait_for_subscribers(10.0) == []
        slow = player.play(rate=0.5, spin=ros.spin_player).wall_s
    finally:
        player.close()
    player = BagPlayer(ros.player_node, bag, remap=REMAP, topics=[m.IMAGE_TOPIC])
    try:
        assert player.wait_for_subscribers(10.0) == []
        fast = player.play(rate=4.0, spin=ros.spin_player).wall_s
    finally:
        player.close()
    span = (FRAMES - 1) / RATE_HZ  # first to last image
    assert slow >= 0.95 * span / 0.5
    assert fast < slow / 2
    assert len(ros.wait_for(REMAP[m.IMAGE_TOPIC], 2 * FRAMES)) == 2 * FRAMES


def test_as_fast_as_acked_waits_for_each_answer_and_counts_drops(ros: Ros, bag: Path) -> None:
    ack_topic = f"{PREFIX}/segmentations"
    answer_cls = ros_message_class(m.SEGMENTATION_ARRAY_TYPE)
    publisher = ros.listener.create_publisher(answer_cls, ack_topic, 10)
    stamps = [
        m.stamp_to_ns(m.deserialize(d, m.IMAGE_TYPE).header.stamp)
        for d in bag_messages(bag, m.IMAGE_TOPIC)
    ]
    skipped = stamps[2]
    seen: list[int] = []

    def respond(raw: bytes) -> None:
        # A stand-in consumer that answers with the frame's header, except for one frame.
        image = ros_message_class(m.IMAGE_TYPE)
        msg = deserialize_message(raw, image)
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        seen.append(stamp)
        if stamp != skipped:
            publisher.publish(answer_cls(header=msg.header))

    ros.listen(REMAP[m.IMAGE_TOPIC], m.IMAGE_TYPE, callback=respond)
    acked: list[int] = []
    player = BagPlayer(ros.player_node, bag, remap=REMAP, topics=[m.IMAGE_TOPIC])
    try:
        assert player.wait_for_subscribers(10.0) == []
        player.subscribe_acks(ack_topic)
        stats = player.play(
            rate=None, ack_timeout=1.0, spin=ros.spin_player,
            on_ack=lambda stamp, msg, rt: acked.append(m.stamp_to_ns(msg.header.stamp)),
        )  # fmt: skip
    finally:
        player.close()
    assert seen == stamps  # nothing lost: each frame waited for the previous answer
    assert stats.frames == FRAMES and stats.acked == FRAMES - 1
    assert stats.dropped_stamps == [skipped]
    assert acked == [s for s in stamps if s != skipped]
    assert len(stats.roundtrip_s) == FRAMES - 1 and all(0 < r < 1.0 for r in stats.roundtrip_s)


def test_cli_play_subprocess(ros: Ros, bag: Path) -> None:
    ros.listen(REMAP[m.IMAGE_TOPIC], m.IMAGE_TYPE)
    ros.listen(REMAP[m.GOALS_TOPIC], m.GOAL_TYPE, durable=True)
    ros.listen(REMAP[m.GROUND_TRUTH_TOPIC], m.SEGMENTATION_ARRAY_TYPE, durable=True)
    remaps = [arg for src, dst in REMAP.items() for arg in ("--remap", f"{src}:={dst}")]
    env = {
        **os.environ,
        "ROS_DOMAIN_ID": str(DOMAIN_ID),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
    }
    done = subprocess.run(
        [sys.executable, "-m", "text4seg_ros.bag.cli", "play", str(bag), "--rate", "4", *remaps],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"{m.IMAGE_TOPIC} x{FRAMES}" in done.stdout
    assert "no subscriber" not in done.stderr
    assert ros.wait_for(REMAP[m.IMAGE_TOPIC], FRAMES) == bag_messages(bag, m.IMAGE_TOPIC)
    assert len(ros.wait_for(REMAP[m.GOALS_TOPIC], 1)) == 1
    # DDS pads a CDR payload to 4 bytes (the trailing `error` string leaves 3 bytes): compare
    # the messages rosbags reads back from the received bytes, not the raw payloads.
    gt = m.SEGMENTATION_ARRAY_TYPE
    received = ros.wait_for(REMAP[m.GROUND_TRUTH_TOPIC], FRAMES)
    truth = [m.serialize(m.deserialize(raw, gt), gt) for raw in received]
    assert truth == bag_messages(bag, m.GROUND_TRUTH_TOPIC)


def test_parse_remaps_and_bad_arguments(bag: Path) -> None:
    assert parse_remaps(["/a:=/b", "/c:=d"]) == {"/a": "/b", "/c": "d"}
    with pytest.raises(ValueError, match="FROM:=TO"):
        parse_remaps(["/a=/b"])
    with pytest.raises(ValueError, match="not installed for rclpy"):
        ros_message_class("nope_msgs/msg/Nothing")
