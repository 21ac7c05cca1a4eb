"""Training data builders on real data (../shared/data/coco_tiny16) and synthetic scenes.

The REFER / gRefCOCO refs below are OURS: coco_tiny16 ships COCO instances and class names but
no referring expressions, so we wrote a few in the official REFER layout for its real images and
annotation ids. They test the builders, not any published benchmark.
"""

from __future__ import annotations

import json
import pickle
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers import read_mask_png
from PIL import Image

from text4seg_ros.descriptors import decode_labels, labels_to_grid, mask_to_grid, parse_rrle
from text4seg_ros.descriptors.bsd import decode_instances
from text4seg_ros.descriptors.rrle import extract_body
from text4seg_ros.metrics import mask_iou
from text4seg_ros.prompts import OPEN_VOCAB_WEIGHTS
from training.data import build as build_cli
from training.data.coco import CocoInstances, build_class_queries
from training.data.instances import build_instances
from training.data.refer import build_refer, load_refs
from training.data.sample import ChatSample, clean_label, read_jsonl, write_jsonl
from training.data.semantic import build_open_vocab, open_vocab_sample, pair_folders
from training.data.synthetic import COLOURS, build_synthetic, make_scene, scene_goals

# OUR refs (see module docstring), REFER layout. Image 391895: a man on a motorcycle.
OUR_REFS = [
    {
        "ref_id": 0,
        "ann_id": 151091,
        "image_id": 391895,
        "split": "train",
        "category_id": 4,
        "file_name": "COCO_train2014_000000391895_151091.jpg",
        "sentences": [
            {"sent_id": 0, "sent": "red motorbike in front"},
            {"sent_id": 1, "sent": "the motorcycle | being ridden *"},
        ],
    },
    {
        "ref_id": 1,
        "ann_id": 202758,
        "image_id": 391895,
        "split": "val",
        "category_id": 1,
        "file_name": "COCO_train2014_000000391895_202758.jpg",
        "sentences": [{"sent_id": 2, "sent": "man riding the bike"}],
    },
]
# OUR gRefCOCO-style refs: several targets (two people) and no target.
OUR_GREFS = [
    {
        "ref_id": 10,
        "ann_id": [202758, 1260346],
        "image_id": 391895,
        "split": "train",
        "no_target": False,
        "category_id": [1, 1],
        "sentences": [{"sent_id": 10, "sent": "both people"}],
    },
    {
        "ref_id": 11,
        "ann_id": [-1],
        "image_id": 391895,
        "split": "train",
        "no_target": True,
        "category_id": [],
        "sentences": [{"sent_id": 11, "sent": "the giraffe"}],
    },
]


@pytest.fixture(scope="module")
def tiny16(data_dir: Path) -> Path:
    return data_dir / "coco_tiny16"


@pytest.fixture(scope="module")
def coco(tiny16: Path) -> CocoInstances:
    return CocoInstances.load(tiny16 / "instances_train2017_small.json", tiny16 / "images")


def test_ann_masks_match_the_derived_pngs(coco: CocoInstances, tiny16: Path) -> None:
    index = json.loads((tiny16 / "category_queries_derived.json").read_text())
    ious = []
    for pair in index:
        for inst in pair["instances"]:
            ours = coco.ann_mask(inst["ann_id"])
            derived = read_mask_png(tiny16 / inst["mask"], threshold=0)
            assert ours.shape == derived.shape
            ious.append(mask_iou(ours, derived))
    assert len(ious) == 197
    assert np.median(ious) > 0.9  # their PNGs are a supersampled rasterisation of the polygons
    crowd = coco.ann_mask(900100184613)  # the one uncompressed RLE: decoded exactly
    assert int(crowd.sum()) == 7378


def test_refer_samples_carry_the_mask_of_their_annotation(coco: CocoInstances) -> None:
    samples = list(build_refer(OUR_REFS, coco, "refcoco", splits=None, grid=16))
    assert len(samples) == 3
    first, second, third = samples
    assert first.meta["label"] == "red motorbike in front"
    assert second.meta["label"] == "the motorcycle being ridden"  # descriptor syntax removed
    assert "red motorbike in front" in first.question
    assert first.answer.startswith("Sure, here is the segmentation mask for 'red motorbike")
    grid = parse_rrle(first.answer, ["others", first.meta["label"]], 16)
    assert grid.valid
    expected = mask_to_grid(coco.ann_mask(151091), 16)
    np.testing.assert_array_equal(grid.grid.astype(bool), expected)
    assert expected.sum() > 10
    assert Path(first.image).exists()  # COCO-2014 name in the refs, 2017 file on disk
    assert third.meta["split"] == "val" and third.task == "res"
    train_only = list(build_refer(OUR_REFS, coco, "refcoco", splits=("train",)))
    assert len(train_only) == 2


def test_grefcoco_several_targets_and_no_target(coco: CocoInstances) -> None:
    both, none = build_refer(OUR_GREFS, coco, "grefcoco", splits=None, grid=16)
    assert both.task == none.task == "gres"
    union = coco.ann_mask(202758) | coco.ann_mask(1260346)
    grid = parse_rrle(both.answer, ["others", "both people"], 16).grid
    np.testing.assert_array_equal(grid.astype(bool), mask_to_grid(union, 16))
    assert none.meta["no_target"] is True
    assert extract_body(none.answer)[0] == "\n ".join(["others *16"] * 16) + "\n"


def test_refs_load_from_pickle_and_json(tmp_path: Path) -> None:
    (tmp_path / "refs(ours).p").write_bytes(pickle.dumps(OUR_REFS, protocol=2))
    (tmp_path / "grefs(ours).json").write_text(json.dumps(OUR_GREFS))
    assert load_refs(tmp_path / "refs(ours).p") == OUR_REFS
    assert load_refs(tmp_path / "grefs(ours).json") == OUR_GREFS
    (tmp_path / "bad.json").write_text(json.dumps({"refs": []}))
    with pytest.raises(ValueError, match="list of dicts"):
        load_refs(tmp_path / "bad.json")


def test_refer_rejects_unknown_dataset_and_missing_image(coco: CocoInstances) -> None:
    with pytest.raises(ValueError, match="dataset must be one of"):
        list(build_refer(OUR_REFS, coco, "refcocox"))
    bad = [{**OUR_REFS[0], "image_id": 1}]
    with pytest.raises(ValueError, match="absent from the instances JSON"):
        list(build_refer(bad, coco, "refcoco"))


def test_clean_label() -> None:
    assert clean_label("  the cup |\n on the left * ") == "the cup on the left"
    assert clean_label("others") is None
    assert clean_label(" | * ") is None
    with pytest.raises(TypeError):
        clean_label(3)  # type: ignore[arg-type]


def test_class_queries_res_for_one_instance_gres_for_several(coco: CocoInstances) -> None:
    samples = list(build_class_queries(coco, grid=16))
    assert len(samples) == 88  # the 88 (image, category) pairs of the derived index
    by_task = Counter(s.task for s in samples)
    assert by_task == {"res": 53, "gres": 35}
    for s in samples[:10]:
        union = coco.union_mask(s.meta["ann_ids"], s.meta["image_id"])
        grid = parse_rrle(s.answer, ["others", s.meta["label"]], 16).grid
        np.testing.assert_array_equal(grid.astype(bool), mask_to_grid(union, 16))


def test_area_method_keeps_more_of_small_objects(coco: CocoInstances) -> None:
    center = list(build_class_queries(coco, grid=16, method="center"))
    area = list(build_class_queries(coco, grid=16, method="area"))
    assert [s.id for s in center] == [s.id for s in area]
    differ = sum(c.answer != a.answer for c, a in zip(center, area))
    assert differ > 10


def test_open_vocab_from_label_map_pngs(coco: CocoInstances, tiny16: Path, tmp_path: Path) -> None:
    classes = build_cli.write_label_maps(coco, tmp_path / "maps")
    names = json.loads(classes.read_text())
    assert names[0] is None and len(names) == 81
    pairs = pair_folders(tiny16 / "images", tmp_path / "maps")
    assert len(pairs) == 16
    samples = list(build_open_vocab(pairs, names, grid=32, rng=random.Random(1)))
    assert 14 <= len(samples) <= 16
    for s in samples:
        label_map = np.asarray(Image.open(tmp_path / "maps" / (Path(s.image).stem + ".png")))
        h, w = label_map.shape
        x1, y1, x2, y2 = s.crop if s.crop else (0, 0, w, h)
        assert x2 - x1 == y2 - y1 == min(h, w) and 0 <= x1 and x2 <= w and 0 <= y1 and y2 <= h
        offered = ["others", *s.meta["classes"]]
        got = decode_labels(s.answer, offered, 32)
        # Recompute the expected grid independently: class name per cell, unlisted -> others.
        cells = labels_to_grid(label_map[y1:y2, x1:x2], 32, "center")
        want = np.vectorize(lambda v, o=offered: o.index(names[v]) if names[v] in o else 0)(cells)
        np.testing.assert_array_equal(got, want)
        present = {names[v] for v in np.unique(cells) if v}
        assert set(s.meta["present"]) == present
        if s.meta["kind"] == "all":
            assert set(s.meta["classes"]) == present
        if s.meta["kind"] == "candidates":
            assert present <= set(s.meta["classes"])  # all present plus distractors
        assert "|".join(s.meta["classes"]) in s.question or s.meta["kind"] == "all"


def test_open_vocab_kinds_follow_1_3_6_and_ignore_values() -> None:
    label_map = np.zeros((40, 60), dtype=np.uint8)  # 0 = sky (COCO-Stuff: value -> name)
    label_map[:20, :30] = 1
    label_map[20:, 30:] = 2
    label_map[:, 55:] = 255  # COCO-Stuff "unlabeled": background
    names = ["sky", "grass", "road"]
    rng = random.Random(0)
    kinds = Counter()
    for _ in range(1000):
        s = open_vocab_sample("x.png", label_map, names, rng, grid=8, ignore=(255,), crop=False)
        kinds[s.meta["kind"]] += 1
        assert sorted(s.meta["present"]) == ["grass", "road", "sky"]
        grid = decode_labels(s.answer, ["others", *s.meta["classes"]], 8)
        assert (grid[:, 7] == 0).all()  # the sampled column x = 56 is unlabeled
        if s.meta["kind"] == "candidates":
            assert len(s.meta["classes"]) == 3  # no absent class left in this vocabulary
    total = sum(OPEN_VOCAB_WEIGHTS.values())
    for kind, weight in OPEN_VOCAB_WEIGHTS.items():
        assert abs(kinds[kind.value] / 1000 - weight / total) < 0.05, kinds
    empty = np.full((16, 16), 255, dtype=np.uint8)
    assert open_vocab_sample("x.png", empty, names, rng, grid=8, ignore=(255,)) is None
    with pytest.raises(ValueError, match="label_map values"):
        open_vocab_sample("x.png", np.full((4, 4), 300, dtype=np.int64), names, rng, grid=2)


def test_instances_bsd_round_trip(coco: CocoInstances) -> None:
    samples = list(build_instances(coco, grid=16))
    assert len(samples) == 88
    ious = []
    for s in samples:
        size = tuple(s.meta["size"])
        decoded = decode_instances(s.answer, [s.meta["label"]], size, 16)
        assert len(decoded) == len(s.meta["ann_ids"])
        for inst, ann_id in zip(decoded, s.meta["ann_ids"]):
            ious.append(mask_iou(inst.mask, coco.ann_mask(ann_id)))
    assert np.mean(ious) > 0.75  # SPEC section 3: box-wise grids keep small shapes
    bricks = next(build_instances(coco, grid=16, bricks=True))
    assert "<bf>" in bricks.answer or "<b0>" in bricks.answer


def test_synthetic_scenes_are_deterministic_and_exact() -> None:
    a = make_scene(random.Random(3), (48, 64), (2, 4))
    b = make_scene(random.Random(3), (48, 64), (2, 4))
    np.testing.assert_array_equal(a.image, b.image)
    assert a.image.shape == (48, 64, 3) and a.image.dtype == np.uint8
    assert 2 <= len(a.objects) <= 4
    seen = np.zeros((48, 64), dtype=bool)
    for obj in a.objects:
        assert not (seen & obj.mask).any()  # visible masks never overlap
        seen |= obj.mask
        assert (a.image[obj.mask] == COLOURS[obj.colour]).all()
    goals = scene_goals(a, random.Random(0), absent=2)
    texts = [g.text for g in goals]
    assert texts[: len(a.objects)] == [o.name for o in a.objects]
    assert sum(1 for g in goals if g.task == "gres" and not g.mask.any()) == 2
    with pytest.raises(ValueError, match="size"):
        make_scene(random.Random(0), (4, 4))


def test_synthetic_builder_and_jsonl_round_trip(tmp_path: Path) -> None:
    samples = list(build_synthetic(tmp_path, n_images=3, seed=5, size=(32, 32), grid=8))
    assert len(samples) >= 3 * 3
    assert all(Path(s.image).exists() for s in samples)
    n = write_jsonl(samples, tmp_path / "s.jsonl")
    back = read_jsonl(tmp_path / "s.jsonl")
    assert n == len(back) and back[0] == samples[0]
    record = samples[0].to_json()
    assert record["conversations"][0]["value"].startswith("<image>\n")
    with pytest.raises(ValueError, match="not a chat sample"):
        ChatSample.from_json({"id": 1})
    (tmp_path / "bad.jsonl").write_text('{"id": 1}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        read_jsonl(tmp_path / "bad.jsonl")


def test_cli_builds_every_source(tiny16: Path, tmp_path: Path) -> None:
    common = ["--instances", str(tiny16 / "instances_train2017_small.json")]
    common += ["--images", str(tiny16 / "images")]
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps(OUR_REFS))
    assert (
        build_cli.main(
            [
                "refer",
                *common,
                "--refs",
                str(refs),
                "--splits",
                "all",
                "--out",
                str(tmp_path / "r.jsonl"),
            ]
        )
        == 0
    )
    assert len(read_jsonl(tmp_path / "r.jsonl")) == 3
    assert (
        build_cli.main(["instances", *common, "--bricks", "--out", str(tmp_path / "i.jsonl")]) == 0
    )
    assert build_cli.main(["labelmaps", *common, "--out-dir", str(tmp_path / "maps")]) == 0
    assert (
        build_cli.main(
            [
                "semantic",
                "--images",
                str(tiny16 / "images"),
                "--labels",
                str(tmp_path / "maps"),
                "--classes",
                str(tmp_path / "maps/classes.json"),
                "--out",
                str(tmp_path / "o.jsonl"),
                "--grid",
                "16",
            ]
        )
        == 0
    )
    assert all(s.grid == 16 for s in read_jsonl(tmp_path / "o.jsonl"))
    assert (
        build_cli.main(
            ["synthetic", "--n-images", "2", "--size", "32", "--out", str(tmp_path / "syn/s.jsonl")]
        )
        == 0
    )
