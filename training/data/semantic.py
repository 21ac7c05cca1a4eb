"""Open-vocabulary samples from semantic label maps (COCO-Stuff, ADE20K, or our own PNGs).

A label map is an ``(H, W)`` integer image; pixel value ``v`` means class ``names[v]``, where a
``None`` entry (or a value in ``ignore``) means background (``others``). The two public layouts:

* ADE20K (ADEChallengeData2016): 0 = "other", 1..150 the classes: ``names = [None, "wall", ...]``.
* COCO-Stuff (stuffthingmaps): pixel value = COCO-Stuff class id - 1, so 0..181 index the
  182-entry id list (91 thing ids, 11 of them never annotated, then 91 stuff classes), 255 is
  unlabeled: ``names = COCO_STUFF_NAMES``, ``ignore = (255,)`` (:data:`PRESETS` ``coco-stuff``).
  A list of the 171 used names alone would shift every class after ``street sign`` (id 12).

Each sample takes a random square crop (side = the short image side; the crop box is stored in
the sample and applied when the image is loaded), samples the label map to a G x G grid, and
asks one of the three question kinds drawn 1 : 3 : 6 (SPEC section 4). Classes not offered by the
question (PARTIAL kind) become ``others``; distractors are absent classes of the vocabulary.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from text4seg_ros.descriptors import OTHERS, encode_labels, labels_to_grid
from text4seg_ros.descriptors.geometry import SamplingMethod
from text4seg_ros.prompts import (
    Task,
    draw_open_vocab_kind,
    format_answer,
    open_vocab_classes,
    question,
)

from .sample import ChatSample, clean_label

# COCO thing ids 1..91 (index = id - 1); None where COCO defines an id but annotates nothing
# (12 street sign, 26 hat, 29 shoe, 30 eye glasses, 45 plate, 66 mirror, 68 window, 69 desk,
# 71 door, 83 blender, 91 hair brush): never in a label map, and kept out of the vocabulary so
# they are never offered as distractors.
_COCO_THINGS: tuple[str | None, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", None, "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", None, "backpack",
    "umbrella", None, None, "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard",
    "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", None, "wine glass", "cup", "fork", "knife", "spoon", "bowl",
    "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut",
    "cake", "chair", "couch", "potted plant", "bed", None, "dining table", None, None, "toilet",
    None, "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven",
    "toaster", "sink", "refrigerator", None, "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush", None,
)  # fmt: skip
# COCO-Stuff stuff ids 92..182, official names (labels.txt of cocostuff).
_COCO_STUFF: tuple[str, ...] = (
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage",
    "cardboard", "carpet", "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds",
    "counter", "cupboard", "curtain", "desk-stuff", "dirt", "door-stuff", "fence",
    "floor-marble", "floor-other", "floor-stone", "floor-tile", "floor-wood", "flower", "fog",
    "food-other", "fruit", "furniture-other", "grass", "gravel", "ground-other", "hill",
    "house", "leaves", "light", "mat", "metal", "mirror-stuff", "moss", "mountain", "mud",
    "napkin", "net", "paper", "pavement", "pillow", "plant-other", "plastic", "platform",
    "playingfield", "railing", "railroad", "river", "road", "rock", "roof", "rug", "salad",
    "sand", "sea", "shelf", "sky-other", "skyscraper", "snow", "solid-other", "stairs", "stone",
    "straw", "structural-other", "table", "tent", "textile-other", "towel", "tree", "vegetable",
    "wall-brick", "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile",
    "wall-wood", "water-other", "waterdrops", "window-blind", "window-other", "wood",
)  # fmt: skip


def _readable(name: str) -> str:
    """A COCO-Stuff stuff name as words: ``sky-other`` -> ``sky``, ``wall-brick`` -> ``wall
    brick`` (the ``-other``/``-stuff`` suffixes only tell the class apart from a thing)."""
    return name.removesuffix("-other").removesuffix("-stuff").replace("-", " ")


COCO_STUFF_NAMES: tuple[str | None, ...] = _COCO_THINGS + tuple(_readable(n) for n in _COCO_STUFF)
"""Pixel value of a COCO-Stuff ``stuffthingmaps`` PNG -> class name (182 entries, None unused)."""

PRESETS: dict[str, tuple[tuple[str | None, ...], tuple[int, ...]]] = {
    "coco-stuff": (COCO_STUFF_NAMES, (255,)),
}
"""Named label-map layouts: ``name -> (names, ignored values)``."""


def square_crop(
    size: tuple[int, int], rng: random.Random | None
) -> tuple[int, int, int, int] | None:
    """A random square box ``(x1, y1, x2, y2)`` with the short side of ``size = (H, W)``.

    None when the image is already square or ``rng`` is None (no crop).
    """
    h, w = size
    if rng is None or h == w:
        return None
    side = min(h, w)
    x1 = rng.randint(0, w - side)
    y1 = rng.randint(0, h - side)
    return x1, y1, x1 + side, y1 + side


def vocabulary(names: Sequence[str | None]) -> list[str]:
    """The class names of a label-map layout, cleaned, background entries dropped."""
    out = []
    for n in names:
        label = clean_label(n) if n is not None else None
        if label is not None and label not in out:
            out.append(label)
    return out


def _lookup(names: Sequence[str | None], ignore: Sequence[int], vocab: list[str]) -> np.ndarray:
    """Pixel value -> vocabulary index + 1 (0 = others), as a ``(256,)`` or longer table."""
    table = np.zeros(max(len(names), max(ignore, default=0) + 1, 256), dtype=np.int64)
    pos = {v: i + 1 for i, v in enumerate(vocab)}
    for value, n in enumerate(names):
        label = clean_label(n) if n is not None else None
        if label is not None and value not in ignore:
            table[value] = pos[label]
    return table


def open_vocab_sample(
    image: str,
    label_map: np.ndarray,
    names: Sequence[str | None],
    rng: random.Random,
    grid: int = 32,
    method: SamplingMethod = "center",
    ignore: Sequence[int] = (),
    crop: bool = True,
    max_distractors: int = 5,
    sample_id: str = "",
) -> ChatSample | None:
    """One open-vocabulary sample from an ``(H, W)`` label map; None if no class is visible.

    A class is *present* when at least one grid cell carries it after sampling, so every class
    the answer names is visible in the descriptor.
    """
    if label_map.ndim != 2:
        raise ValueError(f"label_map must be (H, W), got shape {label_map.shape}")
    vocab = vocabulary(names)
    table = _lookup(names, ignore, vocab)
    if label_map.min() < 0 or label_map.max() >= table.size:
        raise ValueError(f"label_map values must lie in [0, {table.size}), got {label_map.max()}")
    box = square_crop(label_map.shape, rng if crop else None)
    region = label_map if box is None else label_map[box[1] : box[3], box[0] : box[2]]
    cells = labels_to_grid(table[region], grid, method, num_classes=len(vocab) + 1)
    present_ids = [int(v) for v in np.unique(cells) if v != 0]
    if not present_ids:
        return None
    present = [vocab[v - 1] for v in present_ids]
    kind = draw_open_vocab_kind(rng)
    classes = open_vocab_classes(kind, present, vocab, rng, max_distractors=max_distractors)
    offered = [OTHERS, *classes]
    remap = np.zeros(len(vocab) + 1, dtype=np.int64)  # vocabulary index -> offered index
    for i, c in enumerate(classes, start=1):
        remap[vocab.index(c) + 1] = i
    body = encode_labels(remap[cells], offered)
    return ChatSample(
        id=sample_id,
        image=image,
        question=question(Task.OPEN_VOCAB, classes=classes, kind=kind, rng=rng),
        answer=format_answer(Task.OPEN_VOCAB, body),
        task=Task.OPEN_VOCAB.value,
        grid=grid,
        crop=box,
        meta={
            "kind": kind.value,
            "classes": classes,
            "present": present,
            "size": list(label_map.shape),
        },
    )


def build_open_vocab(
    pairs: Iterable[tuple[str | Path, str | Path]],
    names: Sequence[str | None],
    dataset: str = "ade20k",
    grid: int = 32,
    method: SamplingMethod = "center",
    ignore: Sequence[int] = (),
    crop: bool = True,
    samples_per_image: int = 1,
    max_distractors: int = 5,
    rng: random.Random | None = None,
) -> Iterator[ChatSample]:
    """Samples from ``(image path, label-map PNG path)`` pairs; see :func:`open_vocab_sample`."""
    rng = rng or random.Random(0)
    for image, label_path in pairs:
        label_map = np.asarray(Image.open(label_path))
        if label_map.ndim != 2:
            raise ValueError(
                f"{label_path}: label map must be single-channel, got {label_map.shape}"
            )
        with Image.open(image) as im:
            if (im.height, im.width) != label_map.shape:
                raise ValueError(
                    f"{label_path}: label map {label_map.shape} does not match image "
                    f"{(im.height, im.width)} of {image}"
                )
        for k in range(samples_per_image):
            sample = open_vocab_sample(
                str(Path(image).resolve()),
                label_map,
                names,
                rng,
                grid,
                method,
                ignore,
                crop,
                max_distractors,
                sample_id=f"{dataset}-{Path(image).stem}-{k}",
            )
            if sample is not None:
                sample.meta["dataset"] = dataset
                yield sample


def pair_folders(
    image_dir: str | Path, label_dir: str | Path, image_ext: str = ".jpg"
) -> list[tuple[Path, Path]]:
    """Pair ``image_dir/NAME.jpg`` with ``label_dir/NAME.png`` (the ADE / COCO-Stuff layout)."""
    pairs = []
    for label in sorted(Path(label_dir).glob("*.png")):
        image = Path(image_dir) / (label.stem + image_ext)
        if image.exists():
            pairs.append((image, label))
    if not pairs:
        raise ValueError(f"no image/label pairs found in {image_dir} and {label_dir}")
    return pairs
