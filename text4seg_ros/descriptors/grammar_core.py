"""The grammar automaton core: a lazily determinised automaton over token ids.

:class:`TokenGrammar` turns *choice points* (each a tuple of :class:`Option`: the tokens of one
alternative, then the next choice point) into a deterministic automaton whose states are small
ints, with the allowed next tokens, transitions and forced runs cached per state. The descriptor
languages build on it: :class:`.grammar.RRLEGrammar` (image-wise R-RLE bodies, through
:class:`BodyMixin`) and :class:`.grammar_bsd.BSDGrammar` (box-wise B-SD). See :mod:`.grammar`
for the languages and the tokenization rules.

Bounded memory. Most languages have a modest number of reachable states, but a B-SD state holds
the box coordinates written so far (the next one is bounded by them), so every new box creates
new states: a standing ``instances`` goal would add some on every frame. The caches are
therefore bounded: once a grammar holds more than :attr:`TokenGrammar.max_states` states, it
drops every cached state and option at the start of the next answer when no answer is being
decoded with it (:meth:`TokenGrammar.begin` / :meth:`TokenGrammar.end`, which the decoder calls
around each batch). State ids from before a reset must not be used after it; the decoder never
does (it asks for :meth:`TokenGrammar.start` after :meth:`TokenGrammar.begin`).
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Sequence
from typing import NamedTuple

import numpy as np

from .grammar_codec import TokenCodec
from .rrle import RUN_SEP, check_label

END: Hashable = None  # the choice point after the last token


class Option(NamedTuple):
    """One alternative at a choice point: its tokens, then the next choice point (END: done)."""

    tokens: tuple[int, ...]
    next: Hashable


class Walk(NamedTuple):
    """A walk of the grammar along a text (:meth:`TokenGrammar.walk`).

    ``tokens``: the tokens spelling the text's longest grammatical prefix found (longest allowed
    piece first); ``states``: the state before each token, then the state after the last
    (``len(tokens) + 1``); ``free``: ``(index, allowed ids)`` of tokens written at a free choice
    (more than one token allowed there); ``whole``: the walk covered the whole text.
    """

    tokens: tuple[int, ...]
    states: tuple[int, ...]
    free: tuple[tuple[int, np.ndarray], ...]
    whole: bool


class TokenGrammar:
    """Lazy determinised automaton over token ids, built from choice points.

    Subclasses define :meth:`options` (the alternatives at a choice point) and ``start_point``.
    A state is the set of items ``(choice point, option index, tokens consumed)``; options may be
    prefixes of one another (``"1"`` and ``"16"``), the item set keeps both alive.
    """

    start_point: Hashable
    max_states: int = 20_000  # cached states kept across answers (see the module doc)

    def __init__(self, codec: TokenCodec) -> None:
        self.codec = codec
        self._lock = threading.RLock()
        self._active = 0  # answers being decoded with this grammar (begin/end)
        self.resets = 0  # times the caches were dropped (for tests and diagnostics)
        self._clear()

    def _clear(self) -> None:
        """Drop every cached state, transition, forced run and option; re-intern the start."""
        self._options: dict[Hashable, tuple[Option, ...]] = {}
        self._ids: dict[frozenset, int] = {}
        self._items: list[frozenset] = []
        self._allowed: list[np.ndarray | None] = []
        self._next: dict[tuple[int, int], int] = {}
        self._forced: dict[int, tuple[tuple[int, ...], int]] = {}
        self._pieces: dict[int, list[tuple[str, int]]] = {}
        self._walks: dict[tuple[int, str], Walk] = {}
        self._start = self._intern(self._closure({(self.start_point, -1, 0)}))

    @property
    def n_states(self) -> int:
        """Number of states cached now."""
        return len(self._items)

    def begin(self) -> None:
        """An answer starts being decoded with this grammar. When no other answer is in flight
        and the caches hold more than :attr:`max_states` states, they are dropped first (state
        ids from before are void): memory stays bounded for a node that runs for days."""
        with self._lock:
            if self._active == 0 and len(self._items) > self.max_states:
                self._clear()
                self.resets += 1
            self._active += 1

    def end(self) -> None:
        """The answer started by :meth:`begin` is finished (or abandoned)."""
        with self._lock:
            self._active = max(0, self._active - 1)

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
        """True when ``tokens`` is a complete sentence of the grammar (a walk in flight, like an
        answer: no cache reset while it runs, e.g. a goal checked on another thread)."""
        self.begin()
        try:
            state = self._start
            for t in tokens:
                if self.is_done(state) or int(t) not in self._allowed_set(state):
                    return False
                state = self.advance(state, int(t))
            return self.is_done(state)
        finally:
            self.end()

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

    def walk(self, text: str, state: int, cache: bool = False) -> Walk:
        """:meth:`tokens_for_text` from ``state`` with every intermediate state and the free
        choice points (where more than one token was allowed): what the decoder needs to verify
        a draft without touching the grammar again. ``cache``: keep the walk (keyed by state and
        text) for texts that recur, such as the copied rows of drafts."""
        key = (state, text)
        hit = self._walks.get(key) if cache else None
        if hit is not None:
            return hit
        tokens: list[int] = []
        states = [state]
        free: list[tuple[int, np.ndarray]] = []
        pos, size = 0, len(text)
        pieces_of, moves, allowed_of = self._pieces, self._next, self._allowed
        while pos < size and not self.is_done(state):  # hot: the decoder walks every draft
            pieces = pieces_of.get(state) or self._pieces_longest_first(state)
            for piece, token in pieces:  # noqa: B007  (token is used after the break)
                if text.startswith(piece, pos):
                    break
            else:
                break
            allowed = allowed_of[state]
            if len(allowed) > 1:
                free.append((len(tokens), allowed))
            tokens.append(token)
            nxt = moves.get((state, token))
            state = nxt if nxt is not None else self.advance(state, token)
            states.append(state)
            pos += len(piece)
        out = Walk(tuple(tokens), tuple(states), tuple(free), pos == len(text))
        if cache:
            self._walks[key] = out
        return out

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


def check_labels(labels: Sequence[str], what: str) -> list[str]:
    """Validated labels, duplicates dropped (order kept); TypeError for an empty or bad list."""
    if isinstance(labels, str) or not isinstance(labels, Sequence) or not labels:
        raise TypeError(f"{what} must be a non-empty sequence of str, got {labels!r}")
    out = list(dict.fromkeys(check_label(x, what) for x in labels))
    return out


class BodyMixin:
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


__all__ = ["END", "BodyMixin", "Option", "TokenGrammar", "Walk", "check_labels"]
