"""From goals to prompts and grammars, and from descriptor text back to masks.

One :class:`GoalPlan` per goal says what the model is asked (the question), what the answer
starts with (forced, part of the prompt suffix), which grammar constrains the rest, and how the
descriptor is read back (:func:`read_answer`):

========================  =============================  ====================================
task                      descriptor written              read back as
========================  =============================  ====================================
RES, REC, REASON          I-SD ``<seg>`` R-RLE, labels    mask of the goal text's cells
                          {others, goal text}
GRES                      the same (all ``others`` =     the same; empty mask is a valid answer
                          no target)
OPEN_VOCAB                I-SD over {others, classes}    ``label_map`` (0 = others), mask = any
INSTANCES (or any         B-SD triples (box + grid over  one result per instance; mask = union
referring task when       the box), then end of turn
``descriptor="bsd"``)
========================  =============================  ====================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from ..descriptors import OTHERS, SEG_OPEN, grid_to_labels, parse_rrle
from ..descriptors.bsd import dequantize_box, encode_instances, parse_bsd
from ..descriptors.rrle import SEG_CLOSE, Repair, check_label, encode_grid
from ..metrics import mask_to_box
from ..prompts import Task, answer_prefix, question
from .types import Goal, GoalResult

DESCRIPTORS: tuple[str, ...] = ("isd", "bsd")
REFERRING = (Task.RES, Task.GRES, Task.REC, Task.REASON)


@dataclass(frozen=True)
class GoalPlan:
    """How one goal is asked and read: ``kind`` is ``"isd"``, ``"open_vocab"`` or ``"bsd"``;
    ``names``: label set (``names[0] == 'others'``); ``question`` and ``answer_start`` (the
    forced beginning of the answer: the answer sentence, then ``<seg>`` for I-SD).

    ``answer_start`` is cut in two where every supported tokenizer cuts the whole answer text
    too: after its last newline. :attr:`prompt_answer` (the sentence up to that newline) ends
    the prompt suffix; ``head`` (``"<seg>"`` for I-SD, ``""`` for B-SD) is forced by the
    grammar, glued to the first label. Tokenized whole, ``"...':\\n<seg>others"`` is not
    ``"...':\\n<seg>"`` + ``"others"`` (Qwen writes ``"<seg"`` ``">others"``), so a suffix
    ending at ``<seg>`` would feed the model a split it never saw in training."""

    goal: Goal
    task: Task
    kind: str
    names: tuple[str, ...]
    question: str
    answer_start: str

    @property
    def head(self) -> str:
        """End of ``answer_start`` that the grammar writes (after its last newline)."""
        return self.answer_start[self.answer_start.rfind("\n") + 1 :]

    @property
    def prompt_answer(self) -> str:
        """Beginning of ``answer_start`` that ends the prompt suffix (up to its last newline)."""
        return self.answer_start[: len(self.answer_start) - len(self.head)]


def sample_descriptor(plan: GoalPlan, grid: int, instances: int = 2) -> str:
    """A valid descriptor for ``plan`` (the text after ``answer_start``) whose first label is
    the goal's first class, the one glued to ``<seg>``: for boundary checks and tests.

    I-SD: a ``grid`` x ``grid`` body (a block of ``names[1]`` top left on ``others``, and every
    other class on a row of its own) and ``</seg>``; B-SD: ``instances`` (1 or 2) triples."""
    if plan.kind == "bsd":
        masks = [np.zeros((64, 64), bool), np.zeros((64, 64), bool)]
        masks[0][4:40, 8:30] = True
        masks[1][30:60, 40:63] = True
        return encode_instances(masks[: max(1, min(2, instances))], plan.names[1], grid)
    cells = np.zeros((grid, grid), np.int64)
    cells[: max(1, grid // 2), : max(1, grid // 2)] = 1
    for i in range(2, len(plan.names)):
        cells[min(grid - 1, i)] = i
    return encode_grid(cells, plan.names) + SEG_CLOSE


def plan_goal(goal: Goal, index: int = 0, descriptor: str = "isd") -> GoalPlan:
    """The :class:`GoalPlan` of ``goal``; TypeError/ValueError naming the goal when invalid."""
    where = f"goal {index}" + (f" (id {goal.id!r})" if getattr(goal, "id", "") else "")
    if not isinstance(goal, Goal):
        raise TypeError(f"{where}: expected a Goal, got {type(goal).__name__}")
    try:
        task = Task.parse(goal.task)
        if task is Task.OPEN_VOCAB:
            classes = tuple(goal.classes)
            if not classes:
                raise ValueError("open-vocabulary goals need a non-empty classes list")
            names = (OTHERS, *(check_label(c, "class name") for c in classes))
            if len(set(names)) != len(names):
                raise ValueError(f"classes must be unique and not {OTHERS!r}, got {classes!r}")
            text = question(task, classes=list(classes))
            return GoalPlan(goal, task, "open_vocab", names, text, answer_prefix(task) + SEG_OPEN)
        label = check_label(goal.text.strip() if isinstance(goal.text, str) else goal.text)
        if label == OTHERS:
            raise ValueError(f"goal text must not be {OTHERS!r} (the background label)")
        if task is Task.INSTANCES or descriptor == "bsd":
            text = question(Task.INSTANCES, label)
            start = answer_prefix(Task.INSTANCES, label)
            return GoalPlan(goal, task, "bsd", (OTHERS, label), text, start)
        text = question(task, label)
        return GoalPlan(
            goal, task, "isd", (OTHERS, label), text, answer_prefix(task, label) + SEG_OPEN
        )
    except (TypeError, ValueError) as err:
        raise type(err)(f"{where}: {err}") from None


class AnswerInstance(NamedTuple):
    """One B-SD instance of an answer: ``mask`` ``(H, W)`` bool, ``text`` its own triple (or
    the whole answer when the triples could not be told apart), ``box`` the pixel box the model
    wrote (edges, x2/y2 exclusive; the refiner's box prompt, not the mask's tight box)."""

    label: str
    mask: np.ndarray
    text: str
    box: tuple[int, int, int, int]


@dataclass
class Answer:
    """A decoded answer before timings: what :class:`GoalResult` needs from the text."""

    mask: np.ndarray
    labels: list[str]
    descriptor: str
    label_map: np.ndarray | None = None
    instances: list[AnswerInstance] = field(default_factory=list)
    repairs: list[Repair] = field(default_factory=list)


def read_answer(plan: GoalPlan, text: str, size: tuple[int, int], grid: int) -> Answer:
    """Read the generated ``text`` (after the forced answer start) at image ``size = (H, W)``.

    For I-SD the descriptor is ``"<seg>" + text`` (the model writes the body and ``</seg>``);
    for B-SD it is the triples as written.
    """
    if plan.kind == "bsd":
        parsed, repairs = parse_bsd(text, [plan.names[1]], grid)  # parsed once
        # Triples are joined by "\n" and every one starts with "<ref>" (rows inside a body are
        # joined by "\n " instead), so this split gives each instance its own descriptor.
        triples = [t for t in re.split(r"\n(?=<ref>)", text) if t.strip()]
        if len(triples) != len(parsed):  # a triple was unreadable (unconstrained text only)
            triples = [text] * len(parsed)
        mask = np.zeros(size, dtype=bool)
        instances = []
        for inst, triple in zip(parsed, triples):
            x1, y1, x2, y2 = box = dequantize_box(inst.qbox, size)
            own = np.zeros(size, dtype=bool)
            own[y1:y2, x1:x2] = grid_to_labels(inst.grid, (y2 - y1, x2 - x1))
            mask |= own
            instances.append(AnswerInstance(inst.label, own, triple, box))
        return Answer(mask, list(plan.names), text, instances=instances, repairs=repairs)
    descriptor = SEG_OPEN + text
    parsed = parse_rrle(descriptor, plan.names, grid)
    if plan.kind == "open_vocab":
        label_map = grid_to_labels(parsed.grid, size)
        return Answer(
            label_map > 0, list(plan.names), descriptor, label_map, repairs=parsed.repairs
        )
    # the mask only: upsample the grid's foreground (bool), not an int64 label map
    mask = grid_to_labels(parsed.grid > 0, size)
    return Answer(mask, list(plan.names), descriptor, repairs=parsed.repairs)


def to_result(plan: GoalPlan, answer: Answer, score: float, steps: int) -> GoalResult:
    """A :class:`GoalResult` (timings filled in by the caller); boxes are tight mask boxes.

    B-SD instances carry their own triple as ``descriptor`` and the goal's score and steps.
    """
    instances = [
        GoalResult(
            goal=plan.goal,
            mask=mask,
            box=mask_to_box(mask),
            score=score,
            descriptor=triple,
            labels=[label],
            model_steps=steps,
        )
        for label, mask, triple, _ in answer.instances
    ]
    return GoalResult(
        goal=plan.goal,
        mask=answer.mask,
        box=mask_to_box(answer.mask),
        score=score,
        descriptor=answer.descriptor,
        labels=answer.labels,
        model_steps=steps,
        label_map=answer.label_map,
        instances=instances,
        repairs=list(answer.repairs),
    )
