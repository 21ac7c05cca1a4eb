"""Goal validation and the active-goal book (text4seg_ros.ros.goals); ROS-free."""

from __future__ import annotations

import threading

import pytest

from text4seg_ros.model.types import Goal
from text4seg_ros.prompts import Task
from text4seg_ros.ros.goals import GoalBook, GoalError, validate_goal


def test_valid_goals_are_normalised():
    g = validate_goal("  the red mug ", "", "mug")
    assert g == Goal(text="the red mug", task=Task.RES, id="mug")
    assert validate_goal("cup", "GRES").task is Task.GRES
    ov = validate_goal("", "open_vocab", classes=["others", "cup", " chair "])
    assert ov.classes == ("cup", "chair") and ov.text == "cup|chair"
    assert validate_goal("kitchen", "open_vocab", classes=["cup"]).text == "kitchen"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(text=""), "goal text is empty"),
        (dict(text=" \t "), "goal text is empty"),
        (dict(text="x" * 300), "300 characters; max_goal_chars is 256"),
        (dict(text="caf\ufffd"), "not valid UTF-8"),
        (dict(text="cup", task="teleport"), "unknown task 'teleport'; allowed: res, gres"),
        (dict(text="a\nb"), "control characters"),
        (dict(text="cup *3"), "descriptor syntax"),
        (dict(text="cup", classes=["a"]), "only allowed for open_vocab"),
        (dict(text="kitchen", task="open_vocab"), "needs a non-empty class list"),
        (dict(text="others"), "background label"),
        (dict(text="", task="open_vocab", classes=["a", "a"]), "unique"),
        (dict(text="cup", goal_id="i" * 200), "goal id has 200 characters"),
    ],
)
def test_bad_goals_raise_goal_error(kwargs, match):
    with pytest.raises(GoalError, match=match):
        validate_goal(**kwargs)
    assert issubclass(GoalError, ValueError)


def test_ids_are_assigned_and_replacing_keeps_one_goal():
    book = GoalBook(max_goals=3)
    a = book.add(Goal("cup"), standing=True)
    b = book.add(Goal("mug"), standing=False)
    assert (a.goal.id, b.goal.id) == ("g1", "g2")
    c = book.add(Goal("plate", id="g1"), standing=False)
    assert [e.goal.text for e in book.snapshot()] == ["mug", "plate"]
    assert c.goal.id == "g1" and not c.standing
    assert book.add(Goal("fork"), standing=True).goal.id == "g3"
    with pytest.raises(GoalError, match="max_goals 3"):
        book.add(Goal("knife"), standing=True)
    book.add(Goal("spoon", id="g3"), standing=True)  # replacing is allowed when full
    assert len(book) == 3


def test_one_shot_goals_retire_only_when_answered_and_not_replaced():
    book = GoalBook()
    one = book.add(Goal("cup", id="a"), standing=False)
    stay = book.add(Goal("mug", id="b"), standing=True)
    snap = book.snapshot()
    assert snap == [one, stay]
    assert book.answered(snap) == [one]
    assert book.snapshot() == [stay]
    # replaced between snapshot and answer: the new goal must survive
    old = book.add(Goal("cup", id="c"), standing=False)
    snap = book.snapshot()
    new = book.add(Goal("bowl", id="c"), standing=False)
    assert book.answered(snap) == []
    assert new in book.snapshot() and old not in book.snapshot()


def test_cancel_and_clear():
    book = GoalBook()
    book.add(Goal("cup", id="a"), True)
    book.add(Goal("mug", id="b"), True)
    assert book.cancel("a") and not book.cancel("a")
    assert book.clear() == 1 and book.snapshot() == []


def test_concurrent_adds_never_exceed_max_goals():
    book = GoalBook(max_goals=10)
    errors = []

    def add_many(offset: int) -> None:
        for i in range(50):
            try:
                book.add(Goal(f"goal {offset} {i}"), True)
            except GoalError:
                errors.append(i)

    threads = [threading.Thread(target=add_many, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(book) == 10 and len(errors) == 190
    assert len({e.goal.id for e in book.snapshot()}) == 10
