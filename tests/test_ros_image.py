"""sensor_msgs/Image and CompressedImage <-> numpy (text4seg_ros.ros.image)."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("sensor_msgs")

from PIL import Image as PILImage  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from text4seg_ros.ros.image import (  # noqa: E402
    ENCODINGS,
    ImageError,
    array_to_image,
    compressed_to_rgb,
    image_to_array,
    image_to_rgb,
)


def raw(pixels: np.ndarray, encoding: str, pad: int = 0, big_endian: bool = False) -> Image:
    """An Image message built by hand (independent of array_to_image): rows padded by ``pad``."""
    h, w = pixels.shape[:2]
    wire = pixels.astype(pixels.dtype.newbyteorder(">" if big_endian else "<"))
    rows = wire.reshape(h, -1).view(np.uint8).reshape(h, -1)
    data = np.zeros((h, rows.shape[1] + pad), np.uint8)
    data[:, : rows.shape[1]] = rows
    return Image(
        height=h, width=w, encoding=encoding, is_bigendian=big_endian, step=data.shape[1],
        data=data.tobytes(),
    )  # fmt: skip


RGB = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10


@pytest.mark.parametrize(
    ("encoding", "pixels", "expected"),
    [
        ("rgb8", RGB, RGB),
        ("bgr8", RGB[:, :, ::-1].copy(), RGB),
        ("rgba8", np.dstack([RGB, np.full((2, 3), 7, np.uint8)]), RGB),
        ("bgra8", np.dstack([RGB[:, :, ::-1], np.full((2, 3), 7, np.uint8)]), RGB),
        ("mono8", RGB[:, :, 0].copy(), np.repeat(RGB[:, :, :1], 3, axis=2)),
        (
            "16UC1",
            RGB[:, :, 0].astype(np.uint16) * 256 + 5,
            np.repeat(RGB[:, :, :1], 3, axis=2),
        ),
    ],
)
@pytest.mark.parametrize("pad", [0, 5])
def test_every_encoding_converts_to_rgb_with_padding_and_byte_order(
    encoding, pixels, expected, pad
):
    pad = pad * pixels.dtype.itemsize  # 16-bit rows stay aligned to their pixel size
    orders = [False, True] if pixels.dtype.itemsize > 1 else [False]
    for big_endian in orders:
        msg = raw(pixels, encoding, pad, big_endian)
        assert np.array_equal(image_to_array(msg), pixels)
        rgb = image_to_rgb(msg)
        assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
        assert np.array_equal(rgb, expected)


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    encoding=st.sampled_from(sorted(ENCODINGS)),
    seed=st.integers(0, 2**16),
)
def test_array_to_image_round_trips(h, w, encoding, seed):
    channels, dtype = ENCODINGS[encoding]
    shape = (h, w) if channels == 1 else (h, w, channels)
    pixels = np.random.default_rng(seed).integers(0, np.iinfo(dtype).max, shape).astype(dtype)
    header = Header(frame_id="cam")
    msg = array_to_image(pixels, encoding, header)
    assert msg.header.frame_id == "cam" and msg.step == w * channels * dtype.itemsize
    back = image_to_array(msg)
    assert back.dtype == dtype and np.array_equal(back, pixels)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (dict(encoding="yuv422"), "unsupported image encoding 'yuv422'; supported: rgb8"),
        (dict(step=3 * 4 - 1), "step 11 is shorter than one row"),
        (dict(height=0), "zero size"),
        (dict(width=0), "zero size"),
        (dict(data=bytes(5)), "data holds 5 bytes"),
    ],
)
def test_bad_messages_raise_image_error_saying_what_is_wrong(change, match):
    msg = raw(np.zeros((2, 4, 3), np.uint8), "rgb8")
    for key, value in change.items():
        setattr(msg, key, value)
    with pytest.raises(ImageError, match=match):
        image_to_rgb(msg)


def test_max_pixels_refuses_an_8k_frame_before_reading_data():
    msg = Image(height=4320, width=7680, encoding="rgb8", step=7680 * 3)  # no data needed
    with pytest.raises(ImageError, match="exceeds max_image_pixels 8294400"):
        image_to_rgb(msg)
    assert ImageError.__mro__[1] is ValueError


def test_odd_step_for_16_bit_is_refused():
    msg = raw(np.zeros((2, 2), np.uint16), "16UC1", pad=1)
    with pytest.raises(ImageError, match="not a multiple"):
        image_to_array(msg)


def test_array_to_image_checks_shape_and_dtype():
    with pytest.raises(ImageError, match=r"\(H, W, 3\)"):
        array_to_image(np.zeros((2, 2), np.uint8), "rgb8")
    with pytest.raises(TypeError, match="uint8"):
        array_to_image(np.zeros((2, 2, 3), np.float32), "rgb8")
    with pytest.raises(TypeError, match="numpy array"):
        array_to_image([[0]], "mono8")


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_compressed_images_decode_to_rgb(fmt):
    rgb = np.zeros((16, 24, 3), np.uint8)
    rgb[4:12, 6:18] = (200, 30, 40)
    buf = io.BytesIO()
    PILImage.fromarray(rgb).save(buf, format=fmt)
    out = compressed_to_rgb(CompressedImage(format=fmt, data=buf.getvalue()))
    assert out.shape == (16, 24, 3) and out.dtype == np.uint8
    if fmt == "png":
        assert np.array_equal(out, rgb)
    else:  # lossy: colours hold away from the block edges
        assert np.abs(out[6:10, 9:15].astype(int) - (200, 30, 40)).max() <= 30
        assert np.abs(out.astype(int) - rgb).mean() < 10
    with pytest.raises(ImageError, match="exceeds max_image_pixels"):
        compressed_to_rgb(CompressedImage(format=fmt, data=buf.getvalue()), max_pixels=100)


def test_compressed_garbage_and_empty_are_refused():
    with pytest.raises(ImageError, match="cannot decode"):
        compressed_to_rgb(CompressedImage(format="jpeg", data=b"not an image"))
    with pytest.raises(ImageError, match="no data"):
        compressed_to_rgb(CompressedImage(format="jpeg"))


def test_vga_conversion_is_fast():
    pixels = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    msg = array_to_image(pixels[:, :, ::-1].copy(), "bgr8")
    start = time.perf_counter()
    for _ in range(20):
        out = image_to_rgb(msg)
    per_frame = (time.perf_counter() - start) / 20
    assert np.array_equal(out, pixels)
    assert per_frame < 0.02, f"{per_frame * 1e3:.2f} ms per 640 x 480 frame"
