"""Box-wise (B-SD) instance samples: every instance of a class as ``<ref><box><seg>`` triples.

One sample per (image, category): the question asks for every instance of the class name, the
answer lists one triple per instance (:func:`text4seg_ros.descriptors.bsd.encode_instances`),
in reading order of the boxes (top to bottom, then left to right) so the order is learnable.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from text4seg_ros.descriptors.bsd import encode_instances
from text4seg_ros.descriptors.geometry import SamplingMethod, mask_to_box
from text4seg_ros.prompts import Task, format_answer, question

from .coco import CocoInstances
from .sample import ChatSample


def build_instances(
    coco: CocoInstances,
    grid: int = 16,
    bricks: bool = False,
    method: SamplingMethod = "center",
    rng: random.Random | None = None,
    include_crowd: bool = False,
    max_instances: int = 20,
) -> Iterator[ChatSample]:
    """B-SD samples per (image, category) with 1..``max_instances`` instances.

    Crowd annotations (one mask over many objects) are skipped unless ``include_crowd``;
    categories with more than ``max_instances`` instances are skipped (answers too long).
    """
    rng = rng or random.Random(0)
    for image_id, cat_id, label, anns in coco.class_groups(include_crowd):
        if label is None or len(anns) > max_instances:
            continue
        masks = [coco.ann_mask(a) for a in anns]
        keyed = [(mask_to_box(m), m, a) for m, a in zip(masks, anns)]
        keyed = [k for k in keyed if k[0] is not None]
        if not keyed:
            continue
        keyed.sort(key=lambda k: (k[0][1], k[0][0]))
        body = encode_instances([m for _, m, _ in keyed], label, grid, bricks, method)
        yield ChatSample(
            id=f"bsd-{image_id}-{cat_id}",
            image=coco.image_path(image_id),
            question=question(Task.INSTANCES, label, rng=rng),
            answer=format_answer(Task.INSTANCES, body, label),
            task=Task.INSTANCES.value,
            grid=grid,
            meta={
                "dataset": "coco_instances",
                "label": label,
                "image_id": image_id,
                "category_id": cat_id,
                "ann_ids": [int(a["id"]) for _, _, a in keyed],
                "boxes": [list(b) for b, _, _ in keyed],
                "bricks": bricks,
                "size": list(coco.size(image_id)),
            },
        )
