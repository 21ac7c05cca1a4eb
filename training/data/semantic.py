"""Open-vocabulary samples from semantic label maps (COCO-Stuff, ADE20K, or our own PNGs).

A label map is an ``(H, W)`` integer image; pixel value ``v`` means class ``names[v]``, where a
``None`` entry (or a value in ``ignore``) means background (``others``). The two public layouts:

* ADE20K (ADEChallengeData2016): 0 = "other", 1..150 the classes: ``names = [None, "wall", ...]``.
* COCO-Stuff (stuffthingmaps): 0..181 the classes, 255 unlabeled: ``names = ["person", ...]``,
  ``ignore = (255,)``.

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
