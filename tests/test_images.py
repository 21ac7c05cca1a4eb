"""One pixel rule for the node and the CLI (text4seg_ros.images): 16-bit scaled, floats refused."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from text4seg_ros.images import ImageError, decode_image, gray_to_rgb, to_uint8


def _png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def _rgb48_png(pixels: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one), ``pixels`` (H, W, 3) uint16."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    h, w, _ = pixels.shape
    rows = b"".join(b"\0" + pixels[y].astype(">u2").tobytes() for y in range(h))
    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def test_16_bit_grey_is_scaled_by_its_high_byte_not_clipped():
    values = np.array([[0, 0x00FF, 0x0100, 0x8000], [0x80FF, 0xFF00, 0xFFFF, 1000]], np.uint16)
    expected = (values >> 8).astype(np.uint8)  # 0, 0, 1, 128 / 128, 255, 255, 3
    assert np.array_equal(to_uint8(values), expected)
    out = decode_image(_png_bytes(values))
    assert out.shape == (2, 4, 3) and out.dtype == np.uint8
    assert np.array_equal(out, np.repeat(expected[:, :, None], 3, axis=2))
    # Pillow's own convert("RGB") clips every value above 255 to white: the bug this replaces.
    clipped = np.asarray(Image.open(io.BytesIO(_png_bytes(values))).convert("RGB"))
    assert (clipped == 255).sum() > (out == 255).sum()


def test_48_bit_rgb_png_reads_its_high_bytes():
    pixels = np.array([[[0x8000, 0x0100, 0xFFFF], [0, 0x7FFF, 0x4000]]], np.uint16)
    assert np.array_equal(decode_image(_rgb48_png(pixels)), (pixels >> 8).astype(np.uint8))


def test_float_and_out_of_range_pixels_are_refused():
    with pytest.raises(ImageError, match="floating-point pixels"):
        to_uint8(np.zeros((2, 2), np.float32), "depth")
    buf = io.BytesIO()
    Image.fromarray(np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)).save(buf, "TIFF")
    with pytest.raises(ImageError, match=r"my\.tiff has floating-point pixels"):
        decode_image(buf.getvalue(), what="my.tiff")
    with pytest.raises(ImageError, match="outside the 16-bit range"):
        to_uint8(np.array([[0, 70000]], np.int32))
    with pytest.raises(ImageError, match="outside the 16-bit range"):
        to_uint8(np.array([[-1, 5]], np.int32))
    # 32-bit ints within 0..65535 (Pillow's "I" mode of a 16-bit file) count as 16-bit
    assert to_uint8(np.array([[0x8000]], np.int32)).tolist() == [[128]]
    assert gray_to_rgb(np.full((1, 2), 7, np.uint8)).shape == (1, 2, 3)


def test_size_is_checked_before_decoding_and_garbage_is_refused():
    data = _png_bytes(np.zeros((20, 30, 3), np.uint8))
    with pytest.raises(ImageError, match="exceeds max_image_pixels 100"):
        decode_image(data, max_pixels=100)
    assert decode_image(data, max_pixels=600).shape == (20, 30, 3)
    with pytest.raises(ImageError, match="cannot decode frame"):
        decode_image(b"not an image", what="frame")


def test_node_uses_the_same_rule_for_compressed_and_mono16_frames():
    from sensor_msgs.msg import CompressedImage

    from text4seg_ros import images
    from text4seg_ros.ros import image as ros_image

    assert ros_image.ImageError is images.ImageError
    values = np.array([[0x8000, 0xFFFF, 0x0100]], np.uint16)
    msg = CompressedImage(format="png", data=_png_bytes(values))
    expected = np.repeat((values >> 8).astype(np.uint8)[:, :, None], 3, axis=2)
    assert np.array_equal(ros_image.compressed_to_rgb(msg), expected)
    raw = ros_image.array_to_image(values, "mono16")
    assert np.array_equal(ros_image.image_to_rgb(raw), expected)
