"""Goal and grid validation shared by every entry point (node, CLI, bag tools). ROS-free.

The perception node, ``text4seg-segment`` and the bag tools accept exactly the same goals:
:func:`validate_goal` checks the raw fields (text, task, id, classes) of one goal and
:func:`check_grid` the descriptor grid size, each raising :class:`GoalError` (a ``ValueError``)
that says what is wrong and what is allowed.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

from .descriptors.rrle import OTHERS, check_label
from .model.types import Goal
from .prompts import Task

# U+FFFD: rclpy decodes string fields with errors="replace", so non-UTF-8 bytes arrive as this.
REPLACEMENT_CHAR = "\ufffd"
MAX_ID_CHARS = 128
MAX_CLASSES = 64
DEFAULT_MAX_GOAL_CHARS = 256  # the node's max_goal_chars default
GRID_RANGE = (2, 64)  # descriptor grid sizes G the node and the CLI accept (inclusive)


class GoalError(ValueError):
    """A goal that cannot be accepted (bad text, unknown task, too many goals...)."""


def check_grid(grid: object, model_default: bool = False) -> int:
    """``grid`` as an int in :data:`GRID_RANGE` (or 0 with ``model_default``: the model's own
    grid, the node's parameter); :class:`GoalError` otherwise.

    G = 1 would answer every goal with one cell (the whole image); above 64 a descriptor runs
    past 4,000 cells, longer than any model was trained to write.
    """
    low, high = GRID_RANGE
    if isinstance(grid, bool) or not isinstance(grid, int):
        raise GoalError(f"grid must be an int, got {grid!r}")
    if model_default and grid == 0:
        return grid
    if not low <= grid <= high:
        allowed = (
            f"0 (the model's grid) or {low}..{high}"
            if model_default
            else f"an int in {low}..{high}"
        )
        raise GoalError(f"grid must be {allowed}, got {grid!r}")
    return grid


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
    max_chars: int = DEFAULT_MAX_GOAL_CHARS,
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
