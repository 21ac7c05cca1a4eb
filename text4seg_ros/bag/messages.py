"""Message types of our bags (rosbags typestore) and image <-> numpy conversion, without rclpy.

The typestore is ROS 2 Jazzy's plus our interface packages (``text4seg_msgs`` and the 2D subset of
``vision_msgs``), registered from their ``.msg`` text. rosbags then writes the same CDR bytes and
RIHS01 type hashes as rclpy, so the bytes in a bag can be published unchanged by the player.

Images are ``sensor_msgs/Image``; :func:`image_to_rgb` accepts what the node accepts
(:data:`text4seg_ros.ros.image.ENCODINGS`, row padding via ``step``); masks are ``mono8``
(nonzero = target).
"""

from __future__ import annotations

import os
import sys
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from ..ros import image as ros_image

# Topics of a text4seg bag (absolute names; the node's relative names resolve to these in the
# root namespace; ``play --remap`` moves them).
IMAGE_TOPIC = "/image"
GOALS_TOPIC = "/goals"
GROUND_TRUTH_TOPIC = "/ground_truth/segmentations"
SEGMENTATIONS_TOPIC = "/segmentations"

IMAGE_TYPE = "sensor_msgs/msg/Image"
GOAL_TYPE = "text4seg_msgs/msg/Goal"
SEGMENTATION_TYPE = "text4seg_msgs/msg/Segmentation"
SEGMENTATION_ARRAY_TYPE = "text4seg_msgs/msg/SegmentationArray"

INTERFACE_PACKAGES = ("text4seg_msgs", "vision_msgs")


def _msg_dirs(package: str) -> list[Path]:
    """Candidate folders holding ``package``'s ``.msg`` files: source tree first, then prefixes."""
    dirs = [Path(__file__).resolve().parents[2] / "msg" / package / "msg"]
    prefixes = [sys.prefix, *os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)]
    dirs += [Path(p) / "share" / package / "msg" for p in prefixes if p]
    return dirs


@cache
def typestore() -> Typestore:
    """The Jazzy typestore with ``text4seg_msgs`` and ``vision_msgs`` registered (cached)."""
    store = get_typestore(Stores.ROS2_JAZZY)
    types: dict[str, Any] = {}
    for package in INTERFACE_PACKAGES:
        folder = next((d for d in _msg_dirs(package) if any(d.glob("*.msg"))), None)
        if folder is None:
            searched = ", ".join(str(d) for d in _msg_dirs(package))
            raise FileNotFoundError(f"no .msg files of {package} found; searched {searched}")
        for path in sorted(folder.glob("*.msg")):
            types.update(get_types_from_msg(path.read_text(), f"{package}/msg/{path.stem}"))
    store.register(types)
    return store


def msg_class(msgtype: str) -> type:
    """The rosbags dataclass of ``msgtype`` (e.g. ``"sensor_msgs/msg/Image"``)."""
    return typestore().types[msgtype]


def serialize(message: object, msgtype: str) -> bytes:
    """CDR bytes of ``message`` exactly as rclpy would publish them."""
    return bytes(typestore().serialize_cdr(message, msgtype))


def deserialize(data: bytes | memoryview, msgtype: str) -> Any:
    """A rosbags message object from CDR bytes."""
    return typestore().deserialize_cdr(data, msgtype)


def header(stamp_ns: int, frame_id: str) -> Any:
    """``std_msgs/Header`` with ``stamp_ns`` (nanoseconds since the epoch) and ``frame_id``."""
    if stamp_ns < 0:
        raise ValueError(f"stamp_ns must be >= 0, got {stamp_ns}")
    time_cls = msg_class("builtin_interfaces/msg/Time")
    stamp = time_cls(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)
    return msg_class("std_msgs/msg/Header")(stamp=stamp, frame_id=frame_id)


def stamp_to_ns(stamp: Any) -> int:
    """Nanoseconds of a ``builtin_interfaces/Time`` (rosbags or rclpy object)."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def rgb_to_image(rgb: np.ndarray, stamp_ns: int, frame_id: str) -> Any:
    """``sensor_msgs/Image`` (``rgb8``, no padding) from an ``(H, W, 3)`` ``uint8`` array."""
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8:
        raise TypeError(f"rgb must be a uint8 numpy array, got {type(rgb).__name__}")
    if rgb.ndim != 3 or rgb.shape[2] != 3 or 0 in rgb.shape:
        raise ValueError(f"rgb must have shape (H, W, 3) with H, W > 0, got {rgb.shape}")
    height, width = rgb.shape[:2]
    return msg_class(IMAGE_TYPE)(
        header=header(stamp_ns, frame_id),
        height=height,
        width=width,
        encoding="rgb8",
        is_bigendian=0,
        step=width * 3,
        data=np.ascontiguousarray(rgb).reshape(-1),
    )


def mask_to_image(mask: np.ndarray, stamp_ns: int, frame_id: str) -> Any:
    """``sensor_msgs/Image`` ``mono8`` (255 = target, 0 = background) from an ``(H, W)`` mask."""
    if not isinstance(mask, np.ndarray) or mask.ndim != 2 or 0 in mask.shape:
        raise ValueError(f"mask must be a non-empty (H, W) numpy array, got {mask!r:.80}")
    height, width = mask.shape
    data = np.where(mask != 0, 255, 0).astype(np.uint8).reshape(-1)
    return msg_class(IMAGE_TYPE)(
        header=header(stamp_ns, frame_id),
        height=height,
        width=width,
        encoding="mono8",
        is_bigendian=0,
        step=width,
        data=data,
    )


def labels_to_image(labels: np.ndarray, stamp_ns: int, frame_id: str) -> Any:
    """``sensor_msgs/Image`` ``mono8`` whose pixels are the class indices of an ``(H, W)``
    ``uint8`` label map (0 = others), the node's open-vocabulary answer format."""
    if not isinstance(labels, np.ndarray) or labels.ndim != 2 or labels.dtype != np.uint8:
        raise ValueError(f"labels must be an (H, W) uint8 numpy array, got {labels!r:.80}")
    image = mask_to_image(labels, stamp_ns, frame_id)
    image.data = np.ascontiguousarray(labels).reshape(-1)
    return image


def image_to_labels(image: Any) -> np.ndarray:
    """``(H, W)`` ``uint8`` values of a ``mono8`` ``sensor_msgs/Image`` (label maps)."""
    if str(image.encoding).lower() != "mono8":
        raise ValueError(f"a label image must be mono8, got {image.encoding!r}")
    return np.asarray(ros_image.image_to_array(image, max_pixels=None), dtype=np.uint8)


def image_to_rgb(image: Any) -> np.ndarray:
    """``(H, W, 3)`` ``uint8`` RGB array from a ``sensor_msgs/Image`` (see module docstring).

    The node's own conversion (:func:`text4seg_ros.ros.image.image_to_rgb`), which reads only
    the message's fields, so rosbags messages work as they are; no pixel limit here.
    """
    return ros_image.image_to_rgb(image, max_pixels=None)


def image_to_mask(image: Any) -> np.ndarray:
    """``(H, W)`` bool mask (nonzero = target) from a ``mono8`` ``sensor_msgs/Image``."""
    if str(image.encoding).lower() != "mono8":
        raise ValueError(f"a mask image must be mono8, got {image.encoding!r}")
    return ros_image.image_to_array(image, max_pixels=None) != 0
