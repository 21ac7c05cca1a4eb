"""Token-level grammars of semantic descriptors for constrained decoding with jump-forward.

A grammar is a deterministic automaton over the token ids of one tokenizer. For every state it
gives the sorted allowed next tokens (:meth:`TokenGrammar.allowed`) and the run of tokens the
grammar forces from there (:meth:`TokenGrammar.forced`: while exactly one token is allowed).
Languages (the wire formats of :mod:`.rrle` and :mod:`.bsd`):

* :class:`RRLEGrammar`: an R-RLE body after ``<seg>``, then ``</seg>``: exactly G rows, each
  summing to G, labels only from the label set (``others`` always included), separators exactly
  ``" *"``, ``"| "``, ``"\\n "``; with ``distinct_runs`` (default) two adjacent runs of a row
  never share a label (runs are maximal, as the encoder writes them).
* :class:`BSDGrammar`: zero or more ``<ref>LABEL</ref><box>[x1, y1, x2, y2]</box><seg>BODY</seg>``
  triples joined by ``"\\n"``, then the end-of-sequence token; ``0 <= x1 < x2 <= 1000`` and
  ``0 <= y1 < y2 <= 1000``; BODY is an R-RLE body over ``{LABEL, others}`` (or over the 16 brick
  tokens with ``bricks=True``, on a G/2 grid).

Tokenization. The automaton accepts the tokenizer's *canonical* tokenization of each descriptor
in its place in the answer (what the tokenizer gives for the whole answer text, which is what a
model fine-tuned on descriptors emits), not every byte-equivalent token sequence. The text is cut
into pieces at places where the supported tokenizers always split (before a space, around digits
and newlines), each piece is tokenized once *in context* (:mod:`.grammar_codec`: after an anchor,
so SentencePiece's word-start mark ``"▁"`` lands where it does inside a text), and the
construction is checked against the tokens of sample descriptors when the grammar is built (a
tokenizer that merges across the cuts is refused). Supported: byte-level BPE with digits split
(GPT-2 / Qwen2 pre-tokenizers) and SentencePiece BPE with ``split_digits`` and byte fallback
(Llama-2 / Vicuna, the LLaVA-1.5 family). Where the prompt and the descriptor meet, a tokenizer
may glue the two (Qwen's regex writes ``"<seg"`` ``">others"``): a grammar's ``head`` (e.g.
``"<seg>"``) is forced text *before* the first label and glued to it, so decoding starts at a
boundary where the whole answer text is cut too (:mod:`text4seg_ros.model.answers`).

Why our own automaton and not xgrammar / llguidance / outlines: (1) the per-row sum has no
counting primitive in their EBNF/Lark/regex front ends and must be expanded into O(G^2) rules per
label set anyway, rebuilt for every new goal label; (2) their masks accept every tokenization of
the text, so almost no token is forced (after ``"|"`` the model may write ``" "``, ``" c"``,
``" cu"`` or ``" cup"``), and jump-forward happens on forced *bytes* that are then re-tokenized,
which need not be the tokens the model itself would emit, so "constrained output identical to the
model's own valid greedy output" cannot be guaranteed at the token level; (3) xgrammar requires
triton and an unpinned torch, which this project cannot install. Measured with llguidance 1.9.1
(no dependencies; Lark grammar with the expanded row-sum rules): masks cost about 4 us, but one
16 x 16 mask answer of 131 tokens needed 72 model steps (1.8 tokens per step); this automaton
needs 60 (jump-forward only) and the decoder with verified drafts 6 (bench/decode_steps.py has
the numbers over all real masks).

Layout: the automaton core (:class:`TokenGrammar`, bounded caches) is
:mod:`.grammar_core`; :class:`BSDGrammar` lives in :mod:`.grammar_bsd`; both are re-exported here.

States are small ints; allowed sets, transitions and forced runs are cached per grammar (up to
``TokenGrammar.max_states`` states, see :mod:`.grammar_core`), so a step costs a few dict look-ups
(microseconds), far below a model forward.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from functools import lru_cache

import numpy as np

from .geometry import check_grid_size
from .grammar_bsd import BSDGrammar, bsd_grammar
from .grammar_codec import TokenCodec
from .grammar_core import END, BodyMixin, Option, TokenGrammar, Walk, check_labels
from .rrle import OTHERS, SEG_CLOSE, encode_grid


class RRLEGrammar(BodyMixin, TokenGrammar):
    """R-RLE body over ``labels`` (``others`` added first when missing), then ``</seg>``.

    Without ``head`` the generated text starts right after ``<seg>`` (which then ends the prompt
    suffix), e.g. for G = 2: ``"others *2\\n cup *1| others *1\\n</seg>"``. With
    ``head="<seg>"`` it starts with ``<seg>`` (forced, glued to the first label as the whole
    answer text is tokenized). Every sentence, ``head`` removed, parses with
    :func:`.rrle.parse_rrle` without repairs.
    """

    def __init__(
        self,
        codec: TokenCodec,
        labels: Sequence[str],
        grid: int = 16,
        distinct_runs: bool = True,
        head: str = "",
    ) -> None:
        names = check_labels(labels, "label")
        self.names = [OTHERS] + [n for n in names if n != OTHERS]
        if len(self.names) < 2:
            raise ValueError(f"labels must name at least one class besides {OTHERS!r}")
        grid = check_grid_size(grid)
        if not isinstance(head, str):
            raise TypeError(f"head must be a str, got {type(head).__name__}")
        self.grid, self.distinct_runs, self.head = grid, distinct_runs, head
        self.start_point = ("L", 0, 0, 0, None)
        super().__init__(codec)
        # Samples that meet every label at a row start and after "| ", and every count; one
        # per label starting the body (the first label is glued to the head).
        k = len(self.names)
        rows = np.arange(grid)[:, None] % k
        mixed = np.broadcast_to(rows, (grid, grid)).copy()
        mixed[0] = np.arange(grid) % k
        if grid > 1:
            mixed[1, : grid // 2] = (mixed[1, 0] + 1) % k
        counts = np.arange(grid)[None, :] >= np.arange(grid)[:, None]  # runs of every length
        samples = [mixed, counts.astype(np.int64)]
        samples += [np.full((grid, grid), i) for i in range(2, k)]
        self._check_canonical([head + encode_grid(s, self.names) + SEG_CLOSE for s in samples])

    def body_names(self, tag: Hashable) -> list[str]:
        return self.names

    def body_end(self, tag: Hashable) -> list[Option]:
        return [Option(self.codec.encode_piece("\n" + SEG_CLOSE), END)]

    def options(self, point: Hashable) -> tuple[Option, ...]:
        return tuple(self.body_options(point))  # type: ignore[arg-type]


@lru_cache(maxsize=64)
def _cached_rrle(
    codec: TokenCodec, labels: tuple, grid: int, distinct: bool, head: str
) -> RRLEGrammar:
    return RRLEGrammar(codec, labels, grid, distinct, head)


def rrle_grammar(
    codec: TokenCodec,
    labels: Sequence[str],
    grid: int = 16,
    distinct_runs: bool = True,
    head: str = "",
) -> RRLEGrammar:
    """A cached :class:`RRLEGrammar` (standing goals reuse their automaton every frame)."""
    return _cached_rrle(codec, tuple(labels), grid, distinct_runs, head)


__all__ = [
    "END",
    "BSDGrammar",
    "Option",
    "RRLEGrammar",
    "TokenCodec",
    "TokenGrammar",
    "Walk",
    "bsd_grammar",
    "rrle_grammar",
]
