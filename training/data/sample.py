"""The training sample: one image, one question, one descriptor answer, as a JSONL line.

Layout of a line (LLaVA's conversation format, which the official Text4Seg data also uses)::

    {"id": "refcoco-123-0",
     "image": "/abs/path/COCO_train2014_000000000123.jpg",
     "crop": null | [x1, y1, x2, y2],           # pixel edges, x2/y2 exclusive, applied on load
     "conversations": [{"from": "human", "value": "<image>\\nCan you segment the cup ...?"},
                       {"from": "gpt", "value": "Sure, here is ...:\\n<seg>...</seg>"}],
     "task": "res", "grid": 16, "meta": {"label": "cup", "dataset": ..., "size": [H, W], ...}}

``meta["label"]`` is the descriptor's foreground label (the goal text) for referring and
instance samples; :mod:`training.evaluate` asks the Segmenter exactly that goal.

The answer is always produced by :mod:`text4seg_ros.prompts` around a body from
:mod:`text4seg_ros.descriptors`: builders never format descriptors themselves.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from text4seg_ros.descriptors import OTHERS, encode_mask
from text4seg_ros.descriptors.geometry import SamplingMethod
from text4seg_ros.descriptors.rrle import LABEL_FORBIDDEN
from text4seg_ros.prompts import Task

IMAGE_PLACEHOLDER = "<image>"
_LABEL_BAD = re.compile("|".join(re.escape(s) for s in LABEL_FORBIDDEN))  # the codec's list


@dataclass
class ChatSample:
    """One training sample. ``crop`` is a pixel box ``(x1, y1, x2, y2)`` or None."""

    id: str
    image: str
    question: str
    answer: str
    task: str
    grid: int
    meta: dict[str, Any] = field(default_factory=dict)
    crop: tuple[int, int, int, int] | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSONL record (see the module docstring)."""
        return {
            "id": self.id,
            "image": self.image,
            "crop": list(self.crop) if self.crop is not None else None,
            "conversations": [
                {"from": "human", "value": f"{IMAGE_PLACEHOLDER}\n{self.question}"},
                {"from": "gpt", "value": self.answer},
            ],
            "task": self.task,
            "grid": self.grid,
            "meta": self.meta,
        }

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> ChatSample:
        """Inverse of :meth:`to_json`; ValueError on a record that is not a sample."""
        try:
            human, gpt = record["conversations"]
            q = human["value"]
            if q.startswith(IMAGE_PLACEHOLDER):
                q = q[len(IMAGE_PLACEHOLDER) :].lstrip("\n")
            crop = record.get("crop")
            return cls(
                id=str(record["id"]),
                image=str(record["image"]),
                question=q,
                answer=gpt["value"],
                task=str(record.get("task", Task.RES.value)),
                grid=int(record["grid"]),
                meta=dict(record.get("meta") or {}),
                crop=tuple(int(v) for v in crop) if crop is not None else None,
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(
                "not a chat sample: needs id, image, grid and two conversations "
                f"(human, gpt); got keys {sorted(record)} ({err})"
            ) from None


def clean_label(text: str) -> str | None:
    """A referring expression or class name made a valid descriptor label, or None if empty.

    Descriptor syntax (``|``, ``*``, newlines, ``<seg>``) becomes a space, blanks collapse, and
    the literal background word ``others`` is refused (it would read as background).
    """
    if not isinstance(text, str):
        raise TypeError(f"label text must be a str, got {type(text).__name__}")
    label = " ".join(_LABEL_BAD.sub(" ", text).split())
    if not label or label == OTHERS:
        return None
    return label


def mask_body(
    mask: np.ndarray, label: str, grid: int = 16, method: SamplingMethod = "center"
) -> str:
    """R-RLE body of one ``(H, W)`` bool mask with foreground ``label`` (SPEC section 1-2):
    the codec's :func:`~text4seg_ros.descriptors.encode_mask`.

    ``method="center"`` reproduces the official data bit for bit; ``"area"`` votes per cell.
    """
    return encode_mask(np.asarray(mask), label, grid, method)


def write_jsonl(samples: Iterable[ChatSample], path: str | Path) -> int:
    """Write samples one JSON object per line (UTF-8); returns how many were written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as f:
        for s in samples:
            f.write(json.dumps(s.to_json(), ensure_ascii=False) + "\n")
            n += 1
    return n


def iter_jsonl(path: str | Path) -> Iterator[ChatSample]:
    """Read samples back; relative image paths resolve against the JSONL's folder."""
    path = Path(path)
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                sample = ChatSample.from_json(json.loads(line))
            except (json.JSONDecodeError, ValueError) as err:
                raise ValueError(f"{path}:{lineno}: {err}") from None
            if not Path(sample.image).is_absolute():
                sample.image = str(path.parent / sample.image)
            yield sample


def read_jsonl(path: str | Path) -> list[ChatSample]:
    """All samples of a JSONL file (see :func:`iter_jsonl`)."""
    return list(iter_jsonl(path))
