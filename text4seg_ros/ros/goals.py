"""The node's active language goals: validation, replacement by id, one-shot bookkeeping.

ROS-free. The executor thread adds, cancels and lists goals; the inference thread takes a
snapshot per frame and reports which goals it answered; a lock keeps both consistent. A
one-shot goal is removed only after a frame answered it (so it is never dropped silently),
and only if it was not replaced meanwhile.
"""

from __future__ import annotations

import itertools
import threading
import time
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ..descriptors.rrle import OTHERS, check_label
from ..model.types import Goal
from ..prompts import Task

# U+FFFD: rclpy decodes string fields with errors="replace", so non-UTF-8 bytes arrive as this.
REPLACEMENT_CHAR = "\ufffd"
MAX_ID_CHARS = 128
MAX_CLASSES = 64


class GoalError(ValueError):
    """A goal that cannot be accepted (bad text, unknown task, too many goals...)."""


@dataclass(frozen=True)
class ActiveGoal:
    """A validated goal as held by the node."""

    goal: Goal
    standing: bool
    received: float = field(default_factory=time.monotonic)  # time.monotonic() seconds


def _check_text(text: str, what: str, max_chars: int) -> str:
    if not isinstance(text, str):
        raise GoalError(f"{what} must be a str, got {type(text).__name__}")
    if REPLACEMENT_CHAR in text:
        raise GoalError(f"{what} is not valid UTF-8 (undecodable bytes)")
    text = text.strip()
    if not text:
        raise GoalError(f"{what} is empty")
    if len(text) > max_chars:
        raise GoalError(f"{what} has {len(text)} characters; max_goal_chars is {max_chars}")
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in text):
        raise GoalError(f"{what} contains control characters (newlines, tabs, NUL...)")
    try:
        return check_label(text, what)
    except ValueError as exc:
        raise GoalError(str(exc)) from None


def validate_goal(
    text: str,
    task: str = "",
    goal_id: str = "",
    classes: Sequence[str] = (),
    max_chars: int = 256,
) -> Goal:
    """A :class:`Goal` from raw fields, or :class:`GoalError` saying what is wrong.

    ``text`` is stripped; it must be non-empty (open-vocabulary goals: optional, their
    ``classes`` list is required), at most ``max_chars`` characters, valid UTF-8, not
    ``others`` and free of descriptor syntax. ``task``
    is a :class:`Task` value (empty: RES).
    """
    try:
        parsed = Task.parse(task)
    except (TypeError, ValueError) as exc:
        raise GoalError(str(exc)) from None
    goal_id = goal_id.strip()
    if len(goal_id) > MAX_ID_CHARS:
        raise GoalError(f"goal id has {len(goal_id)} characters; at most {MAX_ID_CHARS}")
    if REPLACEMENT_CHAR in goal_id:
        raise GoalError("goal id is not valid UTF-8 (undecodable bytes)")
    names: list[str] = []
    if parsed is Task.OPEN_VOCAB:
        if len(classes) > MAX_CLASSES:
            raise GoalError(f"open_vocab goal has {len(classes)} classes; at most {MAX_CLASSES}")
        names = [_check_text(c, "class name", max_chars) for c in classes if c.strip() != OTHERS]
        if len(set(names)) != len(names):
            raise GoalError(f"class names must be unique, got {names!r}")
        if not names:
            raise GoalError("open_vocab goal needs a non-empty class list (`classes`)")
        text = text.strip()
        text = _check_text(text, "goal text", max_chars) if text else "|".join(names)
    else:
        if classes:
            raise GoalError(f"classes are only allowed for open_vocab goals, not {parsed.value!r}")
        text = _check_text(text, "goal text", max_chars)
        if text == OTHERS:
            raise GoalError(f"goal text must not be {OTHERS!r}: that is the background label")
    return Goal(text=text, task=parsed, id=goal_id, classes=tuple(names))


class GoalBook:
    """Thread-safe store of active goals, keyed by id, in arrival order."""

    def __init__(self, max_goals: int = 8) -> None:
        self.max_goals = max_goals
        self._goals: dict[str, ActiveGoal] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def add(self, goal: Goal, standing: bool) -> ActiveGoal:
        """Add ``goal`` (replacing an active goal with the same id); return it with its id.

        An empty id gets a fresh ``gN``. Raises :class:`GoalError` when ``max_goals`` goals are
        active and the id is new.
        """
        with self._lock:
            goal_id = goal.id
            if not goal_id:
                goal_id = next(i for i in (f"g{n}" for n in self._ids) if i not in self._goals)
            if goal_id not in self._goals and len(self._goals) >= self.max_goals:
                raise GoalError(
                    f"{len(self._goals)} goals are active (max_goals {self.max_goals}); "
                    "cancel or clear goals first"
                )
            entry = ActiveGoal(
                Goal(text=goal.text, task=goal.task, id=goal_id, classes=goal.classes), standing
            )
            self._goals.pop(goal_id, None)  # a replaced goal moves to the end
            self._goals[goal_id] = entry
            return entry

    def cancel(self, goal_id: str) -> bool:
        """Remove the goal ``goal_id``; False when no such goal is active."""
        with self._lock:
            return self._goals.pop(goal_id, None) is not None

    def clear(self) -> int:
        """Remove every goal; return how many were active."""
        with self._lock:
            count = len(self._goals)
            self._goals.clear()
            return count

    def snapshot(self) -> list[ActiveGoal]:
        """The active goals in arrival order (what the next frame answers)."""
        with self._lock:
            return list(self._goals.values())

    def answered(self, entries: Iterable[ActiveGoal]) -> list[ActiveGoal]:
        """Retire the one-shot goals among ``entries`` that are still the active ones.

        Returns the retired goals. Standing goals, and goals replaced since the snapshot, stay.
        """
        retired = []
        with self._lock:
            for entry in entries:
                if not entry.standing and self._goals.get(entry.goal.id) is entry:
                    del self._goals[entry.goal.id]
                    retired.append(entry)
        return retired

    def __len__(self) -> int:
        with self._lock:
            return len(self._goals)
