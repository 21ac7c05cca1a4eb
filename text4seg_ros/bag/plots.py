"""Figures of an evaluation (matplotlib, Agg backend: no display needed).

* ``overlay_montage.png``: sampled frames, ground truth in green, prediction in red (overlap
  yellow), titled with frame index, goal kind and text, and IoU; an open-vocabulary goal's tile
  shows the predicted label map tinted per class and the true class borders, with a legend of
  the class colours.
* ``iou_per_frame.png``: IoU of every goal with ground truth, per frame (unanswered: gaps).
* ``latency.png``: per-frame latency over the run and its histogram, in milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: robots and CI have no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from .scoring import EvalRow, MontageSample  # noqa: E402


def overlay(rgb: np.ndarray, truth: np.ndarray | None, pred: np.ndarray | None) -> np.ndarray:
    """``(H, W, 3)`` uint8: ``rgb`` dimmed, truth tinted green, prediction red, both yellow."""
    out = rgb.astype(np.float32) * 0.55
    tint = np.zeros_like(out)
    if truth is not None:
        tint[..., 1] += truth * 255.0
    if pred is not None:
        tint[..., 0] += pred * 255.0
    covered = tint.any(axis=2, keepdims=True)
    out = np.where(covered, 0.5 * out + 0.5 * tint, out)
    return np.clip(out, 0, 255).astype(np.uint8)


# Class colours of label-map tiles (RGB 0..1), cycled; index 0 (others) is not drawn.
CLASS_COLOURS = plt.get_cmap("tab10").colors


def label_overlay(rgb: np.ndarray, truth: np.ndarray | None, pred: np.ndarray | None) -> np.ndarray:
    """``(H, W, 3)`` uint8: ``rgb`` dimmed, predicted classes tinted in their colour, borders of
    the true classes drawn in theirs (label maps: 0 = others, ``k`` = class ``k``)."""
    out = rgb.astype(np.float32) * 0.55
    colours = np.array(CLASS_COLOURS, dtype=np.float32) * 255.0
    if pred is not None:
        for k in np.unique(pred):
            if k:
                sel = pred == k
                out[sel] = 0.45 * out[sel] + 0.55 * colours[(k - 1) % len(colours)]
    if truth is not None:
        edge = np.zeros(truth.shape, dtype=bool)
        edge[:-1] |= truth[:-1] != truth[1:]
        edge[:, :-1] |= truth[:, :-1] != truth[:, 1:]
        for k in np.unique(truth[edge]):
            if k:
                out[edge & (truth == k)] = colours[(k - 1) % len(colours)]
    return np.clip(out, 0, 255).astype(np.uint8)


def _title(s: MontageSample) -> str:
    iou = "n/a" if s.iou is None else f"{s.iou:.2f}"
    answer = "" if s.pred is not None else " (no answer)"
    kind = f" [{s.kind}]" if s.kind else ""
    text = s.goal_text if len(s.goal_text) <= 34 else s.goal_text[:33] + "..."
    return f"frame {s.frame}{kind}: IoU {iou}{answer}\n{text}"


def save_montage(samples: Sequence[MontageSample], path: Path, columns: int = 4) -> None:
    """Grid of overlays of ``samples`` (at least one tile; a note when there is none)."""
    count = max(1, len(samples))
    cols = min(columns, count)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    if not samples:
        axes[0, 0].text(0.5, 0.5, "no frames", ha="center", va="center")
    for ax, s in zip(axes.flat, samples):
        if s.labels is None:
            ax.imshow(overlay(s.rgb, s.truth, s.pred))
        else:
            ax.imshow(label_overlay(s.rgb, s.truth, s.pred))
            handles = [
                Patch(color=CLASS_COLOURS[(k - 1) % len(CLASS_COLOURS)], label=name)
                for k, name in enumerate(s.labels[1:], start=1)
            ]
            ax.legend(handles=handles, fontsize=6, loc="lower left", framealpha=0.7)
        ax.set_title(_title(s), fontsize=7)
    fig.suptitle(
        "green: ground truth, red: prediction, yellow: both; label maps: fill = predicted "
        "class, outline = true class (legend)",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_iou_plot(rows: Sequence[EvalRow], path: Path) -> None:
    """IoU per frame, one line per goal with ground truth."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    goals = dict.fromkeys(r.goal_id for r in rows if r.has_ground_truth)
    for gid in goals:
        mine = [r for r in rows if r.goal_id == gid]
        x = [r.frame for r in mine]
        y = [np.nan if r.iou is None else r.iou for r in mine]
        ax.plot(x, y, marker=".", label=f"{gid}: {mine[0].goal_text}"[:40])
    if goals:
        ax.legend(fontsize=7, loc="best")
    else:
        ax.text(0.5, 0.5, "no ground truth", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("frame")
    ax.set_ylabel("IoU")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_latency_plot(latencies_s: Sequence[float], path: Path, title: str = "latency") -> None:
    """Per-frame latency (ms) over the run and its histogram."""
    ms = np.asarray(latencies_s, dtype=np.float64) * 1000.0
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3))
    if ms.size:
        left.plot(np.arange(ms.size), ms, marker=".", linewidth=0.8)
        right.hist(ms, bins=min(30, max(5, ms.size // 3)))
        for q, style in ((50, "-"), (90, "--"), (99, ":")):
            right.axvline(np.percentile(ms, q), color="k", linestyle=style, label=f"p{q}")
        right.legend(fontsize=7)
    else:
        left.text(0.5, 0.5, "no answered frame", ha="center", va="center", transform=left.transAxes)
    left.set_xlabel("answered frame")
    left.set_ylabel("ms")
    right.set_xlabel("ms")
    right.set_ylabel("frames")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
