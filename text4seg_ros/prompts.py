"""Question and answer templates for every task, shared by training data and inference.

Questions are plain text; the backbone's chat template adds the image placeholder. At
inference, :func:`question` uses template 0 so results are reproducible; training draws a
template with a ``random.Random``. Answers wrap a descriptor in the SPEC section 2 form::

    Sure, here is the segmentation mask for 'cup':\\n<seg>BODY</seg>

Open-vocabulary questions come in three kinds drawn 1 : 3 : 6 (SPEC section 4): label every
class present, label a listed subset, or label from a candidate list that also names absent
classes (distractors). Class lists are joined with ``|``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from enum import StrEnum

from .descriptors.rrle import OTHERS, SEG_CLOSE, SEG_OPEN, check_label


class Task(StrEnum):
    """Goal kinds; the values are the strings used on the ROS ``Goal.task`` field."""

    RES = "res"  # referring segmentation: one target
    GRES = "gres"  # generalised RES: zero, one or several targets share the label
    REC = "rec"  # referring comprehension: the box is the tight box of the mask
    OPEN_VOCAB = "open_vocab"  # label map over a class list
    INSTANCES = "instances"  # box-wise descriptors (B-SD), one triple per instance
    REASON = "reason"  # reasoning goal: the target is implied, not named

    @classmethod
    def parse(cls, value: str | Task) -> Task:
        """``Task`` from its value (case-insensitive; empty means RES); ValueError otherwise."""
        if isinstance(value, Task):
            return value
        if not isinstance(value, str):
            raise TypeError(f"task must be a str, got {type(value).__name__}")
        key = value.strip().lower() or cls.RES.value
        try:
            return cls(key)
        except ValueError:
            allowed = ", ".join(t.value for t in cls)
            raise ValueError(f"unknown task {value!r}; allowed: {allowed}") from None


class OpenVocabKind(StrEnum):
    """The three open-vocabulary question kinds."""

    ALL = "all"
    PARTIAL = "partial"
    CANDIDATES = "candidates"


OPEN_VOCAB_WEIGHTS: dict[OpenVocabKind, int] = {
    OpenVocabKind.ALL: 1,
    OpenVocabKind.PARTIAL: 3,
    OpenVocabKind.CANDIDATES: 6,
}

REFERRING_QUESTIONS: tuple[str, ...] = (
    "Can you segment the {text} in the image?",
    "Please segment the {text} in this image.",
    "What is {text} in this image? Please respond with a segmentation mask.",
    "Segment {text} in the picture.",
    "Where is the {text}? Answer with a segmentation mask.",
)
REASON_QUESTIONS: tuple[str, ...] = (
    "{text} Please respond with a segmentation mask.",
    "{text} Answer with the segmentation mask of what fits.",
)
INSTANCE_QUESTIONS: tuple[str, ...] = (
    "Find every {text} in the image; give a box and a mask for each.",
    "Locate all instances of {text} with boxes and masks.",
)
OPEN_VOCAB_QUESTIONS: dict[OpenVocabKind, tuple[str, ...]] = {
    OpenVocabKind.ALL: (
        "Please segment everything in the image by class.",
        "Label every object and region in this image.",
    ),
    OpenVocabKind.PARTIAL: (
        "Please segment these classes in the image: {classes}.",
        "Label the following classes in the image: {classes}.",
    ),
    OpenVocabKind.CANDIDATES: (
        "Please segment the image using these candidate classes: {classes}.",
        "Which of these classes appear in the image? Label them: {classes}.",
    ),
}

REFERRING_ANSWER = "Sure, here is the segmentation mask for '{label}':\n"
OPEN_VOCAB_ANSWER = "Sure, here is the segmentation mask:\n"
INSTANCE_ANSWER = "Sure, here are the instances of '{label}':\n"


def _pick(templates: Sequence[str], rng: random.Random | None) -> str:
    return templates[0] if rng is None else rng.choice(templates)


def join_classes(classes: Sequence[str]) -> str:
    """Class list as written in prompts: names joined with ``|``."""
    return "|".join(check_label(c, "class name") for c in classes)


def question(
    task: Task | str,
    text: str = "",
    classes: Sequence[str] | None = None,
    kind: OpenVocabKind | None = None,
    rng: random.Random | None = None,
) -> str:
    """The user question for a goal.

    ``text`` is the referring expression / class name / reasoning sentence. For open vocabulary
    ``classes`` lists the class names offered (``others`` excluded) and ``kind`` picks the
    question kind (default: ALL when ``classes`` is empty, else CANDIDATES). ``rng`` draws a
    template at random (training); without it template 0 is used (inference).
    """
    task = Task.parse(task)
    if task is Task.OPEN_VOCAB:
        names = [c for c in (classes or []) if c != OTHERS]
        if kind is None:
            kind = OpenVocabKind.CANDIDATES if names else OpenVocabKind.ALL
        if kind is not OpenVocabKind.ALL and not names:
            raise ValueError(f"open-vocabulary question of kind {kind.value!r} needs classes")
        return _pick(OPEN_VOCAB_QUESTIONS[kind], rng).format(classes=join_classes(names))
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"task {task.value!r} needs a non-empty goal text")
    text = text.strip()
    if task is Task.REASON:
        return _pick(REASON_QUESTIONS, rng).format(text=text)
    if task is Task.INSTANCES:
        return _pick(INSTANCE_QUESTIONS, rng).format(text=text)
    return _pick(REFERRING_QUESTIONS, rng).format(text=text)


def answer_prefix(task: Task | str, label: str = "") -> str:
    """The answer text before the descriptor (ends with a newline); ``label`` for referring."""
    task = Task.parse(task)
    if task is Task.OPEN_VOCAB:
        return OPEN_VOCAB_ANSWER
    if task is Task.INSTANCES:
        return INSTANCE_ANSWER.format(label=label)
    return REFERRING_ANSWER.format(label=label)


def format_answer(task: Task | str, body: str, label: str = "") -> str:
    """Full answer: prefix plus ``<seg>BODY</seg>`` (I-SD), or prefix plus B-SD triples."""
    task = Task.parse(task)
    if task is Task.INSTANCES:
        return answer_prefix(task, label) + body
    return f"{answer_prefix(task, label)}{SEG_OPEN}{body}{SEG_CLOSE}"


def draw_open_vocab_kind(rng: random.Random) -> OpenVocabKind:
    """Draw a question kind with the 1 : 3 : 6 ratio of the paper."""
    kinds = list(OPEN_VOCAB_WEIGHTS)
    return rng.choices(kinds, weights=[OPEN_VOCAB_WEIGHTS[k] for k in kinds])[0]


def open_vocab_classes(
    kind: OpenVocabKind,
    present: Sequence[str],
    vocabulary: Sequence[str],
    rng: random.Random,
    max_distractors: int = 5,
) -> list[str]:
    """Class names a question of ``kind`` offers, in a shuffled order.

    ALL: every present class. PARTIAL: a non-empty random subset of the present classes (the
    others then count as ``others`` in the answer). CANDIDATES: all present classes plus up to
    ``max_distractors`` absent classes from ``vocabulary``.
    """
    present = [c for c in dict.fromkeys(present) if c != OTHERS]
    if not present:
        raise ValueError("open-vocabulary sample needs at least one present class")
    if kind is OpenVocabKind.ALL:
        chosen = list(present)
    elif kind is OpenVocabKind.PARTIAL:
        chosen = rng.sample(present, rng.randint(1, len(present)))
    else:
        absent = [c for c in vocabulary if c not in present and c != OTHERS]
        chosen = present + rng.sample(absent, min(len(absent), rng.randint(1, max_distractors)))
    rng.shuffle(chosen)
    return chosen
