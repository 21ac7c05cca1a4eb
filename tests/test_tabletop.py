"""Tabletop scenes and goals (training/data/tabletop.py): exact masks, correct relations,
determinism by seed, empty absent targets, and samples that decode back to the goal masks."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from text4seg_ros.descriptors import OTHERS, decode_labels, decode_mask, labels_to_grid
from text4seg_ros.descriptors.bsd import decode_instances
from text4seg_ros.descriptors.geometry import mask_to_box, mask_to_grid
from text4seg_ros.prompts import Task
from training.data.build import main as build_main
from training.data.sample import read_jsonl
from training.data.synthetic import COLOURS
from training.data.tabletop import (
    GOAL_KINDS,
    HELDOUT_BASE,
    KINDS,
    PLURALS,
    RELATION_MARGIN,
    RELATIONS,
    SIZES,
    TableObject,
    draw_tabletop,
    relation_holds,
    scene_seed,
    tabletop_goals,
)
from training.data.tabletop_samples import build_tabletop

SIZE = (96, 96)


def _fit_residual(pixels: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """Per pixel: how far it is from a scaled copy of ``rgb`` (channels clipped at 255 ignored)."""
    free = pixels < 255
    scale = np.where(free, pixels * rgb, 0).sum(1) / np.where(free, rgb * rgb, 0).sum(1)
    return np.where(free, np.abs(pixels - scale[:, None] * rgb), 0).max(1)


def _scenes(n: int = 25, size: tuple[int, int] = SIZE):
    return [(seed, draw_tabletop(seed, size)) for seed in range(n)]


def test_scenes_are_deterministic_by_seed_and_differ_across_seeds() -> None:
    a, b = draw_tabletop(7, SIZE), draw_tabletop(7, SIZE)
    assert np.array_equal(a.image, b.image) and a.seed == 7
    assert [(o.name, o.size) for o in a.objects] == [(o.name, o.size) for o in b.objects]
    ga, gb = tabletop_goals(a, 7), tabletop_goals(b, 7)
    assert [(g.text, g.task, g.kind) for g in ga] == [(g.text, g.task, g.kind) for g in gb]
    assert all(np.array_equal(x.mask, y.mask) for x, y in zip(ga, gb))
    assert not np.array_equal(a.image, draw_tabletop(8, SIZE).image)
    # A caller's random.Random draws the same scene as its seed.
    assert np.array_equal(draw_tabletop(random.Random(7), SIZE).image, a.image)


def test_scene_content_matches_the_vocabulary() -> None:
    counts = []
    for _, scene in _scenes():
        assert scene.image.shape == (*SIZE, 3) and scene.image.dtype == np.uint8
        counts.append(len(scene.objects))
        triples = [(o.kind, o.colour, o.size) for o in scene.objects]
        assert len(set(triples)) == len(triples)  # no two identical objects
        for o in scene.objects:
            assert o.kind in KINDS and o.colour in COLOURS and o.size in SIZES
    assert min(counts) >= 2 and max(counts) <= 6 and len(set(counts)) >= 3


def test_masks_are_exact_visible_pixels() -> None:
    occluded = 0
    for _, scene in _scenes():
        img = scene.image.astype(np.float64)
        union = np.zeros(SIZE, dtype=bool)
        for o in scene.objects:
            assert o.mask.dtype == bool and o.mask.any()
            assert not (union & o.mask).any()  # visible masks never overlap
            union |= o.mask
            assert o.box == mask_to_box(o.mask)
        for o in scene.objects:
            rgb = np.array(COLOURS[o.colour], dtype=np.float64)
            # Every mask pixel is the object's colour under some shading (exact rendering)...
            assert _fit_residual(img[o.mask], rgb).max() <= 1.5
            # ...and the table pixels bordering the mask are not: the mask misses no pixel.
            m = o.mask
            ring = m.copy()
            ring[1:] |= m[:-1]
            ring[:-1] |= m[1:]
            ring[:, 1:] |= m[:, :-1]
            ring[:, :-1] |= m[:, 1:]
            ring &= ~union
            if ring.any():
                assert (_fit_residual(img[ring], rgb) <= 2).mean() < 0.05
            # The full shape's centroid lies near the visible part (at least half is visible).
            x1, y1, x2, y2 = o.box
            occluded += not (x1 - 1 <= o.centre[0] <= x2 and y1 - 1 <= o.centre[1] <= y2)
    assert occluded <= 3


def test_relation_holds_on_centroids_with_a_margin() -> None:
    m = np.zeros(SIZE, dtype=bool)

    def obj(x: float, y: float) -> TableObject:
        return TableObject("ball", "red", "small", m, (0, 0, 1, 1), (x, y))

    left, right = obj(20, 50), obj(60, 50)
    assert relation_holds(left, right, "left of", SIZE)
    assert relation_holds(right, left, "right of", SIZE)
    assert not relation_holds(left, right, "right of", SIZE)
    assert not relation_holds(left, right, "above", SIZE)
    near = obj(60 - RELATION_MARGIN * SIZE[1] / 2, 50)
    assert not relation_holds(near, right, "left of", SIZE)  # inside the margin
    assert relation_holds(obj(50, 10), obj(50, 70), "above", SIZE)
    assert relation_holds(obj(50, 70), obj(50, 10), "below", SIZE)
    with pytest.raises(ValueError, match="relation"):
        relation_holds(left, right, "behind", SIZE)


def _parse_spatial(text: str) -> tuple[str, str, str]:
    for rel in RELATIONS:
        marker = f" {rel} the "
        if marker in text:
            kind, ref = text.split(marker)
            return kind, rel, ref
    raise AssertionError(f"no relation in {text!r}")


def test_goals_have_the_right_targets() -> None:
    seen = set()
    for seed, scene in _scenes(40):
        objs = scene.objects
        names = [o.name for o in objs]
        for g in tabletop_goals(scene, seed):
            seen.add(g.kind)
            assert g.kind in GOAL_KINDS and g.mask.shape == SIZE
            if g.kind == "res_attr" or g.kind == "rec":
                assert g.task is (Task.RES if g.kind == "res_attr" else Task.REC)
                (o,) = [o for o in objs if o.name == g.text]
                assert np.array_equal(g.mask, o.mask) and g.box == o.box
            elif g.kind == "res_size":
                size, name = g.text.split(" ", 1)
                assert names.count(name) == 2
                (o,) = [o for o in objs if o.name == name and o.size == size]
                assert np.array_equal(g.mask, o.mask)
            elif g.kind == "res_spatial":
                kind, rel, ref_name = _parse_spatial(g.text)
                (ref,) = [o for o in objs if o.name == ref_name]
                hits = [
                    o for o in objs
                    if o.kind == kind and o is not ref and relation_holds(o, ref, rel, SIZE)
                ]  # fmt: skip
                assert len(hits) == 1 and np.array_equal(g.mask, hits[0].mask)
            elif g.kind in ("gres_multi", "gres_single"):
                assert g.task is Task.GRES
                members = [
                    o for o in objs
                    if g.text in (f"{o.colour} objects", PLURALS[o.kind])
                ]  # fmt: skip
                assert len(members) == (1 if g.kind == "gres_single" else len(members))
                assert (len(members) >= 2) == (g.kind == "gres_multi")
                union = np.zeros(SIZE, dtype=bool)
                for o in members:
                    union |= o.mask
                assert np.array_equal(g.mask, union)
            elif g.kind == "gres_absent":
                assert g.task is Task.GRES and not g.mask.any()
                assert all(g.text not in (o.name, f"{o.colour} objects", PLURALS[o.kind])
                           for o in objs)  # fmt: skip
            elif g.kind == "openvocab":
                assert g.task is Task.OPEN_VOCAB and set(g.classes) >= {o.kind for o in objs}
                for o in objs:
                    assert (g.label_map[o.mask] == g.classes.index(o.kind) + 1).all()
                assert np.array_equal(g.label_map > 0, g.mask)
            else:
                assert g.kind == "instances" and g.task is Task.INSTANCES
                members = [o for o in objs if o.kind == g.text]
                assert len(g.instances) == len(members)
                boxes = [mask_to_box(m) for m in g.instances]
                assert boxes == sorted(boxes, key=lambda b: (b[1], b[0]))  # reading order
    assert seen == set(GOAL_KINDS)


def test_held_out_seeds_never_meet_training_seeds() -> None:
    assert scene_seed("train", 5) == 5
    assert scene_seed("heldout", 5) == HELDOUT_BASE + 5
    assert scene_seed("train", HELDOUT_BASE - 1) < scene_seed("heldout", 0)
    with pytest.raises(ValueError, match="split"):
        scene_seed("test", 0)
    with pytest.raises(ValueError, match="index"):
        scene_seed("train", HELDOUT_BASE)


def test_samples_decode_back_to_the_goal_grids(tmp_path: Path) -> None:
    grid = 8
    samples = list(build_tabletop(tmp_path, 6, first=3, size=(64, 64), grid=grid))
    assert {s.meta["kind"] for s in samples} >= {"res_attr", "gres_absent", "openvocab"}
    by_seed = {}
    for s in samples:
        seed = s.meta["seed"]
        if seed not in by_seed:
            scene = draw_tabletop(seed, (64, 64))
            goals = tabletop_goals(scene, seed)
            by_seed[seed] = {(g.text or "|".join(g.classes), g.task.value): g for g in goals}
        g = by_seed[seed][(s.meta["label"], s.task)]
        assert Path(s.image).exists()
        body = s.answer[s.answer.index("\n") + 1 :]
        if g.task is Task.OPEN_VOCAB:
            cells = decode_labels(body, [OTHERS, *g.classes], grid)
            expect = labels_to_grid(g.label_map, grid, "area", num_classes=len(g.classes) + 1)
            assert np.array_equal(cells, expect)
        elif g.task is Task.INSTANCES:
            masks = [m.mask for m in decode_instances(body, [g.text], (64, 64), grid)]
            assert len(masks) == len(g.instances)
        else:
            decoded = decode_mask(body, g.text, (64, 64), grid)
            assert decoded.any() == mask_to_grid(g.mask, grid, "area").any()
            if g.kind == "gres_absent":
                assert not decoded.any()


def test_build_cli_writes_kind_weighted_samples(tmp_path: Path) -> None:
    out = tmp_path / "d.jsonl"
    argv = ["tabletop", "--n-images", "5", "--size", "48", "--grid", "8", "--out", str(out)]
    assert build_main([*argv, "--goals-per-scene", "2", "--weights", "openvocab=0"]) == 0
    samples = read_jsonl(out)
    assert len(samples) == 10 and all(s.meta["kind"] != "openvocab" for s in samples)
    assert json.loads(out.read_text().splitlines()[0])["meta"]["dataset"] == "tabletop"
    heldout = tmp_path / "h.jsonl"
    assert build_main([*argv[:-1], str(heldout), "--split", "heldout"]) == 0
    assert all(s.meta["seed"] >= HELDOUT_BASE for s in read_jsonl(heldout))


def test_scale_enlarges_objects_and_keeps_them_in_the_frame() -> None:
    area = {s: [draw_tabletop(i, SIZE, (1, 1), scale=s).objects[0].mask.sum() for i in range(8)]
            for s in (1.0, 2.0)}  # fmt: skip
    assert all(big > 2.5 * small for small, big in zip(area[1.0], area[2.0]))
    for i in range(8):
        (o,) = draw_tabletop(i, SIZE, (1, 1), scale=2.0).objects
        assert o.box[2] <= SIZE[1] and o.box[3] <= SIZE[0]


def _absent_texts(hard_absent: float, n: int = 120) -> tuple[list[str], int]:
    """The absent-target texts of ``n`` two-or-three-object scenes, and how many of them are
    hard (their colour is in the scene, or a kind plural)."""
    texts, hard = [], 0
    for seed in range(n):
        scene = draw_tabletop(seed, SIZE, (2, 3))
        colours = {o.colour for o in scene.objects}
        names = {o.name for o in scene.objects} | {PLURALS[o.kind] for o in scene.objects}
        for g in tabletop_goals(scene, seed, hard_absent=hard_absent):
            if g.kind == "gres_absent":
                assert g.text not in names and not g.mask.any()
                texts.append(g.text)
                hard += g.text in PLURALS.values() or g.text.split(" ")[0] in colours
    return texts, hard


def test_hard_absent_draws_goals_only_the_kind_rules_out() -> None:
    plain, plain_hard = _absent_texts(0.0)
    assert 0.2 < plain_hard / len(plain) < 0.45  # as drawn for the held-out scenes
    texts, hard = _absent_texts(1.0)
    assert len(texts) == len(plain) and hard == len(texts)
    mixed, mixed_hard = _absent_texts(0.8)
    assert 0.7 < mixed_hard / len(mixed) < 0.9
    # The default is the draw every model was trained on: the same goals, text for text.
    scene = draw_tabletop(3, SIZE)
    assert [g.text for g in tabletop_goals(scene, 3)] == [
        g.text for g in tabletop_goals(scene, 3, hard_absent=0.0)
    ]
    with pytest.raises(ValueError, match=r"hard_absent must be in \[0, 1\]"):
        tabletop_goals(scene, 3, hard_absent=1.5)


def test_build_cli_passes_hard_absent(tmp_path: Path) -> None:
    out = tmp_path / "d.jsonl"
    argv = ["tabletop", "--n-images", "30", "--size", "48", "--grid", "8", "--objects", "2,3"]
    argv += ["--weights", ",".join(f"{k}={int(k == 'gres_absent')}" for k in GOAL_KINDS)]
    assert build_main([*argv, "--hard-absent", "1", "--out", str(out)]) == 0
    samples = read_jsonl(out)
    assert len(samples) == 60 and all(s.meta["kind"] == "gres_absent" for s in samples)
    with pytest.raises(SystemExit, match="--hard-absent must be in 0..1"):
        build_main([*argv, "--hard-absent", "2", "--out", str(out)])
    for s in samples:  # the label each answer quotes: hard for the scene it was drawn on
        colours = {o.colour for o in draw_tabletop(s.meta["seed"], (48, 48), (2, 3)).objects}
        assert s.meta["label"] in PLURALS.values() or s.meta["label"].split(" ")[0] in colours
