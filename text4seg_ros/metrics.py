"""Streaming segmentation metrics (SPEC.md section 6).

Every accumulator takes one query at a time (``update``) and reports at any point
(``compute``), so evaluation never holds all masks in memory. Masks are ``(H, W)`` bool arrays
of equal shape; boxes are ``(x1, y1, x2, y2)`` pixel edges with exclusive ``x2``/``y2``.

* cIoU: total intersection over total union over all queries (0 when the union is empty).
* gIoU: mean per-query IoU; an empty prediction on an empty target scores 1.
* N-acc: share of empty targets predicted empty; T-acc: share of non-empty targets predicted
  non-empty (GRES). Undefined (NaN) when there is no such target.
* REC Acc@0.5: box IoU strictly above 0.5; an empty predicted mask is a miss.
* mIoU: per-class IoU accumulated over all images (intersection / union), averaged over the
  classes whose union is non-empty.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from .descriptors.geometry import mask_to_box

__all__ = ["MaskMetrics", "MeanIoU", "RecAccuracy", "box_iou", "mask_iou", "mask_to_box"]

Box = tuple[float, float, float, float]


def _pair(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, target = np.asarray(pred) != 0, np.asarray(target) != 0
    if pred.shape != target.shape or pred.ndim != 2:
        raise ValueError(
            f"pred and target must be (H, W) masks of one shape: {pred.shape} vs {target.shape}"
        )
    return pred, target


def mask_iou(pred: np.ndarray, target: np.ndarray) -> float:
    """IoU of two ``(H, W)`` masks; 1.0 when both are empty."""
    pred, target = _pair(pred, target)
    union = np.count_nonzero(pred | target)
    return 1.0 if union == 0 else np.count_nonzero(pred & target) / union


def box_iou(a: Box | None, b: Box | None) -> float:
    """IoU of two pixel-edge boxes; 0.0 when either is None or has no area."""
    if a is None or b is None:
        return 0.0
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(iw, 0) * max(ih, 0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return 0.0 if union <= 0 else inter / union


@dataclass
class MaskMetrics:
    """Accumulates cIoU, gIoU, N-acc and T-acc over queries."""

    intersection: int = 0
    union: int = 0
    iou_sum: float = 0.0
    queries: int = 0
    empty_targets: int = 0
    empty_hits: int = 0
    target_queries: int = 0
    target_hits: int = 0

    def update(self, pred: np.ndarray, target: np.ndarray) -> float:
        """Add one query; returns its IoU (1.0 for empty on empty)."""
        pred, target = _pair(pred, target)
        inter = int(np.count_nonzero(pred & target))
        union = int(np.count_nonzero(pred | target))
        iou = 1.0 if union == 0 else inter / union
        self.intersection += inter
        self.union += union
        self.iou_sum += iou
        self.queries += 1
        pred_empty, target_empty = not pred.any(), not target.any()
        if target_empty:
            self.empty_targets += 1
            self.empty_hits += pred_empty
        else:
            self.target_queries += 1
            self.target_hits += not pred_empty
        return iou

    def merge(self, other: MaskMetrics) -> MaskMetrics:
        """Add another accumulator's counts to this one (every field is a sum); returns self."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    @property
    def ciou(self) -> float:
        return self.intersection / self.union if self.union else 0.0

    @property
    def giou(self) -> float:
        return self.iou_sum / self.queries if self.queries else math.nan

    @property
    def n_acc(self) -> float:
        return self.empty_hits / self.empty_targets if self.empty_targets else math.nan

    @property
    def t_acc(self) -> float:
        return self.target_hits / self.target_queries if self.target_queries else math.nan

    def compute(self) -> dict[str, float]:
        """``{"cIoU", "gIoU", "N-acc", "T-acc", "queries"}``."""
        return {
            "cIoU": self.ciou,
            "gIoU": self.giou,
            "N-acc": self.n_acc,
            "T-acc": self.t_acc,
            "queries": self.queries,
        }


@dataclass
class RecAccuracy:
    """REC Acc@0.5: a hit when the predicted box has IoU strictly above ``threshold``."""

    threshold: float = 0.5
    hits: int = 0
    queries: int = 0

    def update(self, pred: np.ndarray | Box | None, target_box: Box) -> bool:
        """Add one query. ``pred`` is a predicted mask (its tight box is used) or a box."""
        if isinstance(pred, np.ndarray):
            pred = mask_to_box(pred)
        hit = pred is not None and box_iou(pred, target_box) > self.threshold
        self.hits += hit
        self.queries += 1
        return hit

    def compute(self) -> dict[str, float]:
        acc = self.hits / self.queries if self.queries else math.nan
        return {"Acc@0.5": acc, "queries": self.queries}


class MeanIoU:
    """mIoU over a class list from ``(H, W)`` integer label maps (index ``i`` = ``names[i]``).

    Pixels whose target equals ``ignore_index`` are left out.
    """

    def __init__(self, names: Sequence[str], ignore_index: int | None = None) -> None:
        self.names = list(names)
        self.ignore_index = ignore_index
        k = len(self.names)
        self.intersection = np.zeros(k, dtype=np.int64)
        self.union = np.zeros(k, dtype=np.int64)

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        pred, target = np.asarray(pred), np.asarray(target)
        if pred.shape != target.shape:
            raise ValueError(f"pred and target shapes differ: {pred.shape} vs {target.shape}")
        keep = (
            np.ones(target.shape, bool)
            if self.ignore_index is None
            else target != self.ignore_index
        )
        k = len(self.names)
        p, t = pred[keep].astype(np.int64), target[keep].astype(np.int64)
        if p.size and (p.min() < 0 or p.max() >= k or t.min() < 0 or t.max() >= k):
            raise ValueError(f"class indices must lie in [0, {k})")
        inter = np.bincount(t[p == t], minlength=k)
        self.intersection += inter
        self.union += np.bincount(p, minlength=k) + np.bincount(t, minlength=k) - inter

    def per_class(self) -> dict[str, float]:
        """IoU per class name (NaN where the class never appeared in either map)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = self.intersection / self.union
        return {n: float(v) for n, v in zip(self.names, iou)}

    def compute(self) -> dict[str, float]:
        seen = self.union > 0
        miou = (
            float((self.intersection[seen] / self.union[seen]).mean()) if seen.any() else math.nan
        )
        return {"mIoU": miou, "classes_seen": int(seen.sum())}
