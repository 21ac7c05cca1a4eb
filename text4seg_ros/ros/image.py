"""``sensor_msgs/Image`` and ``CompressedImage`` <-> numpy, without cv_bridge.

Supported raw encodings (ROS ``sensor_msgs/image_encodings`` names):

==========  ========  =====  ==========================================
encoding    channels  dtype  ``image_to_rgb`` conversion
==========  ========  =====  ==========================================
rgb8        3         uint8  as is
bgr8        3         uint8  channels reversed
rgba8       4         uint8  alpha dropped
bgra8       4         uint8  alpha dropped, channels reversed
mono8       1         uint8  grey replicated to 3 channels
mono16      1         uint16 high byte (``v >> 8``), replicated
16UC1       1         uint16 same as mono16 (depth in mm is not a camera image, but decodes)
==========  ========  =====  ==========================================

Rows may be padded: ``step`` is the row length in bytes and must be at least
``width * channels * itemsize``; padding bytes are ignored. ``is_bigendian`` applies to 16-bit
encodings. Every problem raises :class:`ImageError` (a ``ValueError``) saying what was wrong and
what is allowed; the node turns it into a counted rejection.
"""

from __future__ import annotations

import array
import sys

import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

# One pixel rule for the node and the CLI (16-bit scaled, floats refused): the core's.
from ..images import (  # noqa: F401  (re-exported: the node's names)
    DEFAULT_MAX_PIXELS,
    ImageError,
    check_size,
    decode_image,
    gray_to_rgb,
)

# encoding -> (channels, numpy dtype)
ENCODINGS: dict[str, tuple[int, np.dtype]] = {
    "rgb8": (3, np.dtype(np.uint8)),
    "bgr8": (3, np.dtype(np.uint8)),
    "rgba8": (4, np.dtype(np.uint8)),
    "bgra8": (4, np.dtype(np.uint8)),
    "mono8": (1, np.dtype(np.uint8)),
    "8UC1": (1, np.dtype(np.uint8)),
    "mono16": (1, np.dtype(np.uint16)),
    "16UC1": (1, np.dtype(np.uint16)),
}


def image_to_array(msg: Image, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Pixels of a raw image message as a new array in the message's own encoding.

    Returns ``(H, W)`` for 1-channel encodings, else ``(H, W, C)``; dtype from
    :data:`ENCODINGS` in native byte order; row padding removed.
    """
    encoding = msg.encoding
    if encoding not in ENCODINGS:
        allowed = ", ".join(ENCODINGS)
        raise ImageError(f"unsupported image encoding {encoding!r}; supported: {allowed}")
    channels, dtype = ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    check_size(height, width, max_pixels)
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ImageError(
            f"step {step} is shorter than one row of {width} px x {channels} ch x "
            f"{dtype.itemsize} B = {row_bytes} B ({encoding})"
        )
    if dtype.itemsize > 1 and step % dtype.itemsize:
        raise ImageError(f"step {step} is not a multiple of the {dtype.itemsize}-byte pixel size")
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    if buf.size != step * height:
        raise ImageError(
            f"data holds {buf.size} bytes; step {step} x height {height} = {step * height} expected"
        )
    rows = buf.reshape(height, step)[:, :row_bytes]
    wire = dtype.newbyteorder(">" if msg.is_bigendian else "<")
    pixels = np.ascontiguousarray(rows).view(wire).astype(dtype, copy=True)
    return (
        pixels.reshape(height, width) if channels == 1 else pixels.reshape(height, width, channels)
    )


def array_to_rgb(pixels: np.ndarray, encoding: str) -> np.ndarray:
    """Pixels in ``encoding`` (from :func:`image_to_array`) as ``(H, W, 3)`` uint8 RGB."""
    if encoding == "rgb8":
        return pixels
    if encoding == "bgr8":
        return np.ascontiguousarray(pixels[:, :, ::-1])
    if encoding == "rgba8":
        return np.ascontiguousarray(pixels[:, :, :3])
    if encoding == "bgra8":
        return np.ascontiguousarray(pixels[:, :, 2::-1])
    if encoding in ("mono8", "8UC1"):
        return np.repeat(pixels[:, :, None], 3, axis=2)
    if encoding in ("mono16", "16UC1"):
        return gray_to_rgb(pixels, f"{encoding} image")
    raise ImageError(f"unsupported image encoding {encoding!r}; supported: {', '.join(ENCODINGS)}")


def image_to_rgb(msg: Image, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A raw image message as an ``(H, W, 3)`` uint8 RGB array (the Segmenter's input)."""
    return array_to_rgb(image_to_array(msg, max_pixels), msg.encoding)


def compressed_to_rgb(
    msg: CompressedImage, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """A ``CompressedImage`` (JPEG or PNG, decoded with Pillow) as ``(H, W, 3)`` uint8 RGB.

    The size is checked from the file header before the pixels are decoded, so a huge image is
    refused without allocating it; a 16-bit PNG is scaled like ``mono16``, a float TIFF refused
    (:func:`text4seg_ros.images.decode_image`).
    """
    data = bytes(msg.data)
    if not data:
        raise ImageError("compressed image holds no data")
    return decode_image(data, max_pixels, f"compressed image (format {msg.format!r})")


def array_to_image(pixels: np.ndarray, encoding: str, header: Header | None = None) -> Image:
    """Build a raw image message from ``pixels`` (no row padding, native byte order).

    ``pixels`` is ``(H, W)`` for 1-channel encodings or ``(H, W, C)`` with C from
    :data:`ENCODINGS`; its dtype must match the encoding.
    """
    if encoding not in ENCODINGS:
        raise ImageError(
            f"unsupported image encoding {encoding!r}; supported: {', '.join(ENCODINGS)}"
        )
    channels, dtype = ENCODINGS[encoding]
    if not isinstance(pixels, np.ndarray):
        raise TypeError(f"pixels must be a numpy array, got {type(pixels).__name__}")
    expected_ndim = 2 if channels == 1 else 3
    if pixels.ndim != expected_ndim or (channels > 1 and pixels.shape[2] != channels):
        raise ImageError(
            f"{encoding} needs shape {'(H, W)' if channels == 1 else f'(H, W, {channels})'}, "
            f"got {pixels.shape}"
        )
    if pixels.dtype != dtype:
        raise TypeError(f"{encoding} needs dtype {dtype}, got {pixels.dtype}")
    height, width = pixels.shape[:2]
    check_size(height, width, None)
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width, msg.encoding = height, width, encoding
    msg.is_bigendian = sys.byteorder == "big" and dtype.itemsize > 1
    msg.step = width * channels * dtype.itemsize
    msg.data = array.array("B", np.ascontiguousarray(pixels).tobytes())
    return msg
