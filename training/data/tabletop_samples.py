"""Training samples from tabletop scenes (:mod:`training.data.tabletop`): PNGs + chat samples.

    python -m training.data.build tabletop --first 0 --n-images 20000 --size 128 --grid 16 \\
        --goals-per-scene 3 --out build/demo_data/train.jsonl

Every goal kind becomes one sample through the shared prompt and descriptor code
(:mod:`text4seg_ros.prompts`, :mod:`text4seg_ros.descriptors`): RES / GRES / REC an I-SD answer
labelled with the goal text (REC's box is the tight box of that mask, SPEC section 4), open
vocabulary an I-SD over the offered classes (candidates kind), instances a B-SD answer.
``meta`` keeps the goal ``kind`` tag and the scene seed, so evaluation can report per kind.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from pathlib import Path

from PIL import Image

from text4seg_ros.descriptors import OTHERS, encode_labels, labels_to_grid
from text4seg_ros.descriptors.bsd import encode_instances
from text4seg_ros.descriptors.geometry import SamplingMethod
from text4seg_ros.prompts import OpenVocabKind, Task, format_answer, question

from .sample import ChatSample, mask_body
from .tabletop import GOAL_KINDS, TabletopGoal, draw_tabletop, scene_seed, tabletop_goals


def goal_sample(
    goal: TabletopGoal,
    image: str,
    sample_id: str,
    grid: int = 16,
    method: SamplingMethod = "area",
    rng: random.Random | None = None,
) -> ChatSample:
    """One chat sample answering ``goal`` on the image file ``image`` (absolute path).

    ``rng`` draws the question template (None: template 0, as at inference)."""
    if goal.task is Task.OPEN_VOCAB:
        names = [OTHERS, *goal.classes]
        cells = labels_to_grid(goal.label_map, grid, method, num_classes=len(names))
        q = question(goal.task, classes=goal.classes, kind=OpenVocabKind.CANDIDATES, rng=rng)
        answer = format_answer(goal.task, encode_labels(cells, names))
        label = "|".join(goal.classes)
    elif goal.task is Task.INSTANCES:
        q = question(goal.task, goal.text, rng=rng)
        answer = format_answer(
            goal.task, encode_instances(goal.instances, goal.text, grid, False, method), goal.text
        )
        label = goal.text
    else:
        q = question(goal.task, goal.text, rng=rng)
        answer = format_answer(goal.task, mask_body(goal.mask, goal.text, grid, method), goal.text)
        label = goal.text
    h, w = goal.mask.shape
    return ChatSample(
        id=sample_id,
        image=image,
        question=q,
        answer=answer,
        task=goal.task.value,
        grid=grid,
        meta={
            "dataset": "tabletop",
            "kind": goal.kind,
            "label": label,
            "classes": list(goal.classes),
            "size": [h, w],
            "box": list(goal.box or []),
        },
    )


def _draw_goals(
    goals: list[TabletopGoal], n: int, weights: dict[str, float], rng: random.Random
) -> list[TabletopGoal]:
    """``n`` distinct goals: a kind drawn by weight among the kinds left, then a goal of it."""
    left, out = list(goals), []
    while left and len(out) < n:
        kinds = sorted({g.kind for g in left}, key=GOAL_KINDS.index)
        w = [weights.get(k, 1.0) for k in kinds]
        if sum(w) <= 0:
            break
        kind = rng.choices(kinds, weights=w)[0]
        goal = rng.choice([g for g in left if g.kind == kind])
        left = [g for g in left if g is not goal]
        out.append(goal)
    return out


def build_tabletop(
    out_dir: str | Path,
    n_images: int,
    first: int = 0,
    split: str = "train",
    size: tuple[int, int] = (128, 128),
    grid: int = 16,
    method: SamplingMethod = "area",
    n_objects: tuple[int, int] = (2, 6),
    goals_per_scene: int | None = None,
    kinds: Sequence[str] | None = None,
    weights: dict[str, float] | None = None,
    scale: float = 1.0,
    hard_absent: float = 0.0,
) -> Iterator[ChatSample]:
    """Draw scenes ``first .. first + n_images - 1`` of ``split`` (seeds by
    :func:`~training.data.tabletop.scene_seed`), write PNGs under ``out_dir/images`` and yield
    one sample per goal.

    ``kinds``: goal kinds kept (default all, :data:`~training.data.tabletop.GOAL_KINDS`).
    ``goals_per_scene``: keep at most this many goals per scene, drawn at random (more scenes
    per sample budget: the model sees more images); ``weights`` (goal kind -> weight, default
    1 each) makes that draw pick a kind first, so rare kinds are not drowned by the many GRES
    goals of a scene. ``scale``: object footprint factor (:func:`draw_tabletop`).
    ``hard_absent``: the share of absent-target goals whose colour is in the scene
    (:func:`~training.data.tabletop.tabletop_goals`; 0, the default, as held out). Image paths
    are absolute.
    """
    keep = set(kinds or GOAL_KINDS)
    unknown = keep - set(GOAL_KINDS)
    if unknown:
        raise ValueError(f"unknown goal kinds {sorted(unknown)}; allowed: {GOAL_KINDS}")
    image_dir = Path(out_dir) / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    for i in range(first, first + n_images):
        seed = scene_seed(split, i)
        scene = draw_tabletop(seed, size, n_objects, scale=scale)
        goals = tabletop_goals(scene, seed, hard_absent=hard_absent)
        goals = [g for g in goals if g.kind in keep]
        rng = random.Random(seed ^ 0x5EED)
        if goals_per_scene is not None and len(goals) > goals_per_scene:
            goals = _draw_goals(goals, goals_per_scene, weights or {}, rng)
        if not goals:
            continue
        path = (image_dir / f"tabletop_{seed}.png").resolve()
        Image.fromarray(scene.image).save(path)
        for k, goal in enumerate(goals):
            sample = goal_sample(goal, str(path), f"tabletop-{seed}-{k}", grid, method, rng)
            sample.meta["seed"] = seed
            yield sample
