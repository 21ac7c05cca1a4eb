"""Held-out tabletop scenes as files for ``text4seg-bag record-images --goals-file``.

Scene ``i`` is ``draw_tabletop(scene_seed("heldout", first + i))`` (seeds never used in
training) with the goals of ``tabletop_goals`` on the same seed. The node takes at most
``max_goals`` (8) goals per frame, so :func:`select_goals` picks them round-robin over the goal
kinds, starting at a kind that rotates with the frame: every kind is asked about equally often.

Files (in ``out_dir``): ``scene_NNNN.png`` (RGB), ``truth/NNNN_K.png`` (mono8: 255 = target, or
for open-vocabulary goals the class index), ``frames.jsonl`` (the goals file).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..bag.record_frames import FrameGoal, FramePlan, frame_goal_id, write_goals_file
from ..model.types import Goal
from ..prompts import Task

GOALS_FILE = "frames.jsonl"


def select_goals(goals: Sequence, frame: int, max_goals: int = 8, kinds: Sequence[str] = ()):
    """Up to ``max_goals`` of ``goals`` (objects with a ``kind``), round-robin over kinds in the
    order of ``kinds`` (then any other kind), starting ``frame`` kinds further each frame."""
    order = [k for k in kinds if any(g.kind == k for g in goals)]
    order += [k for k in dict.fromkeys(g.kind for g in goals) if k not in order]
    if not order:
        return []
    shift = frame % len(order)
    order = order[shift:] + order[:shift]
    queues = {k: [g for g in goals if g.kind == k] for k in order}
    picked = []
    while len(picked) < max_goals and any(queues.values()):
        for k in order:
            if queues[k] and len(picked) < max_goals:
                picked.append(queues[k].pop(0))
    return picked


def _truth_png(goal, path: Path) -> Path:
    if goal.task is Task.OPEN_VOCAB:
        pixels = np.asarray(goal.label_map, dtype=np.uint8)  # class indices, 0 = others
    else:
        pixels = np.where(goal.mask, 255, 0).astype(np.uint8)
    Image.fromarray(pixels, mode="L").save(path)
    return path


def write_heldout_scenes(
    out_dir: str | Path,
    frames: int,
    *,
    first: int = 0,
    size: tuple[int, int] = (128, 128),
    max_goals: int = 8,
    progress: bool = False,
) -> tuple[Path, list[FramePlan]]:
    """Write ``frames`` held-out scenes and their goals file into ``out_dir``; returns the goals
    file and the frames. ``size`` is ``(H, W)`` in pixels."""
    from tqdm import tqdm

    from training.data.tabletop import GOAL_KINDS, draw_tabletop, scene_seed, tabletop_goals

    out_dir = Path(out_dir)
    (out_dir / "truth").mkdir(parents=True, exist_ok=True)
    plans = []
    for i in tqdm(range(frames), desc="scenes", unit="frame", disable=not progress):
        seed = scene_seed("heldout", first + i)
        scene = draw_tabletop(seed, size=size)
        image = out_dir / f"scene_{i:04d}.png"
        Image.fromarray(scene.image).save(image)
        picked = select_goals(tabletop_goals(scene, seed), i, max_goals, GOAL_KINDS)
        goals = []
        for k, g in enumerate(picked):
            goal = Goal(g.text, g.task, frame_goal_id(g.kind, i, k), tuple(g.classes))
            goals.append(FrameGoal(goal, _truth_png(g, out_dir / "truth" / f"{i:04d}_{k}.png")))
        plans.append(FramePlan(image, goals))
    return write_goals_file(out_dir / GOALS_FILE, out_dir, plans), plans
