"""GrabCut refiner: coarse grid masks sharpened from the frame alone (no weights)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from text4seg_ros.descriptors.geometry import grid_to_mask, mask_to_grid
from text4seg_ros.refine import GrabCutConfig, GrabCutRefiner, Refiner


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def _scene(h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A red disc on a textured grey-brown table with a lighting gradient: (image, disc mask)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    table = np.stack([150 + 30 * xx / w, 120 + 20 * yy / h, 90 + 0 * xx], -1)
    image = table + rng.normal(0, 6, (h, w, 3))
    disc = (yy - 0.45 * h) ** 2 + (xx - 0.55 * w) ** 2 < (0.2 * min(h, w)) ** 2
    image[disc] = (200, 40, 40) + rng.normal(0, 6, (int(disc.sum()), 3))
    return np.clip(image, 0, 255).astype(np.uint8), disc


def _coarse(mask: np.ndarray, grid: int) -> np.ndarray:
    """The mask as a G x G answer would give it: area vote per cell, upsampled to the frame."""
    return grid_to_mask(mask_to_grid(mask, grid, method="area"), mask.shape)


@pytest.mark.parametrize("size", [(128, 128), (96, 160)])
def test_a_coarse_grid_mask_is_sharpened_to_the_object(size) -> None:
    image, disc = _scene(*size)
    coarse = _coarse(disc, 8)
    refiner = GrabCutRefiner(8)
    refined = refiner.refine(image, coarse)
    assert refined.shape == disc.shape and refined.dtype == bool
    assert _iou(coarse, disc) < 0.85  # the grid's own error, which the cut removes
    assert _iou(refined, disc) > 0.95
    assert (refiner.refined, refiner.kept) == (1, 0)
    assert isinstance(refiner, Refiner)


def test_the_cut_stays_within_the_band_around_the_coarse_mask() -> None:
    """A second red disc far from the coarse mask is not added: beyond the band is background."""
    image, disc = _scene(128, 128)
    yy, xx = np.mgrid[0:128, 0:128]
    other = (yy - 110) ** 2 + (xx - 15) ** 2 < 12**2
    image[other] = (200, 40, 40)
    coarse = _coarse(disc, 8)
    refined = GrabCutRefiner(8, GrabCutConfig(band=0.5)).refine(image, coarse)
    assert not (refined & other).any()
    # Half a cell of 16 px: nothing further than 8 px (+1 for the ellipse's rounding) outside.
    ys, xs = np.nonzero(refined & ~coarse)
    cy, cx = np.nonzero(coarse)
    gap = min(np.hypot(cy - y, cx - x).min() for y, x in zip(ys[::7], xs[::7]))
    assert gap <= 9


def test_empty_full_and_featureless_masks_come_back_unchanged() -> None:
    refiner = GrabCutRefiner(8)
    image, disc = _scene(64, 64)
    empty = np.zeros((64, 64), bool)
    full = np.ones((64, 64), bool)
    for mask in (empty, full):
        out = refiner.refine(image, mask)
        assert np.array_equal(out, mask) and out is not mask
    assert (refiner.refined, refiner.kept) == (0, 0)  # nothing to cut: not counted
    flat = np.full((64, 64, 3), 120, np.uint8)  # one colour: the cut keeps nothing
    square = np.zeros((64, 64), bool)
    square[16:40, 16:40] = True
    assert np.array_equal(refiner.refine(flat, square), square)
    assert refiner.kept == 1


def test_the_same_frame_and_mask_refine_the_same_way() -> None:
    image, disc = _scene(128, 128, seed=3)
    coarse = _coarse(disc, 8)
    first = GrabCutRefiner(8).refine(image, coarse)
    again = GrabCutRefiner(8)
    np.random.default_rng(1).random(5)
    assert np.array_equal(first, again.refine(image, coarse))
    assert np.array_equal(first, again.refine(image, coarse))


def test_large_frames_are_cut_at_reduced_size_and_returned_at_full_size() -> None:
    image, disc = _scene(480, 640)
    coarse = _coarse(disc, 16)
    refiner = GrabCutRefiner(16, GrabCutConfig(max_side=160))
    refined = refiner.refine(image, coarse)
    assert refined.shape == (480, 640)
    assert _iou(refined, disc) > max(0.93, _iou(coarse, disc))


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"band": 0}, ValueError),
        ({"band": 5}, ValueError),
        ({"band": True}, TypeError),
        ({"iterations": 0}, ValueError),
        ({"max_side": 8}, ValueError),
        ({"seed": -1}, ValueError),
    ],
)
def test_bad_config_is_refused(kwargs, error) -> None:
    with pytest.raises(error):
        GrabCutConfig(**kwargs)


def test_bad_grid_and_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="grid"):
        GrabCutRefiner(0)
    with pytest.raises(TypeError, match="GrabCutConfig"):
        GrabCutRefiner(8, config={"band": 1})  # type: ignore[arg-type]
    image, disc = _scene(64, 64)
    with pytest.raises(ValueError):
        GrabCutRefiner(8).refine(image, disc[:32])  # mask of another size
    with pytest.raises(ValueError):
        GrabCutRefiner(8).refine(image[:, :, 0], disc)  # not RGB


DEMO = Path(__file__).resolve().parents[1] / "models" / "demo"


@pytest.mark.skipif(
    not (DEMO / "model.safetensors").is_file(), reason="models/demo has no model.safetensors"
)
def test_segmenter_refiner_auto_cuts_each_answer_at_the_models_grid() -> None:
    """``refiner="auto"`` builds the refiner the demo model names (grabcut) for its grid (8) and
    applies it to every answered mask: the unrefined answer cut by a standalone refiner."""
    from text4seg_ros.model.segmenter import Segmenter
    from text4seg_ros.model.types import Goal
    from training.data.tabletop import draw_tabletop, scene_seed, tabletop_goals

    seed = scene_seed("heldout", 3)
    scene = draw_tabletop(seed, (128, 128))
    goals = [Goal(g.text, g.task) for g in tabletop_goals(scene, seed) if g.kind.startswith("res_")]
    plain = Segmenter.from_pretrained(DEMO)  # no refiner unless asked for
    refined = Segmenter.from_pretrained(DEMO, refiner="auto")  # the model names grabcut
    assert plain.refiner is None
    assert isinstance(refined.refiner, GrabCutRefiner) and refined.refiner.grid == 8
    for seg in (plain, refined):
        seg.set_image(scene.image)
    coarse, cut = plain.segment(goals), refined.segment(goals)
    assert any(r.mask.any() for r in coarse)
    standalone = GrabCutRefiner(8)
    for before, after in zip(coarse, cut):
        assert before.descriptor == after.descriptor  # the same answer, only the mask is cut
        assert np.array_equal(after.mask, standalone.refine(scene.image, before.mask))
        assert after.timings.refine_s > 0.0
    assert refined.refiner.refined >= 1


def test_auto_is_none_for_a_model_that_names_no_refiner(tmp_path) -> None:
    from text4seg_ros.model.meta import write_meta
    from text4seg_ros.model.segmenter import Segmenter
    from text4seg_ros.model.tiny import build_tiny_model

    model = build_tiny_model("llava", tmp_path / "tiny", grid=4)
    write_meta(model, grid=4)
    assert Segmenter.from_pretrained(model, refiner="auto").refiner is None
    seg = Segmenter.from_pretrained(model, refiner="grabcut")
    assert isinstance(seg.refiner, GrabCutRefiner) and seg.refiner.grid == 4
