"""Prompt construction for the SAM refiner: points, boxes, the coarse mask as logit prompt."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from text4seg_ros.refine.prompts import (
    MASK_LOGIT,
    as_rng,
    low_res_shape,
    mask_logit_prompt,
    sam_box,
    sample_points,
    tight_box,
)


def _mask(h: int = 40, w: int = 60) -> np.ndarray:
    mask = np.zeros((h, w), dtype=bool)
    mask[10:25, 20:45] = True
    return mask


def test_sample_points_counts_labels_and_membership() -> None:
    mask = _mask()
    points, labels = sample_points(mask, np.random.default_rng(3), 10, 10)
    assert points.shape == (20, 2) and points.dtype == np.float32
    assert labels.tolist() == [1] * 10 + [0] * 10
    xs, ys = points[:, 0].astype(int), points[:, 1].astype(int)
    assert np.all(mask[ys[:10], xs[:10]]), "foreground points must lie inside the mask"
    assert not np.any(mask[ys[10:], xs[10:]]), "background points must lie outside the mask"
    assert len({(x, y) for x, y in zip(xs, ys)}) == 20, "points are drawn without replacement"


def test_sample_points_is_reproducible_and_seed_dependent() -> None:
    mask = _mask()
    a = sample_points(mask, np.random.default_rng(7))
    b = sample_points(mask, np.random.default_rng(7))
    c = sample_points(mask, np.random.default_rng(8))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_sample_points_takes_all_when_few_and_none_when_side_empty() -> None:
    mask = np.zeros((5, 5), dtype=bool)
    mask[2, 3] = True
    mask[4, 0] = True
    points, labels = sample_points(mask, np.random.default_rng(0), 10, 10)
    assert labels.tolist() == [1, 1] + [0] * 10
    assert {tuple(p) for p in points[:2].astype(int).tolist()} == {(3, 2), (0, 4)}
    full = np.ones((4, 4), dtype=bool)
    points, labels = sample_points(full, np.random.default_rng(0), 10, 10)
    assert labels.tolist() == [1] * 10 and points.shape == (10, 2)


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 30),
    w=st.integers(1, 30),
    seed=st.integers(0, 2**32 - 1),
    density=st.floats(0.0, 1.0),
)
def test_sample_points_property(h: int, w: int, seed: int, density: float) -> None:
    rng = np.random.default_rng(seed)
    mask = rng.random((h, w)) < density
    points, labels = sample_points(mask, rng, 10, 10)
    n_fg, n_bg = int(mask.sum()), int((~mask).sum())
    assert int((labels == 1).sum()) == min(10, n_fg)
    assert int((labels == 0).sum()) == min(10, n_bg)
    xs, ys = points[:, 0].astype(int), points[:, 1].astype(int)
    assert np.array_equal(mask[ys, xs], labels == 1)


def test_sample_points_rejects_bad_input() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(TypeError, match="bool"):
        sample_points(np.zeros((4, 4), dtype=np.uint8), rng)
    with pytest.raises(ValueError, match="2-D"):
        sample_points(np.zeros((4, 4, 1), dtype=bool), rng)
    with pytest.raises(ValueError, match="n_foreground"):
        sample_points(np.zeros((4, 4), dtype=bool), rng, -1, 10)


def test_as_rng() -> None:
    g = np.random.default_rng(1)
    assert as_rng(g, 0) is g
    assert as_rng(5, 0).integers(1 << 30) == np.random.default_rng(5).integers(1 << 30)
    assert as_rng(None, 9).integers(1 << 30) == np.random.default_rng(9).integers(1 << 30)
    with pytest.raises(TypeError, match="rng"):
        as_rng("seed", 0)


def test_tight_box_and_sam_box() -> None:
    mask = _mask()
    assert tight_box(mask) == (20, 10, 45, 25)  # x2/y2 exclusive
    assert tight_box(np.zeros((3, 3), dtype=bool)) is None
    # SAM takes inclusive corner pixels.
    assert sam_box((20, 10, 45, 25), (40, 60)).tolist() == [20.0, 10.0, 44.0, 24.0]
    with pytest.raises(ValueError, match="x1 < x2"):
        sam_box((5, 5, 5, 9), (40, 60))
    with pytest.raises(ValueError, match="x1 < x2"):
        sam_box((0, 0, 61, 10), (40, 60))
    with pytest.raises(TypeError, match="x1, y1, x2, y2"):
        sam_box((1, 2, 3), (40, 60))


def test_low_res_shape_rounds_like_sam() -> None:
    assert low_res_shape((480, 854), 256) == (144, 256)  # 480 * 256 / 854 = 143.9
    assert low_res_shape((1000, 500), 256) == (256, 128)
    assert low_res_shape((7, 7), 256) == (256, 256)


def test_mask_logit_prompt_values_and_padding() -> None:
    # Wide image: resized to 32 columns, padded at the bottom.
    mask = np.zeros((60, 90), dtype=bool)
    mask[:, :45] = True
    prompt = mask_logit_prompt(mask, 32)
    assert prompt.shape == (32, 32) and prompt.dtype == np.float32
    h2, w2 = low_res_shape((60, 90), 32)
    assert (h2, w2) == (21, 32)
    assert np.all(prompt[h2:] == 0.0), "padding (bottom) holds logit 0"
    assert np.allclose(prompt[:h2, :14], MASK_LOGIT)
    assert np.allclose(prompt[:h2, 18:], -MASK_LOGIT)
    assert abs(MASK_LOGIT - np.log(999.0)) < 1e-12
    # Tall image: padded on the right.
    tall = np.ones((90, 30), dtype=bool)
    prompt = mask_logit_prompt(tall, 32)
    assert np.allclose(prompt[:, :11], MASK_LOGIT) and np.all(prompt[:, 11:] == 0.0)


def test_mask_logit_prompt_rejects_bad_input() -> None:
    with pytest.raises(TypeError, match="bool"):
        mask_logit_prompt(np.zeros((4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="side"):
        mask_logit_prompt(np.zeros((4, 4), dtype=bool), 0)


def test_one_image_check_for_the_segmenter_and_the_refiner() -> None:
    from text4seg_ros.model import registry
    from text4seg_ros.refine import prompts

    assert registry.check_image is prompts.check_image
    view = np.zeros((8, 12, 3), np.uint8)[:, ::2]  # a strided view: not C-contiguous
    out = prompts.check_image(view)
    assert out.flags.c_contiguous and np.array_equal(out, view)
