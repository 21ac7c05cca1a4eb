"""The node's active language goals: replacement by id, one-shot bookkeeping (validation:
:mod:`text4seg_ros.goals`, shared with the CLI).

ROS-free. The executor thread adds, cancels and lists goals; the inference thread takes a
snapshot per frame and reports which goals it answered; a lock keeps both consistent. A
one-shot goal is removed only after a frame answered it (so it is never dropped silently),
and only if it was not replaced meanwhile.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# The validation is the core's (text4seg_ros.goals), shared with the CLI and the bag tools;
# re-exported here under the names the node has always used.
from ..goals import (  # noqa: F401
    MAX_CLASSES,
    MAX_ID_CHARS,
    REPLACEMENT_CHAR,
    GoalError,
    validate_goal,
)
from ..model.types import Goal


@dataclass(frozen=True)
class ActiveGoal:
    """A validated goal as held by the node; ``prepared``: what the segmenter's ``prepare``
    made of it when it was admitted (grammar and prompt, built once), or None."""

    goal: Goal
    standing: bool
    received: float = field(default_factory=time.monotonic)  # time.monotonic() seconds
    prepared: Any = field(default=None, compare=False, repr=False)


class GoalBook:
    """Thread-safe store of active goals, keyed by id, in arrival order."""

    def __init__(self, max_goals: int = 8) -> None:
        self.max_goals = max_goals
        self._goals: dict[str, ActiveGoal] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def add(self, goal: Goal, standing: bool, prepared: Any = None) -> ActiveGoal:
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
                Goal(text=goal.text, task=goal.task, id=goal_id, classes=goal.classes),
                standing,
                prepared=prepared,
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
