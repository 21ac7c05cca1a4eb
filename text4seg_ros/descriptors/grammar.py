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
the numbers over all real masks). :class:`BSDGrammar` lives in :mod:`.grammar_bsd`.

States are small ints; allowed sets, transitions and forced runs are cached per grammar, so a
step costs a few dict look-ups (microseconds), far below a model forward.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Sequence
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np

from .geometry import check_grid_size
from .grammar_codec import TokenCodec
from .rrle import OTHERS, RUN_SEP, SEG_CLOSE, check_label, encode_grid

END: Hashable = None  # the choice point after the last token


class Option(NamedTuple):
    """One alternative at a choice point: its tokens, then the next choice point (END: done)."""

    tokens: tuple[int, ...]
    next: Hashable


class TokenGrammar:
    """Lazy determinised automaton over token ids, built from choice points.

    Subclasses define :meth:`options` (the alternatives at a choice point) and ``start_point``.
    A state is the set of items ``(choice point, option index, tokens consumed)``; options may be
    prefixes of one another (``"1"`` and ``"16"``), the item set keeps both alive.
    """

    start_point: Hashable

    def __init__(self, codec: TokenCodec) -> None:
        self.codec = codec
        self._options: dict[Hashable, tuple[Option, ...]] = {}
        self._ids: dict[frozenset, int] = {}
        self._items: list[frozenset] = []
        self._allowed: list[np.ndarray | None] = []
        self._next: dict[tuple[int, int], int] = {}
        self._forced: dict[int, tuple[tuple[int, ...], int]] = {}
        self._pieces: dict[int, list[tuple[str, int]]] = {}
        self._lock = threading.Lock()
        self._start = self._intern(self._closure({(self.start_point, -1, 0)}))

    # -- to be defined by subclasses ---------------------------------------------------------
    def options(self, point: Hashable) -> tuple[Option, ...]:  # pragma: no cover - abstract
        """The alternatives at ``point``."""
        raise NotImplementedError

    # -- automaton ---------------------------------------------------------------------------
    def _opts(self, point: Hashable) -> tuple[Option, ...]:
        opts = self._options.get(point)
        if opts is None:
            opts = self._options[point] = tuple(self.options(point))
        return opts

    def _closure(self, items: set) -> frozenset:
        """Replace completed options by the start items of their next choice point."""
        out, todo = set(), list(items)
        while todo:
            point, index, pos = todo.pop()
            if point is END:
                out.add((END, 0, 0))
                continue
            if index < 0:  # entering a choice point: one item per option
                todo.extend((point, i, 0) for i in range(len(self._opts(point))))
                continue
            option = self._opts(point)[index]
            if pos == len(option.tokens):
                todo.append((option.next, -1, 0) if option.next is not END else (END, 0, 0))
            else:
                out.add((point, index, pos))
        return frozenset(out)

    def _intern(self, items: frozenset) -> int:
        state = self._ids.get(items)
        if state is None:
            if not items:
                raise ValueError("grammar reached a dead state (no continuation)")
            with self._lock:  # cached grammars are shared: ids and lists must stay in step
                state = self._ids.get(items)
                if state is None:
                    self._items.append(items)
                    self._allowed.append(None)
                    state = self._ids[items] = len(self._items) - 1
        return state

    def start(self) -> int:
        """The initial state (before the first generated token)."""
        return self._start

    def is_done(self, state: int) -> bool:
        """True when the descriptor is complete (nothing may follow)."""
        return (END, 0, 0) in self._items[state]

    def allowed(self, state: int) -> np.ndarray:
        """Sorted ``int64`` token ids allowed next (empty when done)."""
        allowed = self._allowed[state]
        if allowed is None:
            tokens = {
                self._opts(p)[i].tokens[pos] for p, i, pos in self._items[state] if p is not END
            }
            allowed = self._allowed[state] = np.array(sorted(tokens), dtype=np.int64)
        return allowed

    def mask(self, state: int, vocab_size: int) -> np.ndarray:
        """``(vocab_size,)`` bool mask of the allowed next tokens (for engines that add a bias)."""
        allowed = self.allowed(state)
        if allowed.size and allowed[-1] >= vocab_size:
            raise ValueError(f"vocab_size {vocab_size} is smaller than token id {allowed[-1]}")
        out = np.zeros(vocab_size, dtype=bool)
        out[allowed] = True
        return out

    def advance(self, state: int, token: int) -> int:
        """State after ``token``; ValueError when the grammar does not allow it there."""
        key = (state, int(token))
        nxt = self._next.get(key)
        if nxt is None:
            moved = {
                (p, i, pos + 1)
                for p, i, pos in self._items[state]
                if p is not END and self._opts(p)[i].tokens[pos] == token
            }
            if not moved:
                raise ValueError(f"token {token} ({self.codec.piece(token)!r}) not allowed here")
            nxt = self._next[key] = self._intern(self._closure(moved))
        return nxt

    def forced(self, state: int) -> tuple[tuple[int, ...], int]:
        """The run of tokens forced from ``state`` (only one continuation) and the state after."""
        hit = self._forced.get(state)
        if hit is None:
            run, cur = [], state
            while not self.is_done(cur) and len(allowed := self.allowed(cur)) == 1:
                run.append(int(allowed[0]))
                cur = self.advance(cur, run[-1])
            hit = self._forced[state] = (tuple(run), cur)
        return hit

    def accepts(self, tokens: Sequence[int]) -> bool:
        """True when ``tokens`` is a complete sentence of the grammar."""
        state = self._start
        for t in tokens:
            if self.is_done(state) or int(t) not in self._allowed_set(state):
                return False
            state = self.advance(state, int(t))
        return self.is_done(state)

    def _allowed_set(self, state: int) -> set[int]:
        return set(self.allowed(state).tolist())

    def tokens_for_text(self, text: str, state: int | None = None, limit: int = 1 << 30) -> tuple:
        """Walk the grammar along ``text`` (longest allowed piece first).

        Returns ``(tokens, state, consumed)``: the tokens that spell the longest grammatical
        prefix of ``text`` found this way (at most ``limit`` tokens), the state after them, and
        the number of characters they cover. Used for drafts and for the build-time check.
        """
        state = self._start if state is None else state
        tokens: list[int] = []
        pos = 0
        while pos < len(text) and len(tokens) < limit and not self.is_done(state):
            pieces = self._pieces_longest_first(state)
            match = next(((p, t) for p, t in pieces if text.startswith(p, pos)), None)
            if match is None:
                break
            piece, token = match
            tokens.append(token)
            state = self.advance(state, token)
            pos += len(piece)
        return tuple(tokens), state, pos

    def _pieces_longest_first(self, state: int) -> list[tuple[str, int]]:
        pieces = self._pieces.get(state)
        if pieces is None:
            pieces = [(self.codec.piece(t), t) for t in self.allowed(state).tolist()]
            pieces = self._pieces[state] = sorted(
                (p for p in pieces if p), key=lambda x: -len(x[0])
            )
        return pieces

    def _check_canonical(self, texts: Sequence[str], end: tuple[int, ...] = ()) -> None:
        """Refuse a tokenizer whose tokens of whole descriptors (then ``end``, e.g. EOS)
        differ from the automaton."""
        for text in texts:
            want = self.codec.encode_piece(text) + end
            if not self.accepts(want):
                got, _, used = self.tokens_for_text(text)
                raise ValueError(
                    "tokenizer merges tokens across descriptor separators; canonical tokens "
                    f"of {text[:60]!r}... are not what the grammar builds (diverges at char "
                    f"{used}); supported: byte-level BPE with digits split, SentencePiece BPE "
                    "with split_digits (Llama-2)"
                )


def _check_labels(labels: Sequence[str], what: str) -> list[str]:
    if isinstance(labels, str) or not isinstance(labels, Sequence) or not labels:
        raise TypeError(f"{what} must be a non-empty sequence of str, got {labels!r}")
    out = list(dict.fromkeys(check_label(x, what) for x in labels))
    return out


class _BodyMixin:
    """Choice points of one R-RLE body; ``tag`` tells bodies of different instances apart.

    Points: ``("L", tag, r, c, prev)`` run label, ``("N", tag, r, c, lab)`` count digits,
    ``("S", tag, r, c, lab)`` what follows a count. ``lab``/``prev`` index the body's names.
    """

    grid: int
    distinct_runs: bool
    codec: TokenCodec
    head: str = ""  # forced text glued before the body's first label

    def body_names(self, tag: Hashable) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def body_end(self, tag: Hashable) -> list[Option]:  # pragma: no cover - abstract
        raise NotImplementedError

    def body_options(self, point: tuple) -> list[Option]:
        kind, tag, r, c, lab = point
        enc, g = self.codec.encode_piece, self.grid
        names = self.body_names(tag)
        if kind == "L":  # a run label (after "| " or "\n "; the body's first run: after head)
            space = self.head if (r == 0 and c == 0) else " "
            return [
                Option(enc(f"{space}{name} *"), ("N", tag, r, c, i))
                for i, name in enumerate(names)
                if not (self.distinct_runs and c > 0 and i == lab)
            ]
        if kind == "N":  # the count: any value that fits the row
            return [Option(enc(str(n)), ("S", tag, r, c + n, lab)) for n in range(1, g - c + 1)]
        if c < g:  # kind "S": more runs in this row
            return [Option(enc(RUN_SEP.rstrip()), ("L", tag, r, c, lab))]
        if r < g - 1:
            return [Option(enc("\n"), ("L", tag, r + 1, 0, None))]
        return self.body_end(tag)


class RRLEGrammar(_BodyMixin, TokenGrammar):
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
        names = _check_labels(labels, "label")
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


def __getattr__(name: str) -> Any:
    """B-SD lives in :mod:`.grammar_bsd` (file size); imported lazily: it builds on this module."""
    if name in ("BSDGrammar", "bsd_grammar"):
        from . import grammar_bsd

        return getattr(grammar_bsd, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [  # plus BSDGrammar and bsd_grammar, served by __getattr__
    "END",
    "Option",
    "RRLEGrammar",
    "TokenCodec",
    "TokenGrammar",
    "rrle_grammar",
]
