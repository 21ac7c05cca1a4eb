"""Publish a bag's messages on live ROS 2 topics with rclpy (raw CDR bytes, no re-encoding).

Two pacings:

* real time, scaled: message ``k`` goes out ``(t_k - t_0) / rate`` seconds after the start
  (``t`` = log time); ``rate`` 2.0 plays twice as fast.
* as fast as acknowledged: after each image the player waits for the
  ``text4seg_msgs/SegmentationArray`` on the ack topic whose header stamp equals the image's,
  then sends the next one; a frame without answer within ``ack_timeout`` seconds counts as
  dropped. Nothing is lost to queue overflow, and the node's round trip is measured.

Before sending, the player waits (up to ``wait_subscribers`` seconds) until every image and goals
topic has a subscriber, because messages published before discovery completes are lost.
Publisher QoS: reliable, depth 10; goals and ground truth also transient-local (late joiners
with a transient-local subscription still get them). The ack subscription copies the
reliability of the topic's publisher so it always matches.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rclpy
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)
from rosbags.rosbag2 import Reader

from . import messages as m

# (stamp_ns, SegmentationArray decoded by messages.deserialize, round trip s)
AckCallback = Callable[[int, Any, float], None]


def ros_message_class(msgtype: str) -> type:
    """rclpy message class of ``"pkg/msg/Name"`` (the package must be installed)."""
    package, kind, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{package}.{kind}"), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"message type {msgtype} is not installed for rclpy: {exc}") from None


def parse_remaps(remaps: Iterable[str]) -> dict[str, str]:
    """``["/image:=/camera/image_raw"]`` -> ``{"/image": "/camera/image_raw"}``."""
    out = {}
    for item in remaps:
        src, sep, dst = item.partition(":=")
        if not sep or not src or not dst:
            raise ValueError(f"remap must look like FROM:=TO, got {item!r}")
        out[src] = dst
    return out


@dataclass
class PlayStats:
    """What a play run did; times in seconds."""

    published: dict[str, int] = field(default_factory=dict)  # bag topic -> messages sent
    frames: int = 0
    acked: int = 0
    dropped_stamps: list[int] = field(default_factory=list)  # image stamps without an answer
    roundtrip_s: list[float] = field(default_factory=list)
    wall_s: float = 0.0


class BagPlayer:
    """Plays ``bag`` through publishers of ``node`` (an rclpy node the caller owns and spins).

    ``topics``: bag topics to play (default all); ``remap``: bag topic -> live topic name.
    """

    def __init__(
        self,
        node: Node,
        bag: str | Path,
        *,
        topics: Iterable[str] | None = None,
        remap: dict[str, str] | None = None,
        image_topic: str = m.IMAGE_TOPIC,
    ) -> None:
        self.node = node
        self.path = Path(bag)
        self.remap = dict(remap or {})
        self.image_topic = image_topic
        self._reader = Reader(self.path)
        self._reader.open()
        wanted = None if topics is None else set(topics)
        self.connections = [
            c for c in self._reader.connections if wanted is None or c.topic in wanted
        ]
        if not self.connections:
            have = sorted({c.topic for c in self._reader.connections})
            self.close()
            raise ValueError(
                f"none of the topics {sorted(wanted or [])} is in {bag}; it has {have}"
            )
        self._publishers = {}
        for conn in self.connections:
            if conn.topic in self._publishers:
                continue
            durable = conn.topic != image_topic and conn.msgtype != m.IMAGE_TYPE
            qos = QoSProfile(
                history=HistoryPolicy.KEEP_LAST,
                depth=10,
                reliability=ReliabilityPolicy.RELIABLE,
                durability=DurabilityPolicy.TRANSIENT_LOCAL
                if durable
                else DurabilityPolicy.VOLATILE,
            )
            cls = ros_message_class(conn.msgtype)
            self._publishers[conn.topic] = node.create_publisher(cls, self.live(conn.topic), qos)
        self._acks: dict[int, tuple[Any, float]] = {}  # stamp -> (decoded answer, arrival)
        self._ack_sub = None

    def live(self, topic: str) -> str:
        """Live topic name of bag topic ``topic`` (after remapping)."""
        return self.remap.get(topic, topic)

    @property
    def frame_count(self) -> int:
        return sum(c.msgcount for c in self.connections if c.topic == self.image_topic)

    def wait_for_subscribers(
        self, timeout_s: float, topics: Iterable[str] | None = None
    ) -> list[str]:
        """Wait until each of ``topics`` (default: image and goals) has a subscriber.

        Returns the bag topics still without one when ``timeout_s`` ran out (empty: all ready).
        """
        topics = [t for t in (topics or (self.image_topic, m.GOALS_TOPIC)) if t in self._publishers]
        deadline = time.monotonic() + timeout_s
        while True:
            waiting = [t for t in topics if self._publishers[t].get_subscription_count() == 0]
            if not waiting or time.monotonic() >= deadline:
                return waiting
            time.sleep(0.02)

    def subscribe_acks(self, topic: str = m.SEGMENTATIONS_TOPIC, wait_s: float = 5.0) -> None:
        """Subscribe (raw) to the answers on ``topic``, matching its publisher's reliability.

        Waits up to ``wait_s`` for a publisher to appear so the QoS can be copied; without one,
        subscribes reliable (the node's default output QoS).
        """
        deadline = time.monotonic() + wait_s
        infos = self.node.get_publishers_info_by_topic(topic)
        while not infos and time.monotonic() < deadline:
            time.sleep(0.05)
            infos = self.node.get_publishers_info_by_topic(topic)
        reliability = ReliabilityPolicy.RELIABLE
        if infos and infos[0].qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT:
            reliability = ReliabilityPolicy.BEST_EFFORT
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50, reliability=reliability)
        cls = ros_message_class(m.SEGMENTATION_ARRAY_TYPE)
        self._ack_sub = self.node.create_subscription(cls, topic, self._on_ack, qos, raw=True)

    def _on_ack(self, data: bytes) -> None:
        # Decoded once here; the ack callback gets this message, not the bytes to decode again.
        msg = m.deserialize(data, m.SEGMENTATION_ARRAY_TYPE)
        self._acks[m.stamp_to_ns(msg.header.stamp)] = (msg, time.monotonic())

    def _wait_ack(self, stamp_ns: int, timeout_s: float, spin: Callable[[float], None]) -> bool:
        deadline = time.monotonic() + timeout_s
        while stamp_ns not in self._acks:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            spin(min(left, 0.05))
        return True

    def play(
        self,
        *,
        rate: float | None = 1.0,
        ack_timeout: float = 30.0,
        on_ack: AckCallback | None = None,
        spin: Callable[[float], None] | None = None,
        progress: bool = False,
        flush_timeout: float = 5.0,
        before_publish: Callable[[str, int], None] | None = None,
    ) -> PlayStats:
        """Publish every message once. ``rate=None``: as fast as acknowledged (call
        :meth:`subscribe_acks` first); ``spin(timeout_s)`` must process the node's callbacks
        (default: ``rclpy.spin_once`` on the node). ``on_ack(stamp_ns, answer, roundtrip_s)``
        gets each answer as a decoded ``SegmentationArray``. ``before_publish(bag_topic,
        log_time_ns)`` runs before each message goes out (e.g. to wait until the node holds a
        frame's goals). At the end it waits up to ``flush_timeout`` seconds per publisher until
        the subscribers acknowledged every message."""
        if rate is not None and not rate > 0:
            raise ValueError(f"rate must be > 0 (or None for as fast as acknowledged), got {rate}")
        if rate is None and self._ack_sub is None:
            raise RuntimeError("as-fast-as-acked play needs subscribe_acks() first")
        spin = spin or (lambda t: rclpy.spin_once(self.node, timeout_sec=t))
        stats = PlayStats(published={c.topic: 0 for c in self.connections})
        from tqdm import tqdm

        bar = tqdm(total=self.frame_count, desc="play", unit="frame", disable=not progress)
        start_wall, t0 = time.monotonic(), None
        for conn, log_ns, data in self._reader.messages(self.connections):
            t0 = log_ns if t0 is None else t0
            if rate is not None:
                delay = start_wall + (log_ns - t0) / 1e9 / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            if before_publish is not None:
                before_publish(conn.topic, log_ns)
            sent = time.monotonic()
            self._publishers[conn.topic].publish(bytes(data))
            stats.published[conn.topic] += 1
            if conn.topic != self.image_topic:
                continue
            stats.frames += 1
            bar.update(1)
            if rate is None:
                stamp = m.stamp_to_ns(m.deserialize(data, conn.msgtype).header.stamp)
                acked = self._wait_ack(stamp, ack_timeout, spin)
                # Late answers to earlier (dropped) frames are of no use any more.
                for old in [s for s in self._acks if s < stamp]:
                    del self._acks[old]
                if acked:
                    answer, received = self._acks.pop(stamp)
                    stats.acked += 1
                    stats.roundtrip_s.append(received - sent)
                    if on_ack is not None:
                        on_ack(stamp, answer, received - sent)
                else:
                    stats.dropped_stamps.append(stamp)
        bar.close()
        # Reliable samples still in flight die with their publisher: wait for the subscribers'
        # acknowledgements before anyone closes the player or exits.
        for pub in self._publishers.values():
            pub.wait_for_all_acked(Duration(seconds=flush_timeout))
        stats.wall_s = time.monotonic() - start_wall
        return stats

    def close(self) -> None:
        """Close the bag and destroy this player's publishers and ack subscription."""
        if self._reader.is_open:
            self._reader.close()
        for pub in self._publishers.values():
            self.node.destroy_publisher(pub)
        self._publishers = {}
        if self._ack_sub is not None:
            self.node.destroy_subscription(self._ack_sub)
            self._ack_sub = None
