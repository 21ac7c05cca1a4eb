"""Token-level grammar of box-wise descriptors (B-SD); see :mod:`.grammar` and :mod:`.bsd`.

A B-SD state holds the box coordinates written so far (each bounds the next), so new boxes make
new states; the core's caches are bounded for that reason (:mod:`.grammar_core`).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from functools import lru_cache

import numpy as np

from .bsd import (
    BOX_CLOSE,
    BOX_OPEN,
    BRICK,
    BRICK_NAMES,
    QUANT,
    REF_CLOSE,
    REF_OPEN,
    check_brick_grid,
)
from .geometry import check_grid_size
from .grammar_codec import TokenCodec
from .grammar_core import END, BodyMixin, Option, TokenGrammar, check_labels
from .rrle import OTHERS, SEG_CLOSE, SEG_OPEN, encode_grid


class BSDGrammar(BodyMixin, TokenGrammar):
    """B-SD instances (see :mod:`.bsd`): ``<ref>..</ref><box>[..]</box><seg>..</seg>`` joined by
    ``"\\n"``, at most ``max_instances``, ended by ``eos_token_id`` (an empty list is just EOS).

    Box coordinates are decimal 0..1000 with ``x1 < x2`` and ``y1 < y2``. The body grid is
    ``grid`` (labels ``{LABEL, others}``) or, with ``bricks``, ``grid // 2`` over the brick tokens.
    ``head``: forced text before the first triple (or before EOS), glued to it.
    """

    def __init__(
        self,
        codec: TokenCodec,
        labels: Sequence[str],
        eos_token_id: int,
        grid: int = 16,
        bricks: bool = False,
        max_instances: int = 8,
        distinct_runs: bool = True,
        head: str = "",
    ) -> None:
        if not isinstance(head, str):
            raise TypeError(f"head must be a str, got {type(head).__name__}")
        self.head = head
        self.labels = [n for n in check_labels(labels, "label") if n != OTHERS]
        if not self.labels:
            raise ValueError(f"labels must name at least one class besides {OTHERS!r}")
        if not isinstance(eos_token_id, int) or eos_token_id < 0:
            raise TypeError(f"eos_token_id must be a token id (int >= 0), got {eos_token_id!r}")
        grid = check_grid_size(grid)
        if bricks:
            check_brick_grid(grid)
        if isinstance(max_instances, bool) or not isinstance(max_instances, int):
            raise TypeError(f"max_instances must be an int >= 1, got {max_instances!r}")
        if max_instances < 1:
            raise ValueError(f"max_instances must be >= 1, got {max_instances}")
        self.eos, self.bricks, self.max_instances = eos_token_id, bricks, max_instances
        self.grid = grid // BRICK if bricks else grid
        self.distinct_runs = distinct_runs
        self.start_point = ("I", 0)
        super().__init__(codec)
        # One triple per label (at most max_instances per answer), bodies meeting every name
        # at a row start and after "| ", and the empty answer.
        triples = []
        for j, label in enumerate(self.labels):
            k = len(self.body_names((0, j)))
            cells = (np.arange(self.grid)[:, None] + np.arange(self.grid)[None, :] // 2 + j) % k
            body = encode_grid(cells, self.body_names((0, j)))
            box = f"{BOX_OPEN}[{j % 999}, 10, 1000, {999 - j % 900}]{BOX_CLOSE}"
            triples.append(f"{REF_OPEN}{label}{REF_CLOSE}{box}{SEG_OPEN}{body}{SEG_CLOSE}")
        answers = [triples[i : i + max_instances] for i in range(0, len(triples), max_instances)]
        texts = [head + "\n".join(a) for a in answers]
        self._check_canonical([*texts, head], end=(eos_token_id,))

    def _numbers(self) -> list[tuple[int, ...]]:
        """Tokens of "0" .. "1000", encoded once per grammar."""
        if not hasattr(self, "_number_tokens"):
            self._number_tokens = [self.codec.encode_piece(str(v)) for v in range(QUANT + 1)]
        return self._number_tokens

    def body_names(self, tag: Hashable) -> list[str]:
        _, label = tag  # type: ignore[misc]
        return list(BRICK_NAMES) if self.bricks else [OTHERS, self.labels[label]]

    @staticmethod
    def _ref_text(k: int, label: str) -> str:
        """Text that opens instance ``k``, from its separator up to the first box digit."""
        sep = "\n" if k else ""
        return f"{sep}{REF_OPEN}{label}{REF_CLOSE}{BOX_OPEN}["

    def body_end(self, tag: Hashable) -> list[Option]:
        # "</seg>" and the next "<ref>" are one piece: Qwen-style regexes glue ">" to a newline.
        k, _ = tag  # type: ignore[misc]
        close = "\n" + SEG_CLOSE
        out = [Option(self.codec.encode_piece(close) + (self.eos,), END)]
        if k + 1 < self.max_instances:
            out += [
                Option(
                    self.codec.encode_piece(close + self._ref_text(k + 1, lab)), ("Q", k + 1, j, ())
                )
                for j, lab in enumerate(self.labels)
            ]
        return out

    def options(self, point: Hashable) -> tuple[Option, ...]:
        kind = point[0]  # type: ignore[index]
        if kind == "I":
            first = [
                Option(self.codec.encode_piece(self.head + self._ref_text(0, lab)), ("Q", 0, j, ()))
                for j, lab in enumerate(self.labels)
            ]
            empty = self.codec.encode_piece(self.head) if self.head else ()
            return tuple(first + [Option((*empty, self.eos), END)])
        if kind == "Q":  # box coordinate j of instance k: ("Q", k, label, values so far)
            _, k, label, vals = point  # type: ignore[misc]
            j = len(vals)
            lo = 0 if j < 2 else vals[j - 2] + 1
            hi = QUANT - 1 if j < 2 else QUANT
            numbers = self._numbers()
            return tuple(
                Option(numbers[v], ("QS", k, label, vals + (v,))) for v in range(lo, hi + 1)
            )
        if kind == "QS":
            _, k, label, vals = point  # type: ignore[misc]
            if len(vals) < 4:
                return (Option(self.codec.encode_piece(", "), ("Q", k, label, vals)),)
            tag = (k, label)
            names = self.body_names(tag)
            head = f"]{BOX_CLOSE}{SEG_OPEN}"  # glued to the first label, as encode does
            return tuple(
                Option(self.codec.encode_piece(f"{head}{name} *"), ("N", tag, 0, 0, i))
                for i, name in enumerate(names)
            )
        return tuple(self.body_options(point))  # type: ignore[arg-type]


@lru_cache(maxsize=64)
def _cached_bsd(codec: TokenCodec, labels: tuple, *args: int | bool | str) -> BSDGrammar:
    return BSDGrammar(codec, labels, *args)  # type: ignore[arg-type]


def bsd_grammar(
    codec: TokenCodec,
    labels: Sequence[str],
    eos_token_id: int,
    grid: int = 16,
    bricks: bool = False,
    max_instances: int = 8,
    distinct_runs: bool = True,
    head: str = "",
) -> BSDGrammar:
    """A cached :class:`BSDGrammar`."""
    return _cached_bsd(
        codec, tuple(labels), eos_token_id, grid, bricks, max_instances, distinct_runs, head
    )
