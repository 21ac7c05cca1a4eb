"""Typestore of our interface packages; image <-> numpy conversion (bag.messages)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from text4seg_ros.bag import messages as m

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["Goal", "Segmentation", "SegmentationArray"])
def test_type_hashes_equal_the_built_interface_package(name: str) -> None:
    # rosidl writes the RIHS01 hash rclpy uses into share/<pkg>/msg/<Name>.json; a player only
    # talks to real nodes if rosbags computes the same one.
    built = Path(sys.prefix) / "share" / "text4seg_msgs" / "msg" / f"{name}.json"
    if not built.is_file():
        pytest.skip(f"interface package not built into {sys.prefix} (run make setup)")
    expected = json.loads(built.read_text())["type_hashes"][0]["hash_string"]
    assert m.typestore().hash_rihs01(f"text4seg_msgs/msg/{name}") == expected


def test_vision_msgs_subset_is_registered() -> None:
    cls = m.msg_class("vision_msgs/msg/Detection2DArray")
    msg = cls(header=m.header(5, "camera"), detections=[])
    back = m.deserialize(
        m.serialize(msg, "vision_msgs/msg/Detection2DArray"), "vision_msgs/msg/Detection2DArray"
    )
    assert back.header.frame_id == "camera" and back.header.stamp.nanosec == 5


def test_rgb_round_trip_and_header() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (7, 11, 3), dtype=np.uint8)
    stamp = 1_700_000_000_123_456_789
    msg = m.rgb_to_image(rgb, stamp, "cam")
    assert (msg.encoding, msg.step, msg.height, msg.width) == ("rgb8", 33, 7, 11)
    back = m.deserialize(m.serialize(msg, m.IMAGE_TYPE), m.IMAGE_TYPE)
    assert m.stamp_to_ns(back.header.stamp) == stamp
    assert back.header.frame_id == "cam"
    np.testing.assert_array_equal(m.image_to_rgb(back), rgb)


def _image(encoding: str, pixels: np.ndarray, pad: int = 0) -> object:
    h, w = pixels.shape[:2]
    rows = pixels.reshape(h, -1)
    padded = np.concatenate([rows, np.full((h, pad), 77, np.uint8)], axis=1)
    return m.msg_class(m.IMAGE_TYPE)(
        header=m.header(0, "c"),
        height=h,
        width=w,
        encoding=encoding,
        is_bigendian=0,
        step=padded.shape[1],
        data=padded.reshape(-1),
    )


def test_bgr_bgra_mono_and_row_padding() -> None:
    rgb = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    np.testing.assert_array_equal(m.image_to_rgb(_image("bgr8", rgb[:, :, ::-1], pad=3)), rgb)
    bgra = np.concatenate([rgb[:, :, ::-1], np.full((4, 5, 1), 9, np.uint8)], axis=2)
    np.testing.assert_array_equal(m.image_to_rgb(_image("bgra8", bgra)), rgb)
    mono = rgb[:, :, 0]
    out = m.image_to_rgb(_image("mono8", mono[:, :, None], pad=2))
    assert out.shape == (4, 5, 3) and (out == mono[:, :, None]).all()


def test_mask_round_trip() -> None:
    mask = np.zeros((6, 9), bool)
    mask[2:4, 3:8] = True
    msg = m.mask_to_image(mask, 10, "camera")
    assert msg.encoding == "mono8" and set(np.unique(msg.data)) == {0, 255}
    np.testing.assert_array_equal(m.image_to_mask(msg), mask)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"encoding": "32FC1"}, "unsupported image encoding"),
        ({"step": 10}, "step 10 is shorter than one row"),
        ({"width": 0}, "zero size"),
        ({"height": 9}, r"step 15 x height 9 = 135 expected"),
    ],
)
def test_bad_images_raise_clear_errors(change: dict, message: str) -> None:
    msg = m.rgb_to_image(np.zeros((4, 5, 3), np.uint8), 0, "c")
    for key, value in change.items():
        setattr(msg, key, value)
    with pytest.raises(ValueError, match=message):
        m.image_to_rgb(msg)


def test_rgb_to_image_rejects_wrong_arrays() -> None:
    with pytest.raises(TypeError, match="uint8"):
        m.rgb_to_image(np.zeros((4, 5, 3), np.float32), 0, "c")
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        m.rgb_to_image(np.zeros((4, 5), np.uint8), 0, "c")
    with pytest.raises(ValueError, match="a mask image must be mono8"):
        m.image_to_mask(m.rgb_to_image(np.zeros((4, 5, 3), np.uint8), 0, "c"))
    with pytest.raises(ValueError, match="stamp_ns"):
        m.header(-1, "c")
