"""Tabletop scenes for the demo model: objects on a textured table, with exact masks and goals.

Public API (stable; ``make demo`` and the demo model's data builder call it)::

    scene = draw_tabletop(seed, size=(128, 128))      # or a random.Random instead of a seed
    for goal in tabletop_goals(scene, seed):          # same seed -> same goals
        goal.text, goal.task, goal.kind               # "red mug", Task.RES, "res_attr"
        goal.mask                                     # (H, W) bool target (empty: no target)
        goal.classes, goal.label_map                  # open vocabulary: class list, (H, W) int64
        goal.instances                                # B-SD: one (H, W) bool mask per instance
    scene_seed("train", i) / scene_seed("heldout", i) # the split, by seed

A scene: a wooden table (streaked texture, a lighting gradient across it), 2 to 6 objects of the
kinds :data:`KINDS` in :data:`COLOURS` and two :data:`SIZES`, each casting a soft (blurred)
shadow; objects lower in the image stand nearer and are drawn later, so they may hide part of
the ones behind (at least half of every object stays visible). Object masks are the visible
pixels, exact: the object's own pixels where no nearer object covers them (shadows are not part
of any mask). Drawing uses PIL and numpy from one seeded ``random.Random``: the same seed gives
the same pixels and goals on every machine.

Goals (``kind`` tags, for per-kind evaluation):

=============  =====  ==========================================================================
kind           task   text and target
=============  =====  ==========================================================================
res_attr       res    ``"red mug"``: the one object of that colour and kind
res_size       res    ``"small blue block"``: two blue blocks in the scene, the size decides
res_spatial    res    ``"ball left of the green bottle"``: the one ball that stands in that
                      relation to a reference named by colour and kind (:data:`RELATIONS`)
gres_multi     gres   ``"yellow objects"`` / ``"blocks"`` with two or more targets
gres_single    gres   the same phrasing with exactly one target
gres_absent    gres   ``"purple bottle"`` / ``"purple objects"`` / ``"plates"`` absent: empty mask
rec            rec    ``"red mug"`` as for res_attr; the answer is the mask's tight box
openvocab      open   label map over the object kinds; ``classes`` = kinds present plus absent
               vocab  distractors, in the question's order; ``label_map`` 0 = others,
                      i = ``classes[i - 1]``
instances      inst.  ``"mug"``: every mug, ``instances`` in reading order (top, then left)
=============  =====  ==========================================================================

Relations compare object centroids (of the full, unoccluded shape): "left of" the reference
when the centroid is at least :data:`RELATION_MARGIN` of the image width further left, and no
other object of the named kind is left of the reference at all (so the phrase has one referent).

Split by seed: training scenes use seeds ``0 .. 9_999_999`` (``scene_seed("train", i) = i``);
held-out scenes use ``HELDOUT_BASE + i`` (``HELDOUT_BASE = 10_000_000``), never seen in training.

Frames and units: images ``(H, W, 3)`` ``uint8`` RGB; masks ``(H, W)`` bool; boxes pixel edges
``(x1, y1, x2, y2)``, ``x2``/``y2`` exclusive.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from text4seg_ros.descriptors.geometry import mask_to_box
from text4seg_ros.prompts import OpenVocabKind, Task, open_vocab_classes

from .synthetic import COLOURS

KINDS: tuple[str, ...] = ("mug", "block", "ball", "bottle", "plate")
PLURALS: dict[str, str] = {k: k + "s" for k in KINDS}
SIZES: tuple[str, ...] = ("small", "large")
SIZE_SCALE: dict[str, float] = {"small": 0.62, "large": 1.0}
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
RELATION_MARGIN = 0.08  # of the image width (left/right) or height (above/below)
GOAL_KINDS: tuple[str, ...] = (
    "res_attr",
    "res_size",
    "res_spatial",
    "gres_multi",
    "gres_single",
    "gres_absent",
    "rec",
    "openvocab",
    "instances",
)
HELDOUT_BASE = 10_000_000
# Large-object footprint (width, height) as a fraction of the image's short side.
_FOOTPRINT: dict[str, tuple[float, float]] = {
    "mug": (0.34, 0.34),
    "block": (0.32, 0.32),
    "ball": (0.32, 0.32),
    "bottle": (0.2, 0.46),
    "plate": (0.46, 0.27),
}


@dataclass
class TableObject:
    """One object: its kind, colour, size word, visible ``(H, W)`` bool mask and tight box;
    ``centre`` is the ``(x, y)`` pixel centroid of the full (unoccluded) shape."""

    kind: str
    colour: str
    size: str
    mask: np.ndarray
    box: tuple[int, int, int, int]
    centre: tuple[float, float]

    @property
    def name(self) -> str:
        """``"red mug"``: colour and kind."""
        return f"{self.colour} {self.kind}"


@dataclass
class TabletopScene:
    """An ``(H, W, 3)`` ``uint8`` RGB image, its objects (back to front) and its seed (or None
    when drawn from a caller's ``random.Random``)."""

    image: np.ndarray
    objects: list[TableObject]
    seed: int | None = None


@dataclass
class TabletopGoal:
    """A goal on a scene (see the module docstring for ``kind``). ``mask``: ``(H, W)`` bool
    target (union of instances / non-others pixels for the label-map and B-SD goals)."""

    text: str
    task: Task
    kind: str
    mask: np.ndarray
    classes: tuple[str, ...] = ()
    label_map: np.ndarray | None = None
    instances: list[np.ndarray] = field(default_factory=list)

    @property
    def box(self) -> tuple[int, int, int, int] | None:
        """Tight box of ``mask`` (the REC answer), None when empty."""
        return mask_to_box(self.mask)


def scene_seed(split: str, index: int) -> int:
    """The seed of scene ``index`` of ``split`` (``"train"`` or ``"heldout"``)."""
    if not 0 <= index < HELDOUT_BASE:
        raise ValueError(f"index must be in 0..{HELDOUT_BASE - 1}, got {index}")
    if split == "train":
        return index
    if split == "heldout":
        return HELDOUT_BASE + index
    raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")


def _rng(seed: int | random.Random) -> random.Random:
    return seed if isinstance(seed, random.Random) else random.Random(seed)


def _table(size: tuple[int, int], rng: random.Random) -> np.ndarray:
    """Wood-like table: streaks along x, fine grain noise, and a lighting gradient."""
    h, w = size
    gen = np.random.default_rng(rng.getrandbits(32))
    base = np.array([rng.uniform(120, 175), rng.uniform(85, 125), rng.uniform(50, 85)])
    y = np.arange(h, dtype=np.float64)[:, None]
    x = np.arange(w, dtype=np.float64)[None, :]
    phase = rng.uniform(0, 2 * np.pi)
    freq = rng.uniform(0.15, 0.35) * 64 / h
    streaks = np.sin(y * freq + 2.5 * np.sin(x * 0.03 * 64 / w + phase)) * rng.uniform(6, 14)
    grain = gen.normal(0.0, 5.0, size=(h, w))
    img = base[None, None, :] + (streaks + grain)[:, :, None]
    # Light from a random direction: brightness ramps 0.75 .. 1.15 across the table.
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * (x / w - 0.5) + np.sin(angle) * (y / h - 0.5)) * 0.4 + 0.95
    return img * ramp[:, :, None]


def _shape_mask(size: tuple[int, int], kind: str, x: float, y: float, bw: float, bh: float):
    """Full ``(H, W)`` bool mask of ``kind`` with its footprint box at ``(x, y, bw, bh)``, and
    a ``(H, W)`` float shading (1 = lit) drawn in the same pass."""
    h, w = size
    canvas = Image.new("L", (w, h), 0)
    shade = Image.new("L", (w, h), 200)
    d, s = ImageDraw.Draw(canvas), ImageDraw.Draw(shade)
    x2, y2 = x + bw - 1, y + bh - 1
    if kind == "mug":
        body = (x, y + 0.05 * bh, x + 0.72 * bw, y2)
        d.rounded_rectangle(body, radius=max(1.0, 0.12 * bw), fill=255)
        d.ellipse((x + 0.5 * bw, y + 0.25 * bh, x2, y + 0.8 * bh), fill=255)
        d.ellipse((x + 0.68 * bw, y + 0.4 * bh, x + 0.86 * bw, y + 0.65 * bh), fill=0)
        s.ellipse((x + 0.05 * bw, y, x + 0.67 * bw, y + 0.25 * bh), fill=140)  # the opening
    elif kind == "block":
        d.rectangle((x, y, x2, y2), fill=255)
        s.polygon([(x, y), (x2, y), (x2 - 0.2 * bw, y + 0.25 * bh), (x, y + 0.25 * bh)], fill=250)
        s.rectangle((x2 - 0.2 * bw, y, x2, y2), fill=150)  # the side in shadow
    elif kind == "ball":
        d.ellipse((x, y, x2, y2), fill=255)
        s.ellipse((x, y, x2, y2), fill=160)
        s.ellipse((x + 0.1 * bw, y + 0.1 * bh, x + 0.75 * bw, y + 0.75 * bh), fill=210)
        s.ellipse((x + 0.25 * bw, y + 0.2 * bh, x + 0.45 * bw, y + 0.4 * bh), fill=255)
    elif kind == "bottle":
        d.rounded_rectangle((x, y + 0.35 * bh, x2, y2), radius=max(1.0, 0.2 * bw), fill=255)
        d.polygon(
            [(x, y + 0.4 * bh), (x + 0.3 * bw, y + 0.2 * bh), (x + 0.7 * bw, y + 0.2 * bh),
             (x2, y + 0.4 * bh)],
            fill=255,
        )  # fmt: skip
        d.rectangle((x + 0.3 * bw, y, x + 0.7 * bw, y + 0.22 * bh), fill=255)
        s.rectangle((x + 0.15 * bw, y + 0.4 * bh, x + 0.35 * bw, y2 - 0.1 * bh), fill=240)
    elif kind == "plate":
        d.ellipse((x, y, x2, y2), fill=255)
        s.ellipse((x + 0.18 * bw, y + 0.18 * bh, x2 - 0.18 * bw, y2 - 0.18 * bh), fill=170)
    else:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return np.asarray(canvas) > 0, np.asarray(shade, dtype=np.float64) / 200.0


def _draw_specs(rng: random.Random, n: int) -> list[tuple[str, str, str]]:
    """``n`` distinct (kind, colour, size) triples; about half are siblings of an earlier one
    (same kind, or same kind and colour in the other size) so words must disambiguate."""
    specs: list[tuple[str, str, str]] = []
    while len(specs) < n:
        if specs and rng.random() < 0.5:
            kind, colour, size = rng.choice(specs)
            if rng.random() < 0.4:
                size = "small" if size == "large" else "large"
            else:
                colour = rng.choice([c for c in COLOURS if c != colour])
                size = rng.choice(SIZES)
        else:
            kind, colour, size = rng.choice(KINDS), rng.choice(list(COLOURS)), rng.choice(SIZES)
        if (kind, colour, size) not in specs:
            specs.append((kind, colour, size))
    return specs


def draw_tabletop(
    seed: int | random.Random,
    size: tuple[int, int] = (128, 128),
    n_objects: tuple[int, int] = (2, 6),
    min_visible: float = 0.5,
    scale: float = 1.0,
) -> TabletopScene:
    """Draw one tabletop scene of ``n_objects[0]..n_objects[1]`` objects at ``size = (H, W)``.

    ``seed``: an int (the scene's seed, see :func:`scene_seed`) or a ``random.Random`` to draw
    from. Placements leaving an object less than ``min_visible`` visible are redrawn.
    ``scale`` multiplies every object's footprint (a curriculum's first stage uses large ones).
    """
    h, w = size
    if h < 16 or w < 16:
        raise ValueError(f"size must be at least (16, 16), got {size}")
    lo, hi = n_objects
    if not 1 <= lo <= hi <= 8:
        raise ValueError(f"n_objects must satisfy 1 <= lo <= hi <= 8, got {n_objects}")
    rng = _rng(seed)
    table = _table(size, rng)
    specs = _draw_specs(rng, rng.randint(lo, hi))
    short = min(h, w)
    for _ in range(100):
        placed = []
        for kind, colour, sz in specs:
            fw, fh = _FOOTPRINT[kind]
            k = scale * SIZE_SCALE[sz] * rng.uniform(0.9, 1.1)
            bw, bh = min(w - 1.0, max(3.0, fw * short * k)), min(h - 1.0, max(3.0, fh * short * k))
            x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            placed.append((y + bh, kind, colour, sz, x, y, bw, bh))
        placed.sort(key=lambda p: p[0])  # lower in the image = nearer = drawn later
        shapes = [_shape_mask(size, p[1], *p[4:]) for p in placed]
        visible = []
        for i, (m, _s) in enumerate(shapes):
            covered = np.zeros(size, dtype=bool)
            for later, _ in shapes[i + 1 :]:
                covered |= later
            visible.append(m & ~covered)
        if all(v.sum() >= min_visible * m.sum() > 0 for v, (m, _) in zip(visible, shapes)):
            break
    image = table
    # Soft shadows first (offset, blurred, darkening the table), then objects back to front.
    sx, sy = rng.uniform(-0.04, 0.04) * w, rng.uniform(0.02, 0.06) * h
    shadow = Image.new("L", (w, h), 0)
    for m, _ in shapes:
        shifted = Image.fromarray((m * 255).astype(np.uint8)).transform(
            (w, h), Image.Transform.AFFINE, (1, 0, -sx, 0, 1, -sy)
        )
        shadow = Image.fromarray(np.maximum(np.asarray(shadow), np.asarray(shifted)))
    shadow = shadow.filter(ImageFilter.GaussianBlur(radius=max(1.0, 0.025 * short)))
    image = image * (1.0 - 0.45 * np.asarray(shadow, dtype=np.float64)[:, :, None] / 255.0)
    light = 0.9 + 0.2 * rng.random()
    objects = []
    for (m, shade), v, p in zip(shapes, visible, placed):
        _, kind, colour, sz, x, y, bw, bh = p
        rgb = np.array(COLOURS[colour], dtype=np.float64)
        image[m] = (rgb[None, :] * (shade[m] * light)[:, None]).clip(0, 255)
        ys, xs = np.nonzero(m)
        centre = (float(xs.mean()), float(ys.mean()))
        if v.any():
            objects.append(TableObject(kind, colour, sz, v, mask_to_box(v), centre))
    pixels = np.clip(image, 0, 255).astype(np.uint8)
    return TabletopScene(pixels, objects, seed if isinstance(seed, int) else None)


def relation_holds(a: TableObject, b: TableObject, relation: str, size: tuple[int, int]) -> bool:
    """True when ``a`` is ``relation`` (:data:`RELATIONS`) ``b`` by at least the margin."""
    d = _relation_offset(a, b, relation, size)
    return d >= RELATION_MARGIN


def _relation_offset(a: TableObject, b: TableObject, relation: str, size: tuple[int, int]):
    """Signed centroid offset of ``a`` from ``b`` along ``relation``, in image fractions."""
    h, w = size
    dx, dy = (b.centre[0] - a.centre[0]) / w, (b.centre[1] - a.centre[1]) / h
    offsets = {"left of": dx, "right of": -dx, "above": dy, "below": -dy}
    if relation not in offsets:
        raise ValueError(f"relation must be one of {RELATIONS}, got {relation!r}")
    return offsets[relation]


def _union(objs: list[TableObject], shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for o in objs:
        mask |= o.mask
    return mask


def _spatial_goals(scene: TabletopScene, shape: tuple[int, int]) -> list[TabletopGoal]:
    objs = scene.objects
    names = [o.name for o in objs]
    out = []
    for ref in objs:
        if names.count(ref.name) != 1:
            continue  # the reference must be named uniquely by colour and kind
        for target in objs:
            if target is ref:
                continue
            for rel in RELATIONS:
                if not relation_holds(target, ref, rel, shape):
                    continue
                rivals = [o for o in objs if o.kind == target.kind and o not in (target, ref)]
                if any(_relation_offset(o, ref, rel, shape) > 0 for o in rivals):
                    continue  # another object of that kind is on the same side: ambiguous
                text = f"{target.kind} {rel} the {ref.name}"
                out.append(TabletopGoal(text, Task.RES, "res_spatial", target.mask.copy()))
    return out


def hard_absent_texts(scene: TabletopScene, missing: list[str]) -> list[str]:
    """The absent-target texts of ``missing`` that the scene's colours do not rule out.

    ``"{colour} {kind}"`` whose colour some object in the scene has (a purple mug is there, the
    purple bottle is not) and kind plurals (``"plates"``): the goals whose answer depends on
    reading the kind. Colour groups (``"purple objects"``) are absent only when the colour is.
    """
    colours = {o.colour for o in scene.objects}
    plurals = set(PLURALS.values())
    return [t for t in missing if t in plurals or t.split(" ")[0] in colours]


def _draw_absent(
    missing: list[str], hard: list[str], n: int, p_hard: float, rng: random.Random
) -> list[str]:
    """``n`` distinct texts of ``missing``, each from ``hard`` with chance ``p_hard`` (from the
    others when one pool is used up)."""
    hard_left, hard_set = list(hard), set(hard)
    easy_left = [t for t in missing if t not in hard_set]
    out: list[str] = []
    while len(out) < n and (hard_left or easy_left):
        use_hard = bool(hard_left) and (not easy_left or rng.random() < p_hard)
        pool = hard_left if use_hard else easy_left
        out.append(pool.pop(rng.randrange(len(pool))))
    return out


def tabletop_goals(
    scene: TabletopScene,
    seed: int | random.Random,
    max_spatial: int = 2,
    absent: int = 2,
    hard_absent: float = 0.0,
) -> list[TabletopGoal]:
    """Every goal kind this scene supports (see the module docstring), deterministic per seed.

    All res_attr / res_size goals; up to ``max_spatial`` res_spatial goals (preferring targets
    with a rival of the same kind); one GRES goal per colour and per kind present; ``absent``
    absent-target goals; one REC goal; one open-vocabulary goal; one instances goal.

    ``hard_absent`` (0 to 1; training data only, the held-out goals use 0): the chance that an
    absent-target goal is drawn from the *hard* ones, whose colour does not rule them out, so
    that only the kind says "not there": ``"purple bottle"`` beside a purple mug, ``"plates"``
    (:func:`hard_absent_texts`). At 0 the goals are exactly those drawn before the option.
    """
    if not 0.0 <= hard_absent <= 1.0:
        raise ValueError(f"hard_absent must be in [0, 1], got {hard_absent!r}")
    rng = _rng(seed)
    shape = scene.image.shape[:2]
    objs = scene.objects
    goals: list[TabletopGoal] = []
    names = [o.name for o in objs]
    for o in objs:
        if names.count(o.name) == 1:
            goals.append(TabletopGoal(o.name, Task.RES, "res_attr", o.mask.copy()))
        else:
            goals.append(TabletopGoal(f"{o.size} {o.name}", Task.RES, "res_size", o.mask.copy()))
    spatial = _spatial_goals(scene, shape)
    kinds_seen = [o.kind for o in objs]
    rng.shuffle(spatial)
    spatial.sort(key=lambda g: -kinds_seen.count(g.text.split(" ")[0]))  # rivals first
    goals += spatial[:max_spatial]
    groups = [(f"{c} objects", [o for o in objs if o.colour == c]) for c in COLOURS]
    groups += [(PLURALS[k], [o for o in objs if o.kind == k]) for k in KINDS]
    for text, members in groups:
        if members:
            kind = "gres_multi" if len(members) > 1 else "gres_single"
            goals.append(TabletopGoal(text, Task.GRES, kind, _union(members, shape)))
    missing = [f"{c} {k}" for k in KINDS for c in COLOURS if f"{c} {k}" not in names]
    missing += [text for text, members in groups if not members]
    empty = np.zeros(shape, dtype=bool)
    if hard_absent > 0.0:
        chosen = _draw_absent(missing, hard_absent_texts(scene, missing), absent, hard_absent, rng)
    else:  # the draw of every model trained before the option: the same random stream
        chosen = rng.sample(missing, min(absent, len(missing)))
    for text in chosen:
        goals.append(TabletopGoal(text, Task.GRES, "gres_absent", empty.copy()))
    unique = [o for o in objs if names.count(o.name) == 1]
    if unique:
        o = rng.choice(unique)
        goals.append(TabletopGoal(o.name, Task.REC, "rec", o.mask.copy()))
    present = sorted({o.kind for o in objs}, key=KINDS.index)
    if present:
        classes = open_vocab_classes(OpenVocabKind.CANDIDATES, present, KINDS, rng, 2)
        label_map = np.zeros(shape, dtype=np.int64)
        for o in objs:
            label_map[o.mask] = classes.index(o.kind) + 1
        goals.append(
            TabletopGoal("", Task.OPEN_VOCAB, "openvocab", label_map > 0, tuple(classes), label_map)
        )
        kind = rng.choice(present)
        members = sorted((o for o in objs if o.kind == kind), key=lambda o: (o.box[1], o.box[0]))
        goals.append(
            TabletopGoal(
                kind, Task.INSTANCES, "instances", _union(members, shape),
                instances=[o.mask.copy() for o in members],
            )
        )  # fmt: skip
    return goals
