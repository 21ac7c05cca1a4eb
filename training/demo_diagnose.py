"""Does a model read the goal's words? Which object it marks, against chance.

    python -m training.demo_diagnose --model models/demo --scenes 40

A segmenter can score well above zero on referring goals without reading them: drawing the
most conspicuous object of the scene for every goal does that. This diagnostic separates the
two. On held-out tabletop scenes (:mod:`training.data.tabletop`), every object whose colour
and kind are unique in its scene is asked for by ``"<colour> <kind>"`` (a ``res`` goal), all
of a scene's goals in one ``segment`` batch, as the node does. Per answer that marks anything:

* ``object_iou``: the pixel IoU of the answer with the object it overlaps best (how well it
  draws *an* object; a perfect 8 x 8 answer gets about 0.6 on these scenes);
* ``picked_target``: the share of answers whose best-overlapped object is the one named;
* ``chance``: what ``picked_target`` is for a model that marks one object at random (the mean
  of 1 / number of objects), to compare it with;
* ``identical``: the share of scenes whose goals (two or more, naming different objects) all
  got the very same mask, the plainest sign of a model that ignores the words.

``answered`` is the share of goals with a non-empty answer. Two settings: scenes of exactly two
objects at 1.5 times the normal footprint (``chance`` 0.5) and the held-out mix of 2 to 6
objects.

Third, ``absent``: which words a model checks before it marks something. Goals whose target is
not in the scene (``gres_absent``, up to six per held-out scene of 2 to 6 objects) are grouped
by which of their words name something that is there (:data:`ABSENT_GROUPS`), and for each
group the share of goals the model marked anything for is given (the empty answer is right for
all). A model that checks colour and kind marks none; one that checks only the colour marks
the ``both_present`` and ``colour_present`` goals and leaves the rest.

Prints one JSON line per setting; ``--out`` writes them all as a JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from text4seg_ros.metrics import mask_iou
from text4seg_ros.model.types import Goal
from text4seg_ros.prompts import Task

from .data.tabletop import PLURALS, TabletopScene, draw_tabletop, scene_seed, tabletop_goals

# name -> (objects per scene (min, max), footprint scale)
SETTINGS: dict[str, tuple[tuple[int, int], float]] = {
    "two_objects": ((2, 2), 1.5),
    "two_to_six": ((2, 6), 1.0),
}


# Absent-target goals by which of their words name something in the scene: "<colour> <kind>"
# with both words on (different) objects, only the colour, only the kind, neither; a kind's
# plural ("plates") and a colour's group ("purple objects"), whose one word is absent.
ABSENT_GROUPS: tuple[str, ...] = (
    "both_present",
    "colour_present",
    "kind_present",
    "neither_present",
    "kind_group",
    "colour_group",
)
_KIND_OF_PLURAL = {plural: kind for kind, plural in PLURALS.items()}


def absent_group(text: str, scene: TabletopScene) -> str:
    """The :data:`ABSENT_GROUPS` entry of an absent-target goal ``text`` in ``scene``.

    ValueError when ``text`` is not a tabletop absent-goal form or names something present."""
    words = text.split()
    colours = {o.colour for o in scene.objects}
    kinds = {o.kind for o in scene.objects}
    if len(words) == 2 and words[1] == "objects" and words[0] not in colours:
        return "colour_group"
    if len(words) == 1 and words[0] in _KIND_OF_PLURAL and _KIND_OF_PLURAL[words[0]] not in kinds:
        return "kind_group"
    if len(words) == 2 and words[1] != "objects":
        colour, kind = words
        if any(o.colour == colour and o.kind == kind for o in scene.objects):
            raise ValueError(f"{text!r} is in the scene")
        return {
            (True, True): "both_present",
            (True, False): "colour_present",
            (False, True): "kind_present",
            (False, False): "neither_present",
        }[(colour in colours, kind in kinds)]
    raise ValueError(f"{text!r} is not an absent-target goal of this scene")


def absent_marked(
    segmenter: Any, seeds: Sequence[int], size: tuple[int, int] = (128, 128), per_scene: int = 6
) -> dict[str, float]:
    """The module docstring's ``absent`` figures: ``goals`` and ``marked`` over all absent
    goals, and per group of :data:`ABSENT_GROUPS` the share marked (NaN for a group with no
    goal) and the count (``<group>_goals``)."""
    asked = dict.fromkeys(ABSENT_GROUPS, 0)
    marked = dict.fromkeys(ABSENT_GROUPS, 0)
    for seed in seeds:
        scene = draw_tabletop(seed, size)
        goals = tabletop_goals(scene, seed, absent=per_scene)
        goals = [g for g in goals if g.kind == "gres_absent"]
        if not goals:
            continue
        segmenter.set_image(scene.image)
        for goal, result in zip(goals, segmenter.segment([Goal(g.text, g.task) for g in goals])):
            group = absent_group(goal.text, scene)
            asked[group] += 1
            marked[group] += bool(np.asarray(result.mask).any())
    total = sum(asked.values())
    nan = float("nan")
    out: dict[str, float] = {"goals": total}
    out["marked"] = sum(marked.values()) / total if total else nan
    for group in ABSENT_GROUPS:
        out[group] = marked[group] / asked[group] if asked[group] else nan
    out.update({f"{group}_goals": asked[group] for group in ABSENT_GROUPS})
    return out


def named_objects(scene: TabletopScene) -> list[tuple[str, np.ndarray]]:
    """``("<colour> <kind>", visible mask)`` for each object whose colour and kind are unique."""
    names = [f"{o.colour} {o.kind}" for o in scene.objects]
    return [(n, o.mask) for n, o in zip(names, scene.objects) if names.count(n) == 1]


def which_object(
    segmenter: Any,
    seeds: Sequence[int],
    size: tuple[int, int] = (128, 128),
    n_objects: tuple[int, int] = (2, 6),
    scale: float = 1.0,
) -> dict[str, float]:
    """The module docstring's figures for ``segmenter`` on the scenes of ``seeds``."""
    goals = answered = picked = scenes_asked = identical = 0
    best_ious: list[float] = []
    chance: list[float] = []
    for seed in seeds:
        scene = draw_tabletop(seed, size, n_objects=n_objects, scale=scale)
        named = named_objects(scene)
        if not named:
            continue
        segmenter.set_image(scene.image)
        results = segmenter.segment([Goal(text, Task.RES) for text, _ in named])
        masks = [np.asarray(r.mask, bool) for r in results]
        if len(masks) >= 2:
            scenes_asked += 1
            identical += all(np.array_equal(masks[0], m) for m in masks[1:])
        objects = [o.mask for o in scene.objects]
        for (_, target), mask in zip(named, masks):
            goals += 1
            if not mask.any():
                continue
            answered += 1
            ious = [mask_iou(mask, o) for o in objects]  # mask is not empty
            best = int(np.argmax(ious))
            best_ious.append(ious[best])
            picked += bool(np.array_equal(objects[best], target))
            chance.append(1.0 / len(objects))
    nan = float("nan")
    return {
        "goals": goals,
        "answered": answered / goals if goals else nan,
        "object_iou": float(np.mean(best_ious)) if best_ious else nan,
        "picked_target": picked / answered if answered else nan,
        "chance": float(np.mean(chance)) if chance else nan,
        "identical": identical / scenes_asked if scenes_asked else nan,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: one JSON line per setting of :data:`SETTINGS`, then ``absent``."""
    from text4seg_ros.model.segmenter import Segmenter

    ap = argparse.ArgumentParser(prog="python -m training.demo_diagnose", description=__doc__)
    ap.add_argument("--model", required=True)
    ap.add_argument("--scenes", type=int, default=40, help="held-out scenes per setting (40)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    segmenter = Segmenter.from_pretrained(args.model)
    seeds = [scene_seed("heldout", i) for i in range(args.scenes)]
    report = {}
    for name, (n_objects, scale) in SETTINGS.items():
        r = which_object(segmenter, seeds, (args.size, args.size), n_objects, scale)
        report[name] = r
        print(name, json.dumps({k: round(v, 3) for k, v in r.items()}), flush=True)
    report["absent"] = r = absent_marked(segmenter, seeds, (args.size, args.size))
    print("absent", json.dumps({k: round(v, 3) for k, v in r.items()}), flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
