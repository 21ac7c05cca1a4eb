"""The node's camera subscription: ``image`` or ``image/compressed``, into the worker's mailbox.

Created on activate, destroyed on deactivate. The callback only counts and enqueues: the frame
is converted on the inference thread, and only if the worker takes it with a goal active
(:mod:`.worker`). Runs on the executor thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.qos import QoSProfile
from sensor_msgs.msg import CompressedImage, Image

from .diagnostics import ImageFlowMonitor, NodeStats
from .image import compressed_to_rgb, image_to_rgb
from .params import NodeConfig
from .worker import Frame, InferenceWorker


class CameraInput:
    """Camera frames of ``node`` to ``worker()``: counted in ``stats``, watched by ``flow``."""

    def __init__(
        self,
        node: Any,
        stats: NodeStats,
        flow: ImageFlowMonitor,
        worker: Callable[[], InferenceWorker | None],
    ) -> None:
        self.node, self.stats, self.flow, self.worker = node, stats, flow, worker
        self.sub = None
        self._last_seq: int | None = None

    def subscribe(self, cfg: NodeConfig, qos: QoSProfile, events: SubscriptionEventCallbacks):
        """Subscribe ``image`` (or ``image/compressed`` when ``cfg.compressed``)."""
        self._last_seq = None
        if cfg.compressed:
            kind, topic, callback = CompressedImage, "image/compressed", self.on_compressed
        else:
            kind, topic, callback = Image, "image", self.on_image
        self.sub = self.node.create_subscription(kind, topic, callback, qos, event_callbacks=events)
        self.flow.start(time.monotonic())

    def unsubscribe(self) -> None:
        """Destroy the subscription (no-op when not subscribed)."""
        if self.sub is not None:
            self.node.destroy_subscription(self.sub)
            self.sub = None
        self.flow.stop()

    def on_image(self, msg: Image, info: dict) -> None:
        """A raw frame: converted later by :func:`.image.image_to_rgb`."""
        self._count_missed(info)
        limit = self.node.config.max_image_pixels  # live: read when the frame is converted
        self._enqueue(msg.header, lambda: image_to_rgb(msg, limit))

    def on_compressed(self, msg: CompressedImage, info: dict) -> None:
        """A JPEG/PNG frame: converted later by :func:`.image.compressed_to_rgb`."""
        self._count_missed(info)
        limit = self.node.config.max_image_pixels
        self._enqueue(msg.header, lambda: compressed_to_rgb(msg, limit))

    def _count_missed(self, info: dict) -> None:
        """Count frames that never reached the callback: gaps in the publication sequence.

        With sensor-data QoS (best effort, depth 1) DDS replaces a frame not yet taken by a
        newer one; those are dropped before the node sees them. Exact for one camera publisher;
        a sequence going back (another publisher, a restarted camera) only resets the count.
        """
        seq = info.get("publication_sequence_number") if isinstance(info, dict) else None
        if not seq:
            return
        last, self._last_seq = self._last_seq, seq
        if last is not None and seq > last + 1:
            self.stats.add("frames_missed", seq - last - 1)

    def _enqueue(self, header, convert: Callable) -> None:
        """Hand the frame to the worker; it converts it (``convert``) only if it takes it."""
        received = time.monotonic()
        self.flow.frame(received)
        self.stats.add("frames_received")
        worker = self.worker()
        if worker is None:
            return
        if worker.submit(Frame(None, header, received, decode=convert)):
            self.stats.add("frames_dropped")
