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
objects. Prints one JSON line per setting; ``--out`` writes both as a JSON object.
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

from .data.tabletop import TabletopScene, draw_tabletop, scene_seed

# name -> (objects per scene (min, max), footprint scale)
SETTINGS: dict[str, tuple[tuple[int, int], float]] = {
    "two_objects": ((2, 2), 1.5),
    "two_to_six": ((2, 6), 1.0),
}


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
    """Command line: one JSON line per setting of :data:`SETTINGS`."""
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
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
