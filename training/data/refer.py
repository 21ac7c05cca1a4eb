"""RefCOCO / RefCOCO+ / RefCOCOg / RefCLEF (REFER) and gRefCOCO samples.

REFER refs (``refs(unc).p``, ``refs(umd).p``, ... a pickled list, or the same list as JSON)::

    {"ref_id": 0, "ann_id": 1706357, "image_id": 581857, "split": "train",
     "file_name": "COCO_train2014_000000581857_16.jpg", "category_id": 1,
     "sentences": [{"sent_id": 0, "sent": "the lady with the blue shirt", "raw": ..., ...}]}

gRefCOCO (``grefs(unc).json``) is the same with ``ann_id`` a list (``[-1]`` or ``[]`` when
``no_target`` is true): the targets share one label and the empty target is an all-``others``
grid (SPEC section 4). Masks come from the COCO instances JSON (:class:`CocoInstances`).
One sample is written per sentence; the sentence is the label (SPEC section 1).
"""

from __future__ import annotations

import json
import pickle
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from text4seg_ros.descriptors.geometry import SamplingMethod
from text4seg_ros.prompts import Task, format_answer, question

from .coco import CocoInstances
from .sample import ChatSample, clean_label, mask_body

REFER_DATASETS: tuple[str, ...] = ("refcoco", "refcoco+", "refcocog", "refclef", "grefcoco")


def load_refs(path: str | Path) -> list[dict[str, Any]]:
    """Read REFER refs from a pickle (``.p``/``.pkl``) or JSON file; a list of ref dicts.

    The pickles are the official REFER release (written by Python 2): only load trusted files.
    """
    path = Path(path)
    if path.suffix in (".p", ".pkl", ".pickle"):
        with path.open("rb") as f:
            try:
                refs = pickle.load(f)
            except UnicodeDecodeError:  # Python 2 str pickles
                f.seek(0)
                refs = pickle.load(f, encoding="latin1")
    else:
        with path.open(encoding="utf-8") as f:
            refs = json.load(f)
    if not isinstance(refs, list) or (refs and not isinstance(refs[0], dict)):
        raise ValueError(f"{path}: REFER refs must be a list of dicts, got {type(refs).__name__}")
    return refs


def _target_ids(ref: dict[str, Any]) -> list[int]:
    """Annotation ids of a ref: one for REFER, any number (maybe none) for gRefCOCO."""
    if ref.get("no_target"):
        return []
    ids = ref["ann_id"]
    ids = ids if isinstance(ids, list) else [ids]
    return [int(a) for a in ids if int(a) >= 0]


def build_refer(
    refs: Sequence[dict[str, Any]],
    coco: CocoInstances,
    dataset: str = "refcoco",
    splits: Sequence[str] | None = ("train",),
    grid: int = 16,
    method: SamplingMethod = "center",
    rng: random.Random | None = None,
) -> Iterator[ChatSample]:
    """Chat samples for every sentence of every ref in ``splits`` (None: all splits).

    ``dataset`` names the source in ``meta``; ``grefcoco`` (or any ref with a list ``ann_id``)
    gives GRES samples, where several targets share the label and no target is an empty grid.
    Sentences that are empty once descriptor syntax is removed are skipped.
    """
    if dataset not in REFER_DATASETS:
        raise ValueError(f"dataset must be one of {REFER_DATASETS}, got {dataset!r}")
    rng = rng or random.Random(0)
    for ref in refs:
        if splits is not None and ref.get("split") not in splits:
            continue
        image_id = int(ref["image_id"])
        if image_id not in coco.images:
            raise ValueError(
                f"ref {ref.get('ref_id')} names image {image_id}, absent from the instances JSON"
            )
        generalized = dataset == "grefcoco" or isinstance(ref.get("ann_id"), list)
        task = Task.GRES if generalized else Task.RES
        ann_ids = _target_ids(ref)
        mask = coco.union_mask(ann_ids, image_id)
        image = coco.image_path(image_id, ref.get("file_name"))
        for k, sent in enumerate(ref.get("sentences", [])):
            label = clean_label(sent.get("sent") or sent.get("raw") or "")
            if label is None:
                continue
            yield ChatSample(
                id=f"{dataset}-{ref['ref_id']}-{sent.get('sent_id', k)}",
                image=image,
                question=question(task, label, rng=rng),
                answer=format_answer(task, mask_body(mask, label, grid, method), label),
                task=task.value,
                grid=grid,
                meta={
                    "dataset": dataset,
                    "label": label,
                    "split": ref.get("split"),
                    "ref_id": ref["ref_id"],
                    "sent_id": sent.get("sent_id", k),
                    "image_id": image_id,
                    "ann_ids": ann_ids,
                    "no_target": not ann_ids,
                    "size": list(coco.size(image_id)),
                },
            )
