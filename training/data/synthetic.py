"""Synthetic scenes: coloured shapes on backgrounds, with exact masks and language goals.

Meant for the demo model (a small model trained on these scenes; not built yet) and used by
tests: :func:`make_scene` draws one scene, :func:`scene_goals` lists its goals ("red circle",
"blue shapes", absent objects as empty GRES targets), :func:`build_synthetic` writes images
and JSONL samples. Everything is drawn with PIL from a seeded ``random.Random``: the same seed
gives the same pixels on every machine.

Frames and units: images are ``(H, W, 3)`` ``uint8`` RGB; masks ``(H, W)`` bool; boxes pixel
edges ``(x1, y1, x2, y2)`` with ``x2``/``y2`` exclusive.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from text4seg_ros.descriptors.geometry import SamplingMethod, mask_to_box
from text4seg_ros.prompts import Task, format_answer, question

from .sample import ChatSample, mask_body

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 60),
    "blue": (40, 70, 220),
    "yellow": (235, 210, 40),
    "purple": (140, 50, 170),
    "orange": (245, 130, 20),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
BACKGROUNDS: tuple[str, ...] = ("plain", "gradient", "noise")


@dataclass
class SceneObject:
    """One drawn shape: its visible ``(H, W)`` bool mask (occlusion applied) and tight box."""

    colour: str
    shape: str
    mask: np.ndarray
    box: tuple[int, int, int, int]

    @property
    def name(self) -> str:
        """The referring expression: ``"red circle"`` (templates say "the {text}")."""
        return f"{self.colour} {self.shape}"


@dataclass
class Scene:
    """An ``(H, W, 3)`` ``uint8`` RGB image and its objects (drawn back to front)."""

    image: np.ndarray
    objects: list[SceneObject]


@dataclass(frozen=True)
class SceneGoal:
    """A goal on a scene: text, task, and the ``(H, W)`` bool target (may be empty for GRES)."""

    text: str
    task: Task
    mask: np.ndarray


def _background(size: tuple[int, int], kind: str, rng: random.Random) -> np.ndarray:
    h, w = size
    # Muted greys/browns so that every shape colour stands out from the background.
    base = np.array([rng.randint(90, 170) for _ in range(3)], dtype=np.float64)
    if kind == "plain":
        img = np.broadcast_to(base, (h, w, 3)).copy()
    elif kind == "gradient":
        ramp = np.linspace(-40.0, 40.0, w)[None, :, None]
        img = np.broadcast_to(base, (h, w, 3)) + ramp
    elif kind == "noise":
        gen = np.random.default_rng(rng.getrandbits(32))
        img = base + gen.normal(0.0, 18.0, size=(h, w, 3))
    else:
        raise ValueError(f"background must be one of {BACKGROUNDS}, got {kind!r}")
    return np.clip(img, 0, 255).astype(np.uint8)


def _draw_shape(size: tuple[int, int], shape: str, box: tuple[int, int, int, int]) -> np.ndarray:
    """``(H, W)`` bool mask of ``shape`` inscribed in ``box`` (inclusive PIL coordinates)."""
    canvas = Image.new("L", (size[1], size[0]), 0)
    draw = ImageDraw.Draw(canvas)
    x1, y1, x2, y2 = box
    if shape == "circle":
        draw.ellipse((x1, y1, x2, y2), fill=255)
    elif shape == "square":
        draw.rectangle((x1, y1, x2, y2), fill=255)
    elif shape == "triangle":
        draw.polygon([((x1 + x2) / 2, y1), (x2, y2), (x1, y2)], fill=255)
    else:
        raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")
    return np.asarray(canvas) > 0


def make_scene(
    rng: random.Random,
    size: tuple[int, int] = (64, 64),
    n_objects: tuple[int, int] = (1, 3),
    background: str | None = None,
    min_side: float = 0.2,
    max_side: float = 0.45,
    min_visible: float = 0.5,
) -> Scene:
    """Draw one scene of ``n_objects[0]..n_objects[1]`` shapes, each a distinct (colour, shape).

    Shape sides are ``min_side..max_side`` of the short image side. Later shapes occlude
    earlier ones; placements leaving any shape less than ``min_visible`` visible are redrawn.
    """
    h, w = size
    if h < 8 or w < 8:
        raise ValueError(f"size must be at least (8, 8), got {size}")
    lo, hi = n_objects
    if not 1 <= lo <= hi <= len(COLOURS) * len(SHAPES):
        raise ValueError(f"n_objects must satisfy 1 <= lo <= hi <= 18, got {n_objects}")
    image = _background(size, background or rng.choice(BACKGROUNDS), rng)
    kinds = rng.sample([(c, s) for c in COLOURS for s in SHAPES], rng.randint(lo, hi))
    short = min(h, w)
    for _ in range(50):  # placements with enough of every shape visible are easy to find
        full = []
        for _c, shape in kinds:
            side = max(4, int(short * rng.uniform(min_side, max_side)))
            x1, y1 = rng.randint(0, w - side), rng.randint(0, h - side)
            full.append(_draw_shape(size, shape, (x1, y1, x1 + side - 1, y1 + side - 1)))
        visible = []
        for i, m in enumerate(full):
            covered = np.zeros(size, dtype=bool)
            for later in full[i + 1 :]:
                covered |= later
            visible.append(m & ~covered)
        if all(v.sum() >= min_visible * f.sum() for v, f in zip(visible, full)):
            break
    objects = []
    for (colour, shape), m in zip(kinds, visible):
        if not m.any():  # fully hidden after 50 tries (tiny images only): not in the scene
            continue
        image[m] = COLOURS[colour]
        objects.append(SceneObject(colour, shape, m, mask_to_box(m)))
    return Scene(image, objects)


def scene_goals(scene: Scene, rng: random.Random, absent: int = 1) -> list[SceneGoal]:
    """Goals of a scene: each object by name (RES), each colour present as "<colour> shapes"
    (GRES, several targets possible), and ``absent`` names of absent objects (GRES with
    an empty target, which teaches the model to answer "nothing")."""
    goals = [SceneGoal(o.name, Task.RES, o.mask) for o in scene.objects]
    for colour in sorted({o.colour for o in scene.objects}):
        mask = np.zeros(scene.image.shape[:2], dtype=bool)
        for o in scene.objects:
            if o.colour == colour:
                mask |= o.mask
        goals.append(SceneGoal(f"{colour} shapes", Task.GRES, mask))
    drawn = {(o.colour, o.shape) for o in scene.objects}
    missing = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in drawn]
    empty = np.zeros(scene.image.shape[:2], dtype=bool)
    for c, s in rng.sample(missing, min(absent, len(missing))):
        goals.append(SceneGoal(f"{c} {s}", Task.GRES, empty))
    return goals


def build_synthetic(
    out_dir: str | Path,
    n_images: int,
    seed: int = 0,
    size: tuple[int, int] = (64, 64),
    grid: int = 16,
    method: SamplingMethod = "center",
    n_objects: tuple[int, int] = (1, 3),
    absent: int = 1,
) -> Iterator[ChatSample]:
    """Write ``n_images`` scenes as PNGs under ``out_dir/images`` and yield their samples.

    Image paths in the samples are absolute. One sample per goal (see :func:`scene_goals`).
    """
    rng = random.Random(seed)
    image_dir = Path(out_dir) / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    for i in range(n_images):
        scene = make_scene(rng, size, n_objects)
        path = (image_dir / f"scene_{seed}_{i:06d}.png").resolve()
        Image.fromarray(scene.image).save(path)
        for k, goal in enumerate(scene_goals(scene, rng, absent)):
            yield ChatSample(
                id=f"synthetic-{seed}-{i}-{k}",
                image=str(path),
                question=question(goal.task, goal.text, rng=rng),
                answer=format_answer(
                    goal.task, mask_body(goal.mask, goal.text, grid, method), goal.text
                ),
                task=goal.task.value,
                grid=grid,
                meta={
                    "dataset": "synthetic",
                    "label": goal.text,
                    "size": list(size),
                    "box": list(mask_to_box(goal.mask) or []),
                },
            )
