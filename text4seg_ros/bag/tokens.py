"""Answer tokens per goal, counted from the descriptor text an answer carries.

The node publishes what the model wrote (``Segmentation.descriptor``) and how many sequential
model forward calls the goal took (``model_steps``), but not the token count. The constrained
decoder writes the grammar's tokens for the descriptor: the tokenizer's own encoding of the
descriptor, which starts with the answer's grammar-written head (``<seg>`` for image-wise ones)
(:meth:`~text4seg_ros.descriptors.grammar_codec.TokenCodec.encode_piece`), and for box-wise
(B-SD) answers the end-of-turn token. Re-encoding the text with the model's tokenizer gives
that count without changing any message. Tokens per model call is then the decoding speed-up
of jump-forward and draft decoding with this model's real answers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from ..model.answers import plan_goal
from ..model.types import Goal
from .scoring import EvalRow

TokenCounter = Callable[[Goal, str], int]


def load_token_counter(model: str | Path, descriptor: str = "isd") -> TokenCounter:
    """A function ``(goal, descriptor_text) -> answer tokens`` with ``model``'s tokenizer.

    ``descriptor`` is the node's ``descriptor`` parameter (``isd`` or ``bsd``). Raises
    ``OSError``/``ValueError`` when the tokenizer cannot be loaded.
    """
    from transformers import AutoTokenizer

    from ..descriptors.grammar_codec import TokenCodec

    tokenizer = AutoTokenizer.from_pretrained(str(model))
    codec = TokenCodec(tokenizer)

    def count(goal: Goal, text: str) -> int:
        plan = plan_goal(goal, 0, descriptor)
        # The published descriptor starts with the grammar-written head ("<seg>") already.
        ids = codec.encode_piece(text if text.startswith(plan.head) else plan.head + text)
        return len(ids) + (1 if plan.kind == "bsd" else 0)  # B-SD ends with end-of-turn

    return count


def count_answer_tokens(
    rows: Iterable[EvalRow], goals: dict[str, Goal], count: TokenCounter
) -> int:
    """Fill ``answer_tokens`` of every answered row from its descriptor; returns how many."""
    done = 0
    for row in rows:
        goal = goals.get(row.goal_id)
        if row.status != "ok" or goal is None:
            continue
        try:
            row.answer_tokens = count(goal, row.descriptor)
        except ValueError:  # a descriptor the tokenizer cannot split as the grammar does
            continue
        done += 1
    return done
