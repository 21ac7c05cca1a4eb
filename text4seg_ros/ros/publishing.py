"""The node's result outputs: ``segmentations``, ``detections``, ``mask`` and ``overlay``.

:class:`ResultPublisher` owns the four lifecycle publishers (created on configure, destroyed on
cleanup) and turns one frame's outcomes into messages (:mod:`.messages`), all stamped with the
camera frame's header. An outcome is a goal's ``GoalResult`` or the exception that failed that
goal alone: a failed goal gets an *error result*, a ``Segmentation`` with ``error`` set and an
empty mask, so a client waiting for its goal learns it failed; the other goals are answered as
usual. Called on the inference thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rclpy.qos import QoSProfile
from sensor_msgs.msg import Image
from text4seg_msgs.msg import SegmentationArray
from vision_msgs.msg import Detection2DArray

from ..model.types import GoalResult
from . import messages
from .goals import ActiveGoal
from .params import NodeConfig

TOPICS = (
    ("segmentations", SegmentationArray),
    ("detections", Detection2DArray),
    ("mask", Image),
    ("overlay", Image),
)


@dataclass(frozen=True)
class Published:
    """What one frame's publication did: goals answered, goals that failed (with the reason)."""

    answered: list[ActiveGoal]
    failed: list[tuple[ActiveGoal, str]]


def error_text(exc: BaseException) -> str:
    """One line naming a goal's failure: ``"<ExceptionType>: <message>"`` (max 300 chars)."""
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= 300 else text[:297] + "..."


class ResultPublisher:
    """The four result publishers of a configured node (``node``: a ``LifecycleNode``)."""

    def __init__(self, node, qos: QoSProfile) -> None:
        self._node = node
        self._pubs = {
            topic: node.create_lifecycle_publisher(kind, topic, qos) for topic, kind in TOPICS
        }

    def destroy(self) -> None:
        """Destroy the publishers (cleanup)."""
        for pub in self._pubs.values():
            self._node.destroy_lifecycle_publisher(pub)
        self._pubs = {}

    def publish(
        self,
        header,
        rgb,
        active: Sequence[ActiveGoal],
        outcomes: Sequence[GoalResult | BaseException],
        latency_s: float,
        cfg: NodeConfig,
    ) -> Published:
        """Publish one frame's answers; ``rgb`` is the ``(H, W, 3)`` uint8 frame they answer."""
        shape = rgb.shape[:2]
        items: list[messages.Answer] = []
        answered, failed = [], []
        for entry, outcome in zip(active, outcomes):
            if isinstance(outcome, BaseException):
                reason = error_text(outcome)
                failed.append((entry, reason))
                items.append(messages.error_answer(entry, reason, shape))
                continue
            answered.append(entry)
            items += messages.answers(entry, outcome, cfg.min_mask_pixels)
        pubs = self._pubs
        pubs["segmentations"].publish(messages.segmentation_array(header, items, latency_s))
        pubs["detections"].publish(messages.detection_array(header, items, cfg.score_threshold))
        pubs["mask"].publish(messages.mask_image(header, items, shape, cfg.mask_mode))
        if cfg.publish_overlay:
            pubs["overlay"].publish(messages.overlay_image(header, rgb, items))
        return Published(answered, failed)
