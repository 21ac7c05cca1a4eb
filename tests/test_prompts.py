"""Prompt templates: task parsing, questions, the SPEC answer wrapper, open-vocab draws."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from text4seg_ros.prompts import (
    OpenVocabKind,
    Task,
    draw_open_vocab_kind,
    format_answer,
    open_vocab_classes,
    question,
)


def test_task_parse() -> None:
    assert Task.parse("") is Task.RES and Task.parse(" GRES ") is Task.GRES
    with pytest.raises(ValueError, match="allowed: res, gres"):
        Task.parse("detect")
    with pytest.raises(TypeError):
        Task.parse(3)


def test_referring_question_and_answer_follow_spec() -> None:
    assert (
        question("res", "white horse on left")
        == "Can you segment the white horse on left in the image?"
    )
    answer = format_answer(Task.RES, "others *4\n", "cup")
    assert answer == "Sure, here is the segmentation mask for 'cup':\n<seg>others *4\n</seg>"
    assert format_answer(Task.INSTANCES, "<ref>cup</ref>", "cup").endswith(":\n<ref>cup</ref>")


def test_templates_are_drawn_with_an_rng_and_fixed_without() -> None:
    rng = random.Random(0)
    drawn = {question(Task.RES, "cup", rng=rng) for _ in range(50)}
    assert len(drawn) > 1 and all("cup" in q for q in drawn)
    assert question(Task.REASON, "I am thirsty.").startswith("I am thirsty.")
    with pytest.raises(ValueError, match="non-empty goal text"):
        question(Task.RES, "  ")


def test_open_vocab_kinds_are_drawn_1_3_6() -> None:
    rng = random.Random(1)
    counts = Counter(draw_open_vocab_kind(rng) for _ in range(10_000))
    assert counts[OpenVocabKind.ALL] == pytest.approx(1000, rel=0.15)
    assert counts[OpenVocabKind.PARTIAL] == pytest.approx(3000, rel=0.08)
    assert counts[OpenVocabKind.CANDIDATES] == pytest.approx(6000, rel=0.05)


def test_open_vocab_class_lists() -> None:
    rng = random.Random(2)
    present, vocab = ["cup", "plate"], ["cup", "plate", "fork", "knife", "bowl"]
    assert sorted(open_vocab_classes(OpenVocabKind.ALL, present, vocab, rng)) == present
    partial = open_vocab_classes(OpenVocabKind.PARTIAL, present, vocab, rng)
    assert partial and set(partial) <= set(present)
    cands = open_vocab_classes(OpenVocabKind.CANDIDATES, present, vocab, rng)
    assert set(present) < set(cands) <= set(vocab)
    q = question(Task.OPEN_VOCAB, classes=cands, kind=OpenVocabKind.CANDIDATES)
    assert "|".join(cands) in q
    with pytest.raises(ValueError, match="needs classes"):
        question(Task.OPEN_VOCAB, kind=OpenVocabKind.PARTIAL)
