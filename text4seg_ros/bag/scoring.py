"""Turn answers for (frame, goal) pairs into report rows and metrics.

One :class:`EvalRow` per (frame, goal) pair in the bag, answered or not. Metrics (from
:mod:`text4seg_ros.metrics`) are computed over the answered pairs that have ground truth:

* ``cIoU``, ``gIoU``, ``N-acc``, ``T-acc``: :class:`~text4seg_ros.metrics.MaskMetrics`.
* ``Acc@0.5``: :class:`~text4seg_ros.metrics.RecAccuracy` over pairs with a non-empty target
  (an empty target has no box to hit); an empty predicted mask is a miss.
* ``latency_s``: per-frame latency (``p50``, ``p90``, ``p99``, ``mean``, ``max``) over answered
  frames: ``set_image`` + ``segment`` for direct evaluation, the node's own ``latency_s``
  (frame received to result ready) through the node.

Pairs that were not answered (``status`` ``dropped``, ``missing`` or ``error``) count in
``failed_pairs`` and not in the metrics; frames with no answer at all count in ``dropped_frames``.

Metrics are also kept per goal kind (``per_kind``; the kind is the ``KIND`` of a ``KIND/FRAME/K``
goal id, else the task: :func:`~text4seg_ros.bag.record.goal_kind`) and, for bags of standing
goals, per goal. An open-vocabulary goal is scored class by class: each of its classes is one
query (predicted pixels of that class against true pixels of that class), so its cIoU is the
classes' total intersection over total union and its row IoU the mean over its classes.
Instances goals are scored on their whole answer (the union of the instances).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from ..metrics import MaskMetrics, RecAccuracy, box_iou, mask_to_box
from ..model.types import Goal
from ..prompts import Task
from .reader import Frame
from .record import goal_kind

STATUSES = ("ok", "dropped", "missing", "error")


@dataclass
class Answer:
    """A predicted answer to one goal on one frame; ``mask`` is ``(H, W)`` bool;
    ``label_map`` the ``(H, W)`` class indices of an open-vocabulary answer (else None)."""

    mask: np.ndarray
    score: float = 0.0
    model_steps: int = 0
    repairs: int = 0
    descriptor: str = ""
    label_map: np.ndarray | None = None
    error: str = ""  # non-empty: the goal failed on this frame (the node's Segmentation.error)


@dataclass
class EvalRow:
    """One (frame, goal) pair of the bag. ``status`` is one of :data:`STATUSES`.

    Boxes are ``[x1, y1, x2, y2]`` pixels (x2/y2 exclusive) or None when the mask is empty.
    Metric fields are None when the pair was not answered or has no ground truth.
    """

    frame: int
    stamp_ns: int
    goal_id: str
    goal_text: str
    task: str
    status: str
    has_ground_truth: bool
    iou: float | None = None
    pred_empty: bool | None = None
    gt_empty: bool | None = None
    pred_box: list[int] | None = None
    gt_box: list[int] | None = None
    box_iou: float | None = None
    hit: bool | None = None
    score: float | None = None
    model_steps: int | None = None
    repairs: int | None = None
    latency_s: float | None = None
    error: str = ""
    descriptor: str = ""  # what the model wrote (for looking into bad rows)
    kind: str = ""  # goal kind (see module doc)
    answer_tokens: int | None = None  # tokens of the answer (filled by the token counter)


@dataclass
class MontageSample:
    """A downscaled frame for the overlay montage: rgb ``(h, w, 3)``, masks ``(h, w)`` bool, or
    ``uint8`` label maps when ``labels`` (``["others", *classes]``) is set."""

    frame: int
    goal_text: str
    rgb: np.ndarray
    truth: np.ndarray | None
    pred: np.ndarray | None
    iou: float | None
    kind: str = ""
    labels: list[str] | None = None


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """``p50``, ``p90``, ``p99``, ``mean``, ``max`` of ``values`` (None for an empty list)."""
    if not values:
        return {"p50": None, "p90": None, "p99": None, "mean": None, "max": None}
    arr = np.asarray(values, dtype=np.float64)
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return {
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "mean": float(arr.mean()),
        "max": float(arr.max()),
    }


def _downscale(array: np.ndarray, width: int) -> np.ndarray:
    """Nearest-neighbour downscale to ``width`` columns (keeps the aspect ratio)."""
    h, w = array.shape[:2]
    if w <= width:
        return array.copy()
    height = max(1, round(h * width / w))
    rows = (np.arange(height) * h) // height
    cols = (np.arange(width) * w) // width
    return array[rows][:, cols].copy()


@dataclass
class Scorer:
    """Accumulates rows and metrics frame by frame.

    ``montage_frames``: frame indices whose overlay is kept (downscaled to ``montage_width``).
    """

    goals: list[Goal]
    montage_frames: set[int] = field(default_factory=set)
    montage_width: int = 320
    rows: list[EvalRow] = field(default_factory=list)
    samples: list[MontageSample] = field(default_factory=list)
    frame_latencies: list[float] = field(default_factory=list)
    frames: int = 0
    dropped_frames: int = 0

    def __post_init__(self) -> None:
        self.mask_metrics = MaskMetrics()
        self.rec = RecAccuracy()
        self.per_goal = {g.id: (MaskMetrics(), RecAccuracy()) for g in self.goals}
        self.per_kind: dict[str, tuple[MaskMetrics, RecAccuracy]] = {}
        self.goal_by_id: dict[str, Goal] = {g.id: g for g in self.goals}
        self.kind_tasks: dict[str, str] = {}  # kind -> task of its goals

    def add_frame(
        self,
        frame: Frame,
        answers: dict[str, Answer] | None,
        latency_s: float | None = None,
        error: str = "",
        status_if_absent: str = "missing",
    ) -> list[EvalRow]:
        """Score every goal on ``frame``; ``answers`` maps goal id to its answer.

        The goals are ``frame.goals`` (the scorer's ``goals`` when None). ``answers=None``
        means the frame got no answer at all (``error`` set: ``error`` rows, else ``dropped``).
        A goal absent from ``answers`` gets ``status_if_absent``. Returns this frame's rows.
        """
        self.frames += 1
        if answers is None:
            self.dropped_frames += 1
        elif latency_s is not None:
            self.frame_latencies.append(float(latency_s))
        new_rows = []
        goals = self.goals if frame.goals is None else frame.goals
        # The montage shows one goal per sampled frame: of the goals with truth, one of the kind
        # shown least so far (ties: the first), so the tiles cover the kinds of the bag.
        with_truth = [g for g in goals if g.id in frame.ground_truth] or goals[:1]
        shown = [s.kind for s in self.samples]
        sample_goal = min(with_truth, key=lambda g: shown.count(goal_kind(g)), default=None)
        for goal in goals:
            self.goal_by_id[goal.id] = goal
            truth = frame.ground_truth.get(goal.id)
            kind = goal_kind(goal)
            self.kind_tasks.setdefault(kind, goal.task.value)
            row = EvalRow(
                frame.index,
                frame.stamp_ns,
                goal.id,
                goal.text,
                goal.task.value,
                "ok",
                truth is not None,
                kind=kind,
            )
            if truth is not None:
                gt_box = mask_to_box(truth != 0)
                row.gt_empty, row.gt_box = gt_box is None, _box(gt_box)
            answer = None if answers is None else answers.get(goal.id)
            if answer is not None and answer.error:  # the goal failed alone on this frame
                row.status, row.error = "error", answer.error
                answer = None
            elif answer is None:
                row.status = (
                    ("error" if error else "dropped") if answers is None else status_if_absent
                )
                row.error = error
            else:
                self._score(row, goal, answer, truth, latency_s)
            new_rows.append(row)
            if goal is sample_goal and frame.index in self.montage_frames:
                self.samples.append(self._sample(frame, goal, truth, answer, row))
        self.rows.extend(new_rows)
        return new_rows

    def _sample(
        self,
        frame: Frame,
        goal: Goal,
        truth: np.ndarray | None,
        answer: Answer | None,
        row: EvalRow,
    ) -> MontageSample:
        labels = None
        pred = None if answer is None else answer.mask
        if goal.task is Task.OPEN_VOCAB:
            labels = ["others", *goal.classes]
            if answer is not None and answer.label_map is not None:
                pred = np.asarray(answer.label_map, dtype=np.uint8)
        width = self.montage_width
        return MontageSample(
            frame.index,
            goal.text,
            _downscale(frame.rgb, width),
            None if truth is None else _downscale(truth, width),
            None if pred is None else _downscale(pred, width),
            row.iou,
            row.kind,
            labels,
        )

    def _score(
        self,
        row: EvalRow,
        goal: Goal,
        answer: Answer,
        truth: np.ndarray | None,
        latency_s: float | None,
    ) -> None:
        pred = np.asarray(answer.mask) != 0
        pred_box = mask_to_box(pred) if pred.ndim == 2 else None
        row.pred_empty, row.pred_box = pred_box is None, _box(pred_box)
        row.score, row.model_steps, row.repairs = (
            float(answer.score),
            answer.model_steps,
            answer.repairs,
        )
        row.latency_s, row.descriptor = latency_s, answer.descriptor
        if truth is None:
            return
        if pred.shape != truth.shape:
            row.status, row.error = (
                "error",
                f"mask shape {pred.shape} != ground truth {truth.shape}",
            )
            return
        goal_metrics, goal_rec = self.per_goal.setdefault(goal.id, (MaskMetrics(), RecAccuracy()))
        kind_metrics, kind_rec = self.per_kind.setdefault(row.kind, (MaskMetrics(), RecAccuracy()))
        # Count the pair's pixels once and add the counts to the global, goal and kind totals.
        one = MaskMetrics()
        if goal.task is Task.OPEN_VOCAB:
            labels = pred if answer.label_map is None else np.asarray(answer.label_map)
            for c in range(1, len(goal.classes) + 1):  # one query per class
                one.update(labels == c, truth == c)
            row.iou = one.giou
        else:
            row.iou = one.update(pred, truth)
        for acc in (self.mask_metrics, goal_metrics, kind_metrics):
            acc.merge(one)
        if not row.gt_empty and goal.task is not Task.OPEN_VOCAB:
            gt_box = tuple(row.gt_box)
            row.box_iou = box_iou(pred_box, gt_box)
            row.hit = self.rec.update(pred_box, gt_box)
            goal_rec.update(pred_box, gt_box)
            kind_rec.update(pred_box, gt_box)

    def summary(self) -> dict:
        """Counts, metrics by name (NaN where undefined) and latency percentiles."""
        answered = sum(r.status == "ok" for r in self.rows)
        out = {
            "pairs_in_bag": len(self.rows),
            "frames": self.frames,
            "goals": [{"id": g.id, "text": g.text, "task": g.task.value} for g in self.goals],
            "answered_pairs": answered,
            "failed_pairs": len(self.rows) - answered,
            "scored_pairs": sum(r.iou is not None for r in self.rows),
            "dropped_frames": self.dropped_frames,
            **_metrics(self.mask_metrics, self.rec),
            "latency_s": percentiles(self.frame_latencies),
            "per_goal": {gid: _metrics(*acc) for gid, acc in self.per_goal.items()},
            "per_kind": {
                kind: {
                    "task": self.kind_tasks.get(kind, ""),
                    **self._kind_counts(kind),
                    **_metrics(*acc),
                    "counts": _counts(*acc),
                }
                for kind, acc in sorted(self.per_kind.items())
            },  # fmt: skip
            "decoding": decoding_summary(self.rows),
        }
        return out

    def _kind_counts(self, kind: str) -> dict[str, int]:
        mine = [r for r in self.rows if r.kind == kind]
        return {"pairs": len(mine), "answered": sum(r.status == "ok" for r in mine)}

    def rows_as_dicts(self) -> list[dict]:
        return [asdict(r) for r in self.rows]


def decoding_summary(rows: Sequence[EvalRow]) -> dict:
    """Sequential model calls per goal against answer tokens per goal, over answered rows.

    ``model_calls_per_goal``: mean ``model_steps`` (forward calls a goal took part in, its
    prompt-suffix prefill included); ``answer_tokens_per_goal``: mean ``answer_tokens`` (rows
    without a count are left out); ``tokens_per_call``: their ratio (tokens the decoder got per
    sequential model call: drafts accepted and grammar-forced runs). Also per kind.
    """

    def one(selected: list[EvalRow]) -> dict:
        counted = [r for r in selected if r.model_steps is not None and r.answer_tokens is not None]
        if not counted:
            return {"goals": 0, "model_calls_per_goal": None, "answer_tokens_per_goal": None,
                    "tokens_per_call": None}  # fmt: skip
        calls = float(np.mean([r.model_steps for r in counted]))
        tokens = float(np.mean([r.answer_tokens for r in counted]))
        return {
            "goals": len(counted),
            "model_calls_per_goal": calls,
            "answer_tokens_per_goal": tokens,
            "tokens_per_call": tokens / calls if calls else None,
        }

    answered = [r for r in rows if r.status == "ok"]
    kinds = sorted({r.kind for r in answered})
    return {
        **one(answered),
        "per_kind": {k: one([r for r in answered if r.kind == k]) for k in kinds},
    }


def _counts(masks: MaskMetrics, rec: RecAccuracy) -> dict[str, int | float]:
    """The accumulators' raw sums (so kinds can be merged later: :func:`group_metrics`)."""
    return {**asdict(masks), "rec_hits": rec.hits, "rec_queries": rec.queries}


def group_metrics(per_kind: dict, kinds: Sequence[str]) -> dict[str, float]:
    """Metrics of several kinds together, from the ``counts`` of a report's ``per_kind``
    (kinds absent from it are skipped; every metric NaN when none is present)."""
    masks, rec = MaskMetrics(), RecAccuracy()
    for kind in kinds:
        counts = dict(per_kind.get(kind, {}).get("counts") or {})
        if not counts:
            continue
        rec.hits += int(counts.pop("rec_hits"))
        rec.queries += int(counts.pop("rec_queries"))
        masks.merge(MaskMetrics(**counts))
    return _metrics(masks, rec)


def _box(box: tuple[int, int, int, int] | None) -> list[int] | None:
    return None if box is None else [int(v) for v in box]


def _metrics(masks: MaskMetrics, rec: RecAccuracy) -> dict[str, float]:
    values = masks.compute()
    # cIoU without any target or predicted pixel (no query, or only empty targets answered
    # empty) is undefined, not 0: say so instead of reporting a fake zero.
    ciou = values["cIoU"] if masks.union else math.nan
    return {
        "cIoU": ciou,
        "gIoU": values["gIoU"],
        "N-acc": values["N-acc"],
        "T-acc": values["T-acc"],
        "Acc@0.5": rec.compute()["Acc@0.5"],
    }
