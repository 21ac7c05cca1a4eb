"""Grid geometry: PIL-exact centre sampling, area vote, integer nearest upsampling, boxes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from text4seg_ros.descriptors.geometry import (
    grid_to_labels,
    grid_to_mask,
    labels_to_grid,
    mask_to_box,
    mask_to_grid,
    sample_indices,
)


def pil_nearest_columns(width: int, grid: int) -> np.ndarray:
    """Source column of each grid column according to PIL itself (the official data's resize)."""
    row = Image.fromarray(np.arange(width, dtype=np.int32)[None, :], mode="I")
    return np.asarray(row.resize((grid, 1), Image.NEAREST))[0].astype(np.int64)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 5000), st.integers(8, 64))
def test_sample_indices_match_pil_nearest(length: int, grid: int) -> None:
    np.testing.assert_array_equal(sample_indices(length, grid), pil_nearest_columns(length, grid))


def test_accumulated_sampling_differs_from_closed_form_where_pil_does() -> None:
    # SPEC 1: floor((c + 0.5) * W / G) differs from PIL's accumulated sum for a few % of sizes
    # (none for G a power of two, where every step is exact in binary).
    closed = np.floor((np.arange(24) + 0.5)[None, :] * np.arange(1, 3000)[:, None] / 24)
    differing = [
        w for w in range(1, 3000) if not np.array_equal(closed[w - 1], sample_indices(w, 24))
    ]
    assert 0.01 < len(differing) / 3000 < 0.10
    for w in differing[:20]:
        np.testing.assert_array_equal(sample_indices(w, 24), pil_nearest_columns(w, 24))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300), st.integers(1, 300), st.integers(8, 64), st.integers(0, 2**32 - 1))
def test_center_grid_equals_pil_resize_of_mask(h: int, w: int, grid: int, seed: int) -> None:
    mask = np.random.default_rng(seed).random((h, w)) < 0.5
    expected = (
        np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((grid, grid), Image.NEAREST))
        > 0
    )
    np.testing.assert_array_equal(mask_to_grid(mask, grid), expected)


@pytest.mark.parametrize("size", [(1, 1), (7, 3), (480, 854), (3000, 4000), (31, 1000)])
@pytest.mark.parametrize("grid", [8, 16, 24, 64])
def test_upsampling_is_exact_integer_nearest(size: tuple[int, int], grid: int) -> None:
    cells = np.arange(grid * grid).reshape(grid, grid)
    h, w = size
    ys = np.array([0, h // 3, h // 2, h - 1])
    xs = np.array([0, w // 3, w // 2, w - 1])
    up = grid_to_labels(cells, size)
    for y in ys:
        for x in xs:
            assert up[y, x] == cells[(y * grid) // h, (x * grid) // w]
    if h * w <= 480 * 854:  # every pixel against the closed form (images smaller than the grid
        # included: cells no pixel falls in are skipped)
        rows = (np.arange(h) * grid) // h
        cols = (np.arange(w) * grid) // w
        np.testing.assert_array_equal(up, cells[rows[:, None], cols[None, :]])
    assert up.dtype == cells.dtype
    assert grid_to_mask(cells > grid * grid // 2, size).shape == size


def test_area_vote_takes_majority_and_centre_does_not() -> None:
    mask = np.zeros((32, 32), bool)
    mask[0:2, 0:2] = True  # cell (0, 0) of a 16 grid owns rows 0..1, cols 0..1
    mask[1, 1] = False  # 3 of 4 pixels set; the centre sample is pixel (1, 1)
    assert not mask_to_grid(mask, 16, "center")[0, 0]
    assert mask_to_grid(mask, 16, "area")[0, 0]
    mask[0, 1] = False  # 2 of 4: a tie goes to others
    assert not mask_to_grid(mask, 16, "area")[0, 0]


def test_area_vote_multiclass_and_small_images_fall_back_to_centre() -> None:
    labels = np.array([[2, 2, 1], [2, 0, 1]])  # columns 0-1 form grid column 0, column 2 column 1
    grid = labels_to_grid(labels, 2, "area")
    np.testing.assert_array_equal(grid, [[2, 1], [0, 1]])  # the 2-vs-0 tie in row 1 goes to 0
    tiny = np.array([[1]])
    np.testing.assert_array_equal(labels_to_grid(tiny, 16, "area"), np.ones((16, 16), int))


def test_mask_to_box_edges_and_empty() -> None:
    mask = np.zeros((10, 20), bool)
    assert mask_to_box(mask) is None
    mask[2:5, 7:9] = True
    assert mask_to_box(mask) == (7, 2, 9, 5)
    assert mask_to_box(np.ones((3, 4), bool)) == (0, 0, 4, 3)
    assert mask_to_box(mask.astype(np.uint8) * 255) == (7, 2, 9, 5)  # non-bool: nonzero is set


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: mask_to_grid(np.zeros((4, 4), bool), 0), ValueError),
        (lambda: mask_to_grid(np.zeros((4, 4), bool), 16.0), TypeError),
        (lambda: mask_to_grid(np.zeros((4, 4), bool), 16, "bilinear"), ValueError),
        (lambda: mask_to_grid(np.zeros((0, 4), bool), 16), ValueError),
        (lambda: mask_to_grid([[1, 0]], 16), TypeError),
        (lambda: grid_to_mask(np.zeros((4, 4)), (0, 5)), ValueError),
        (lambda: grid_to_mask(np.zeros((4, 4)), (5,)), TypeError),
    ],
)
def test_bad_arguments_raise_with_clear_type(call, error) -> None:
    with pytest.raises(error):
        call()
