"""Segmenter and box-wise (B-SD) goals: the refiner's box prompt is the instance's decoded box;
``max_instances`` is validated and bounds every B-SD answer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from text4seg_ros.descriptors.bsd import decode_instances, encode_instances, parse_bsd
from text4seg_ros.metrics import mask_to_box
from text4seg_ros.model import segmenter as segmenter_module
from text4seg_ros.model.answers import plan_goal, read_answer
from text4seg_ros.model.segmenter import MAX_INSTANCES, Segmenter
from text4seg_ros.model.types import Goal
from text4seg_ros.prompts import Task
from text4seg_ros.refine import RefinerConfig, SamRefiner, load_refiner
from text4seg_ros.refine.tiny import build_tiny_sam

torch.set_num_threads(1)
GRID = 4
IMAGE = np.random.default_rng(2).integers(0, 255, (30, 41, 3), dtype=np.uint8)
GOALS = [Goal("cup", Task.INSTANCES), Goal("mug"), Goal("box", Task.INSTANCES)]


class BoxRecorder:
    """A refiner that keeps the coarse mask inside the box it is given and records the call."""

    def __init__(self) -> None:
        self.calls: list[tuple[np.ndarray, tuple[int, int, int, int] | None]] = []

    def refine(self, image, coarse_mask, box=None, rng=None):
        self.calls.append((coarse_mask.copy(), box))
        out = np.zeros_like(coarse_mask)
        x1, y1, x2, y2 = box if box is not None else mask_to_box(coarse_mask)
        out[y1:y2, x1:x2] = True  # the whole box: differs from the coarse mask's cells
        return out


@pytest.fixture(scope="module")
def model_dir(tiny_model_factory):
    # seed 3: the random LLaVA writes instances whose grid leaves part of its box empty, so the
    # decoded box and the coarse mask's tight box differ
    return tiny_model_factory("llava", seed=3)


@pytest.fixture(scope="module")
def coarse(model_dir):
    seg = Segmenter.from_pretrained(model_dir, grid=GRID, max_instances=3)
    seg.set_image(IMAGE)
    return seg, seg.segment(GOALS)


def test_refiner_gets_each_instances_decoded_box(model_dir, coarse):
    plain, unrefined = coarse
    refiner = BoxRecorder()
    seg = Segmenter(
        plain.model, plain.processor, "llava", grid=GRID, max_instances=3, refiner=refiner
    )
    seg.set_image(IMAGE)
    results = seg.segment(GOALS)
    h, w = IMAGE.shape[:2]
    expected = []  # (coarse mask, decoded box) of every non-empty mask, in refinement order
    for goal, res in zip(GOALS, unrefined):
        if goal.task is Task.INSTANCES:
            decoded = decode_instances(res.descriptor, [goal.text], (h, w), GRID)
            assert len(decoded) == len(res.instances)
            for inst, dec in zip(res.instances, decoded):
                assert np.array_equal(inst.mask, dec.mask)
                if inst.mask.any():
                    expected.append((inst.mask, dec.box))
        elif res.mask.any():
            expected.append((res.mask, None))  # image-wise goals: the refiner's default box
    assert len(refiner.calls) == len(expected)
    differs = 0
    for (mask, box), (got_mask, got_box) in zip(expected, refiner.calls):
        assert np.array_equal(mask, got_mask) and got_box == box
        differs += box is not None and box != mask_to_box(mask)
    assert differs > 0, "every decoded box equals its tight box: the test would not notice"
    for goal, res in zip(GOALS, results):
        if goal.task is not Task.INSTANCES:
            continue
        union = np.zeros((h, w), bool)
        for inst in res.instances:
            (one,), _ = parse_bsd(inst.descriptor, [goal.text], GRID)
            assert inst.box == mask_to_box(inst.mask)
            union |= inst.mask
        assert np.array_equal(union, res.mask) and res.box == mask_to_box(res.mask)


def test_sam_box_prompt_follows_the_decoded_box(model_dir, coarse, tmp_path):
    plain, unrefined = coarse
    sam_dir = build_tiny_sam(tmp_path / "sam", seed=1, image_size=64)
    config = RefinerConfig(prompt="box")
    refiner = load_refiner(sam_dir, config=config)
    seg = Segmenter(
        plain.model, plain.processor, "llava", grid=GRID, max_instances=3, refiner=refiner
    )
    seg.set_image(IMAGE)
    results = seg.segment(GOALS[:1])
    reference = load_refiner(sam_dir, config=config)
    assert isinstance(reference, SamRefiner)
    h, w = IMAGE.shape[:2]
    decoded = decode_instances(unrefined[0].descriptor, ["cup"], (h, w), GRID)
    assert results[0].instances and len(decoded) == len(results[0].instances)
    for inst, dec in zip(results[0].instances, decoded):
        want = reference.refine(IMAGE, dec.mask, box=dec.box)
        assert np.array_equal(inst.mask, want)


def test_max_instances_is_validated(coarse):
    plain, _ = coarse
    for bad in (0, -1, MAX_INSTANCES + 1, 2.5, True, "3", None):
        with pytest.raises(
            ValueError, match=rf"max_instances must be an int in 1\.\.{MAX_INSTANCES}"
        ):
            Segmenter(plain.model, plain.processor, "llava", grid=GRID, max_instances=bad)
    assert Segmenter(plain.model, plain.processor, "llava", max_instances=MAX_INSTANCES)


@pytest.mark.parametrize("limit", [1, 3])
def test_max_instances_bounds_every_bsd_answer(model_dir, coarse, limit):
    """The random model keeps writing instances while it may: the limit is what stops it."""
    plain, _ = coarse
    seg = Segmenter(plain.model, plain.processor, "llava", grid=GRID, max_instances=limit)
    seg.set_image(IMAGE)
    results = seg.segment(GOALS)
    counts = [len(r.instances) for g, r in zip(GOALS, results) if g.task is Task.INSTANCES]
    assert max(counts) == limit and all(c <= limit for c in counts)
    for goal, res in zip(GOALS, results):
        if goal.task is Task.INSTANCES:
            instances, repairs = parse_bsd(res.descriptor, [goal.text], GRID)
            assert not repairs and len(instances) == len(res.instances)


def test_read_answer_keeps_each_instances_box_when_triples_cannot_be_split():
    """An unreadable triple (dropped by the parser) makes the per-triple split fail: every
    instance then carries the whole answer as its text, but still its own decoded box."""
    plan = plan_goal(Goal("cup", Task.INSTANCES), 0, "bsd")
    masks = [np.zeros((30, 41), bool), np.zeros((30, 41), bool)]
    masks[0][2:12, 3:20] = True
    masks[1][15:29, 22:40] = True
    text = encode_instances(masks, "cup", GRID) + "\n<ref>cup</ref><seg>others *4</seg>"
    answer = read_answer(plan, text, (30, 41), GRID)
    decoded = decode_instances(text, ["cup"], (30, 41), GRID)
    assert len(answer.instances) == len(decoded) == 2
    for inst, dec in zip(answer.instances, decoded):
        assert inst.text == text and inst.box == dec.box
        assert inst.label == dec.label and np.array_equal(inst.mask, dec.mask)
    assert np.array_equal(answer.mask, decoded[0].mask | decoded[1].mask)


def test_refiner_gets_the_decoded_box_when_triples_cannot_be_split(coarse, monkeypatch):
    """The split fallback (``text`` = the whole answer for every instance) must not lose the
    box prompt: the refiner still gets each instance's decoded box, never None."""
    plain, _ = coarse
    real = segmenter_module.read_answer
    seen: list[str] = []

    def with_unreadable_triple(plan, text, size, grid):
        if plan.kind == "bsd":
            text += "\n<ref>cup</ref><seg>others *4</seg>"  # no box: dropped by the parser
            seen.append(text)
        return real(plan, text, size, grid)

    monkeypatch.setattr(segmenter_module, "read_answer", with_unreadable_triple)
    refiner = BoxRecorder()
    seg = Segmenter(
        plain.model, plain.processor, "llava", grid=GRID, max_instances=3, refiner=refiner
    )
    seg.set_image(IMAGE)
    results = seg.segment(GOALS[:1])
    decoded = decode_instances(seen[0], ["cup"], IMAGE.shape[:2], GRID)
    assert len(decoded) >= 2, "one instance: the old re-parse would not have lost the box"
    assert all(inst.descriptor == seen[0] for inst in results[0].instances)
    boxes = [dec.box for dec in decoded if dec.mask.any()]
    assert [box for _, box in refiner.calls] == boxes


def test_sam_refiner_gets_each_frame_once(coarse, tmp_path, monkeypatch):
    """A refiner with set_image/refine_mask is given the frame once per frame (one SAM encode,
    one hash), however many masks and segment() calls follow; a new frame is encoded again."""
    from text4seg_ros.refine import refiner as refiner_module

    plain, _ = coarse
    real = refiner_module._fingerprint
    hashes: list[int] = []
    monkeypatch.setattr(refiner_module, "_fingerprint", lambda img: hashes.append(1) or real(img))
    sam_dir = build_tiny_sam(tmp_path / "sam", seed=1, image_size=64)
    refiner = load_refiner(sam_dir, config=RefinerConfig(prompt="box"))
    seg = Segmenter(
        plain.model, plain.processor, "llava", grid=GRID, max_instances=3, refiner=refiner
    )
    seg.set_image(IMAGE)
    first = seg.segment(GOALS)
    masks = sum(bool(i.mask.any()) for r in first for i in (r.instances or [r]))
    assert masks >= 2, "one refined mask: the test would not notice a per-mask hash"
    again = seg.segment(GOALS)
    assert refiner.encodes == 1 and len(hashes) == 1
    for a, b in zip(first, again):
        assert np.array_equal(a.mask, b.mask)
    seg.set_image(IMAGE[::-1].copy())
    seg.segment(GOALS)
    assert refiner.encodes == 2 and len(hashes) == 2
