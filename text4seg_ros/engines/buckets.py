"""Shape buckets of the CUDA-graph mode: which captured graph serves a decoder call.

A CUDA graph replays fixed shapes, so a call of ``B`` rows, a block of ``T`` tokens and a cache
of ``L`` used slots runs in the graph of the smallest bucket that holds it: ``B`` and ``T``
rounded up to the next listed size, the attended length ``L + T`` rounded up to a multiple of
``length_step`` (attention then pays for at most ``length_step - 1`` masked slots). Padding rows
and block columns are masked and their outputs unused. Calls beyond the largest bucket or the
cache's capacity run eagerly (:class:`Bucket` None).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

BATCH_BUCKETS: tuple[int, ...] = (1, 2, 4, 8, 16)
BLOCK_BUCKETS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128)
LENGTH_STEP = 256


@dataclass(frozen=True)
class Bucket:
    """One graph's shapes: ``rows`` x ``block`` new tokens attending over ``length`` slots."""

    rows: int
    block: int
    length: int


def round_up(n: int, sizes: Sequence[int]) -> int | None:
    """The smallest of ``sizes`` (increasing) that is ``>= n``; None when ``n`` exceeds all."""
    if n < 1:
        raise ValueError(f"size must be >= 1, got {n}")
    for size in sizes:
        if size >= n:
            return size
    return None


def check_sizes(sizes: Sequence[int], what: str) -> tuple[int, ...]:
    """``sizes`` as a strictly increasing tuple of positive ints; ValueError otherwise."""
    out = tuple(int(s) for s in sizes)
    if not out or any(s < 1 for s in out) or any(a >= b for a, b in zip(out, out[1:])):
        raise ValueError(f"{what} must be increasing positive ints, got {list(sizes)}")
    return out


def choose_bucket(
    rows: int,
    block: int,
    used: int,
    capacity: int,
    batch_sizes: Sequence[int] = BATCH_BUCKETS,
    block_sizes: Sequence[int] = BLOCK_BUCKETS,
    length_step: int = LENGTH_STEP,
) -> Bucket | None:
    """The bucket for ``rows`` x ``block`` new tokens after ``used`` cache slots, or None.

    ``capacity``: slots the static cache holds. The block is written at slots ``used ..
    used + block_bucket - 1`` (padding columns included), so ``used + block_bucket`` must fit;
    the attended length is that rounded up to ``length_step``, capped at ``capacity``.
    """
    if length_step < 1:
        raise ValueError(f"length_step must be >= 1, got {length_step}")
    b = round_up(rows, batch_sizes)
    t = round_up(block, block_sizes)
    if b is None or t is None or used + t > capacity:
        return None
    length = min(capacity, -(-(used + t) // length_step) * length_step)
    return Bucket(b, t, length)
