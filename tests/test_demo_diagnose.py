"""training.demo_diagnose: which object a segmenter marks, with stand-ins whose figures are
known exactly (one that reads the goal, one that ignores it, one that answers nothing), and the
command line on the shipped demo model."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np
import pytest

from text4seg_ros.metrics import mask_to_box
from text4seg_ros.model.types import Goal, GoalResult
from training.data.tabletop import draw_tabletop, scene_seed, tabletop_goals
from training.demo_diagnose import (
    ABSENT_GROUPS,
    SETTINGS,
    absent_group,
    absent_marked,
    main,
    named_objects,
    which_object,
)

SEEDS = [scene_seed("heldout", i) for i in range(6)]
SIZE = (64, 64)


class StandIn:
    """``mode``: "reader" answers the named object's mask, "ignorer" the largest object's for
    every goal, "blind" nothing."""

    def __init__(self, mode: str, n_objects=(2, 6), scale: float = 1.0) -> None:
        self.mode = mode
        self.scenes = {}
        for seed in SEEDS:
            scene = draw_tabletop(seed, SIZE, n_objects=n_objects, scale=scale)
            self.scenes[scene.image.tobytes()] = scene

    def set_image(self, image: np.ndarray) -> None:
        self.scene = self.scenes[image.tobytes()]

    def segment(self, goals: Sequence[Goal]) -> list[GoalResult]:
        named = dict(named_objects(self.scene))
        largest = max((o.mask for o in self.scene.objects), key=np.count_nonzero)
        empty = np.zeros(SIZE, bool)
        pick = {"reader": lambda g: named[g.text], "ignorer": lambda g: largest}
        masks = [pick.get(self.mode, lambda g: empty)(g) for g in goals]
        return [GoalResult(g, m, mask_to_box(m), 1.0, "", [], 1) for g, m in zip(goals, masks)]


def _largest_is_named(n_objects, scale) -> tuple[int, int, int]:
    """(goals, goals naming the scene's largest object, scenes with two or more goals)."""
    goals = hits = multi = 0
    for seed in SEEDS:
        scene = draw_tabletop(seed, SIZE, n_objects=n_objects, scale=scale)
        named = named_objects(scene)
        largest = max(scene.objects, key=lambda o: np.count_nonzero(o.mask))
        goals += len(named)
        hits += sum(np.array_equal(m, largest.mask) for _, m in named)
        multi += len(named) >= 2
    return goals, hits, multi


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_reader_ignorer_and_blind_figures(setting) -> None:
    n_objects, scale = SETTINGS[setting]
    goals, hits, multi = _largest_is_named(n_objects, scale)
    assert goals >= 6 and multi >= 2  # the seeds exercise the diagnostic

    reader = which_object(StandIn("reader", n_objects, scale), SEEDS, SIZE, n_objects, scale)
    assert reader["goals"] == goals and reader["answered"] == 1.0
    assert reader["picked_target"] == 1.0 and reader["object_iou"] == pytest.approx(1.0)
    assert reader["identical"] == 0.0
    if setting == "two_objects":
        assert reader["chance"] == 0.5
    else:
        assert 1 / 6 <= reader["chance"] <= 0.5

    ignorer = which_object(StandIn("ignorer", n_objects, scale), SEEDS, SIZE, n_objects, scale)
    assert ignorer["identical"] == 1.0 and ignorer["object_iou"] == pytest.approx(1.0)
    assert ignorer["picked_target"] == pytest.approx(hits / goals)

    blind = which_object(StandIn("blind", n_objects, scale), SEEDS, SIZE, n_objects, scale)
    assert blind["answered"] == 0.0 and math.isnan(blind["picked_target"])
    assert blind["identical"] == 1.0  # all empty: the same answer for every goal


def test_command_line_on_the_shipped_model(tmp_path, capsys) -> None:
    out = tmp_path / "diag.json"
    assert main(["--model", "models/demo", "--scenes", "3", "--size", "64", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert sorted(report) == sorted([*SETTINGS, "absent"])
    printed = dict(line.split(" ", 1) for line in capsys.readouterr().out.splitlines())
    for name, r in report.items():
        assert json.loads(printed[name]) == {k: round(v, 3) for k, v in r.items()}
        if name != "absent":
            assert r["goals"] >= 3 and 0.0 <= r["answered"] <= 1.0
    absent = report["absent"]
    assert absent["goals"] == sum(absent[f"{g}_goals"] for g in ABSENT_GROUPS) >= 3
    assert 0.0 <= absent["marked"] <= 1.0


class WordReader:
    """Marks every object that one word of the goal names (``"colour"``: the goal's colour
    word, ``"kind"``: its kind or plural), or every object (``"all"``)."""

    def __init__(self, word: str) -> None:
        self.word = word
        self.scenes = {}
        for seed in SEEDS:
            scene = draw_tabletop(seed, SIZE)
            self.scenes[scene.image.tobytes()] = scene

    def set_image(self, image: np.ndarray) -> None:
        self.scene = self.scenes[image.tobytes()]

    def segment(self, goals: Sequence[Goal]) -> list[GoalResult]:
        out = []
        for g in goals:
            words = g.text.split()
            mask = np.zeros(SIZE, bool)
            for o in self.scene.objects:
                if (
                    self.word == "all"
                    or (self.word == "colour" and o.colour in words)
                    or (self.word == "kind" and (o.kind in words or o.kind + "s" in words))
                ):
                    mask |= o.mask
            out.append(GoalResult(g, mask, mask_to_box(mask), 1.0, "", [], 1))
        return out


def test_absent_goals_grouped_by_the_words_that_name_something() -> None:
    scene = draw_tabletop(SEEDS[0], SIZE)
    (o, *_) = scene.objects
    colours = {x.colour for x in scene.objects}
    kinds = {x.kind for x in scene.objects}
    other_kind = next(k for k in ("mug", "block", "ball", "bottle", "plate") if k not in kinds)
    other_colour = next(c for c in ("red", "green", "blue", "yellow", "purple", "orange")
                        if c not in colours)  # fmt: skip
    assert absent_group(f"{o.colour} {other_kind}", scene) == "colour_present"
    assert absent_group(f"{other_colour} {o.kind}", scene) == "kind_present"
    assert absent_group(f"{other_colour} {other_kind}", scene) == "neither_present"
    assert absent_group(f"{other_kind}s", scene) == "kind_group"
    assert absent_group(f"{other_colour} objects", scene) == "colour_group"
    for present in (f"{o.colour} {o.kind}", f"{o.kind}s", f"{o.colour} objects", "teapots"):
        with pytest.raises(ValueError):
            absent_group(present, scene)
    # every absent goal the generator writes has a group
    for seed in SEEDS:
        s = draw_tabletop(seed, SIZE)
        for g in tabletop_goals(s, seed, absent=6):
            if g.kind == "gres_absent":
                assert absent_group(g.text, s) in ABSENT_GROUPS


def test_absent_figures_show_which_word_a_model_checks() -> None:
    colour = absent_marked(WordReader("colour"), SEEDS, SIZE)
    kind = absent_marked(WordReader("kind"), SEEDS, SIZE)
    everything = absent_marked(WordReader("all"), SEEDS, SIZE)
    assert colour["goals"] == kind["goals"] == everything["goals"] >= 20
    n = {g: colour[f"{g}_goals"] for g in ABSENT_GROUPS}
    assert n["colour_present"] and n["neither_present"]  # the seeds exercise the groups
    for name, want in (
        (colour, {"both_present", "colour_present"}),
        (kind, {"both_present", "kind_present"}),
        (everything, set(ABSENT_GROUPS)),
    ):
        for g in ABSENT_GROUPS:
            if n[g]:
                assert name[g] == (1.0 if g in want else 0.0), (g, name)
            else:
                assert math.isnan(name[g])
