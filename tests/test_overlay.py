"""The one overlay renderer (CLI and node): tint, boxes, legend for label maps."""

from __future__ import annotations

import numpy as np
import pytest

from text4seg_ros.overlay import (
    LEGEND_BACKGROUND,
    PALETTE,
    TINT_ALPHA,
    Layer,
    legend_entries,
    render_overlay,
)


def _tinted(base: int, index: int) -> np.ndarray:
    rgb = np.asarray(PALETTE[index], np.float32)
    return np.rint((1 - TINT_ALPHA) * base + TINT_ALPHA * rgb).astype(np.uint8)


def test_layers_get_their_colours_and_boxes() -> None:
    image = np.full((30, 40, 3), 100, np.uint8)
    a = np.zeros((30, 40), bool)
    a[2:10, 2:10] = True
    b = np.zeros((30, 40), bool)
    b[15:25, 20:35] = True
    out = render_overlay(image, [Layer(a, 0, ((2, 2, 10, 10),), "cup"), Layer(b, 1, (), "mug")])
    assert out.shape == image.shape, "no label map: no legend by default, frame size kept"
    assert np.array_equal(out[5, 5], _tinted(100, 0)) and np.array_equal(
        out[20, 25], _tinted(100, 1)
    )
    assert np.array_equal(out[2, 5], PALETTE[0]) and np.array_equal(out[9, 9], PALETTE[0])
    assert np.array_equal(out[10, 5], image[10, 5]), "x2/y2 exclusive: row 10 is outside"
    assert np.array_equal(out[0, 0], image[0, 0])


def test_instance_boxes_cycle_colours_and_empty_boxes_are_skipped() -> None:
    image = np.zeros((20, 20, 3), np.uint8)
    mask = np.zeros((20, 20), bool)
    out = render_overlay(image, [Layer(mask, 2, ((0, 0, 5, 5), (10, 10, 15, 15), (3, 3, 3, 8)))])
    assert np.array_equal(out[0, 0], PALETTE[2]) and np.array_equal(out[10, 10], PALETTE[3])
    assert not out[5:8, 3].any(), "a zero-width box draws nothing"


def test_label_map_tints_per_class_and_adds_a_legend() -> None:
    image = np.full((40, 60, 3), 50, np.uint8)
    label_map = np.zeros((40, 60), np.int64)
    label_map[:10] = 1
    label_map[30:, 40:] = 2
    layer = Layer(label_map > 0, 0, (), "", label_map, ("others", "wall", "cup"))
    assert legend_entries([layer]) == [(PALETTE[0], "wall"), (PALETTE[1], "cup")]
    out = render_overlay(image, [layer])
    assert out.shape[0] > 40 and out.shape[1:] == (60, 3), "legend strip below the frame"
    assert np.array_equal(out[:40][5, 5], _tinted(50, 0))
    assert np.array_equal(out[:40][35, 50], _tinted(50, 1))
    assert np.array_equal(out[:40][20, 20], image[20, 20]), "class 0 (others) is not tinted"
    strip = out[40:]
    for rgb in (PALETTE[0], PALETTE[1]):  # each class's swatch is in the strip
        assert (strip == np.asarray(rgb, np.uint8)).all(axis=2).sum() >= 50
    assert (strip == np.asarray(LEGEND_BACKGROUND, np.uint8)).all(axis=2).any()
    assert (strip.max(axis=2) == 255).any(), "names are written in white"
    assert render_overlay(image, [layer], legend=False).shape == image.shape


def test_legend_wraps_into_rows_on_a_narrow_frame() -> None:
    image = np.zeros((10, 60, 3), np.uint8)
    names = ("others",) + tuple(f"class{k}" for k in range(6))
    lm = np.zeros((10, 60), np.int64)
    one_row = render_overlay(
        np.zeros((10, 2000, 3), np.uint8),
        [
            Layer(
                np.zeros((10, 2000), bool),
                label_map=np.zeros((10, 2000), np.int64),
                class_names=names,
            )
        ],
    )
    wrapped = render_overlay(image, [Layer(lm > 0, label_map=lm, class_names=names)])
    assert wrapped.shape[0] - 10 > one_row.shape[0] - 10 > 0


def test_forced_legend_and_bad_sizes() -> None:
    image = np.zeros((20, 30, 3), np.uint8)
    mask = np.zeros((20, 30), bool)
    assert render_overlay(image, [Layer(mask, label="cup")], legend=True).shape[0] > 20
    assert render_overlay(image, [Layer(mask)], legend=True).shape == image.shape, "no entries"
    with pytest.raises(ValueError, match="does not match"):
        render_overlay(image, [Layer(mask[:10])])
    with pytest.raises(ValueError, match="label map"):
        render_overlay(image, [Layer(mask, label_map=np.zeros((5, 5), np.int64))])
    with pytest.raises(ValueError, match="RGB"):
        render_overlay(image[..., 0], [])
