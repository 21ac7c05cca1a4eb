"""COCO-format instance annotations (COCO, RefCLEF's ``instances.json``) and their masks.

Masks are rasterised by ``pycocotools.mask`` (the reference implementation): polygons, and
both compressed and uncompressed RLE (``iscrowd``). A mask is an ``(H, W)`` bool array in the
image's pixel frame. Also builds semantic label maps from instances (for open vocabulary) and
class-name referring samples, which is what a dataset with class names but no expressions, such
as ``../shared/data/coco_tiny16``, can offer.
"""

from __future__ import annotations

import json
import random
import warnings
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from text4seg_ros.descriptors.geometry import SamplingMethod
from text4seg_ros.prompts import Task, format_answer, question

from .sample import ChatSample, clean_label, mask_body


class CocoInstances:
    """Index over a COCO instances JSON: images, annotations per image, category names."""

    def __init__(self, data: dict[str, Any], image_root: str | Path | None = None) -> None:
        for key in ("images", "annotations", "categories"):
            if key not in data:
                raise ValueError(f"not a COCO instances file: missing {key!r}")
        self.image_root = Path(image_root) if image_root is not None else None
        self.images = {int(im["id"]): im for im in data["images"]}
        self.anns = {int(a["id"]): a for a in data["annotations"]}
        self.categories = {int(c["id"]): c["name"] for c in data["categories"]}
        self.anns_by_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for a in data["annotations"]:
            self.anns_by_image[int(a["image_id"])].append(a)

    @classmethod
    def load(cls, path: str | Path, image_root: str | Path | None = None) -> CocoInstances:
        """Read an instances JSON; ``image_root`` is the folder of the images' ``file_name``."""
        with Path(path).open(encoding="utf-8") as f:
            return cls(json.load(f), image_root)

    def size(self, image_id: int) -> tuple[int, int]:
        """``(H, W)`` of an image, from the JSON."""
        im = self.images[image_id]
        return int(im["height"]), int(im["width"])

    def image_path(self, image_id: int, file_name: str | None = None) -> str:
        """Absolute path of an image: ``image_root / file_name`` (REFER may give its own name)."""
        name = file_name or self.images[image_id]["file_name"]
        root = self.image_root if self.image_root is not None else Path(".")
        path = root / name
        if file_name is not None and not path.exists():
            # REFER's refs name COCO-2014 files (COCO_train2014_000000xxxxxx.jpg); the same
            # image under its COCO-2017 name is the instances JSON's file_name.
            path = root / self.images[image_id]["file_name"]
        return str(path.resolve())

    def ann_mask(self, ann: dict[str, Any] | int) -> np.ndarray:
        """``(H, W)`` bool mask of one annotation (polygons or RLE), via pycocotools."""
        if not isinstance(ann, dict):
            ann = self.anns[int(ann)]
        h, w = self.size(int(ann["image_id"]))
        segm = ann["segmentation"]
        if isinstance(segm, list):  # polygons: one RLE per part, merged
            if not segm:
                return np.zeros((h, w), dtype=bool)
            rle = mask_utils.merge(mask_utils.frPyObjects(segm, h, w))
        elif isinstance(segm.get("counts"), list):  # uncompressed RLE (crowd)
            rle = mask_utils.frPyObjects(segm, h, w)
        else:
            rle = segm
        with warnings.catch_warnings():  # pycocotools 2.0.11 vs numpy 2 copy-keyword notice
            warnings.simplefilter("ignore", DeprecationWarning)
            return mask_utils.decode(rle).astype(bool)

    def union_mask(self, ann_ids: list[int], image_id: int) -> np.ndarray:
        """Union of several annotations' masks (empty list: an all-False mask)."""
        out = np.zeros(self.size(image_id), dtype=bool)
        for a in ann_ids:
            out |= self.ann_mask(a)
        return out

    def class_groups(
        self, include_crowd: bool = False
    ) -> Iterator[tuple[int, int, str | None, list[dict[str, Any]]]]:
        """``(image_id, category_id, cleaned label or None, annotations)`` per (image, category).

        Images and categories in id order; crowd annotations skipped unless ``include_crowd``.
        """
        for image_id in sorted(self.images):
            groups: dict[int, list[dict[str, Any]]] = defaultdict(list)
            for a in self.anns_by_image.get(image_id, []):
                if include_crowd or not a.get("iscrowd", 0):
                    groups[int(a["category_id"])].append(a)
            for cat_id in sorted(groups):
                yield image_id, cat_id, clean_label(self.categories[cat_id]), groups[cat_id]

    def label_map(self, image_id: int, names: list[str]) -> np.ndarray:
        """``(H, W)`` ``uint8`` semantic label map: 0 = others, ``i`` = class ``names[i]``.

        Larger instances are painted first so that small objects stay visible on top of them.
        """
        index = {n: i for i, n in enumerate(names)}
        out = np.zeros(self.size(image_id), dtype=np.uint8)
        anns = sorted(self.anns_by_image.get(image_id, []), key=lambda a: -float(a["area"]))
        for a in anns:
            name = self.categories[int(a["category_id"])]
            if name in index:
                out[self.ann_mask(a)] = index[name]
        return out


def build_class_queries(
    coco: CocoInstances,
    grid: int = 16,
    method: SamplingMethod = "center",
    rng: random.Random | None = None,
    include_crowd: bool = False,
) -> Iterator[ChatSample]:
    """Class-name goals per (image, category): RES for one instance, GRES for several.

    The class name is the label (SPEC section 1); several instances share it (gRefCOCO style).
    Crowd annotations are skipped unless ``include_crowd``.
    """
    rng = rng or random.Random(0)
    for image_id, cat_id, label, anns in coco.class_groups(include_crowd):
        if label is None:
            continue
        task = Task.RES if len(anns) == 1 else Task.GRES
        mask = coco.union_mask([int(a["id"]) for a in anns], image_id)
        yield ChatSample(
            id=f"coco-{image_id}-{cat_id}",
            image=coco.image_path(image_id),
            question=question(task, label, rng=rng),
            answer=format_answer(task, mask_body(mask, label, grid, method), label),
            task=task.value,
            grid=grid,
            meta={
                "dataset": "coco_classes",
                "label": label,
                "image_id": image_id,
                "category_id": cat_id,
                "ann_ids": [int(a["id"]) for a in anns],
                "size": list(coco.size(image_id)),
            },
        )
