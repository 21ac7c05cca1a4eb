"""Batched, grammar-constrained greedy decoding with jump-forward and draft verification.

Per goal, every forward call feeds one block of tokens:

1. the token the model chose at the last free choice (argmax over the grammar's allowed tokens;
   in the first call: the goal's suffix, question + answer prefix + ``<seg>``),
2. the run of tokens the grammar forces after it (jump-forward: no sampling step for them),
3. a draft of what follows (:mod:`.drafts`, row copies), each token checked against the model's
   own masked argmax at the position before it; the first disagreement replaces the draft by the
   model's choice, which starts the next block. Rejected draft slots stay in the cache with
   attention mask 0.

So the output is the greedy constrained output (the same as without drafts and jump-forward),
and when the model's unconstrained greedy output is a valid descriptor it is that output, token
for token. One caveat, as for any batched or speculative decoder: blocks of different shapes
reduce in a different floating-point order, so two tokens whose logits tie to the last bit may
swap (tests use trained or float64 models, where this does not happen). Rows of a batch with
blocks of different lengths are right-padded and masked; logical position ids keep every row's
positions contiguous.

The batch shrinks as it goes: a goal that finished leaves it (its cache row is cut), so a long
goal (a B-SD answer of many instances) runs alone instead of dragging every finished row
through each call. And once a quarter of every row's cache is dead to it (pads, rejected
drafts, the blocks of goals that left), the cache is packed: each row's live slots move to the
front (keys carry their rotary positions, so slot order does not matter to attention) and the
cache shrinks to the longest row's live length, so attention stops paying for dead slots. Both
go through ``select_cache`` (:mod:`.step`); an engine whose cache cannot be sliced keeps its
rows and slots masked instead (``shrink=False`` does that always), with the same results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..descriptors.grammar import TokenGrammar, Walk
from .cancel import StopCheck, check_stop
from .drafts import DraftTracker
from .step import DecodeStep, select_cache, selects


@dataclass
class GenerationResult:
    """What one goal's decoding produced.

    * ``tokens``: generated token ids (the descriptor after the suffix, up to the grammar's end).
    * ``text``: their text (without a final end-of-sequence token, for B-SD).
    * ``forward_calls``: sequential model forward calls this goal took part in (its prefill of the
      suffix included; the shared prefix excluded).
    * ``chosen_probs``: softmax probability (over the whole vocabulary) of every token the model
      chose at a free choice, in order; forced tokens have none.
    * ``complete``: the grammar reached its end (False only when ``max_new_tokens`` cut it).
    * ``drafted`` / ``accepted``: draft tokens fed / kept.
    """

    tokens: list[int] = field(default_factory=list)
    text: str = ""
    forward_calls: int = 0
    chosen_probs: list[float] = field(default_factory=list)
    complete: bool = False
    drafted: int = 0
    accepted: int = 0

    @property
    def mean_log_prob(self) -> float:
        """Mean natural log of ``chosen_probs`` (0.0 when the model chose nothing)."""
        if not self.chosen_probs:
            return 0.0
        return float(np.mean(np.log(np.maximum(self.chosen_probs, 1e-45))))


def prefix_lengths(prefix_len: int | Sequence[int], rows: int) -> list[int]:
    """Per-row prefix lengths from the decoder's ``prefix_len``: one int for a prefix every row
    shares, or one per row (a stacked prefix, see
    :func:`text4seg_ros.engines.base.stack_prefixes`: row ``r`` holds its prefix in its first
    ``prefix_len[r]`` cache slots, the cache ``max(prefix_len)`` slots long). ValueError for a
    negative length or a list of the wrong size."""
    if isinstance(prefix_len, (int, np.integer)):
        lens = [int(prefix_len)] * rows
    else:
        lens = [int(n) for n in prefix_len]
        if len(lens) != rows:
            raise ValueError(f"prefix_len has {len(lens)} lengths for {rows} rows")
    if any(n < 0 for n in lens):
        raise ValueError(f"prefix lengths must be >= 0, got {lens}")
    return lens


class _Batch:
    """Cache bookkeeping shared by the constrained and the plain greedy loop.

    Goals are the caller's indices; ``rows`` lists the goals still in the batch, in cache row
    order, and ``index`` maps a goal to its row. ``pos[g]``: logical position of goal ``g``'s
    next token. ``mask``: ``(rows, cache length)`` attention mask over the cache's slots, kept
    in a numpy buffer with room to grow (a step writes its block's columns, never copies the
    rest); ``live[r]``: the slots row ``r`` attends to, counted as they are written and
    rejected, so deciding whether to pack the cache costs nothing per step.
    """

    MIN_DEAD = 16  # fewer dead slots than this are not worth a copy of the cache

    def __init__(
        self,
        step: DecodeStep,
        cache: Any,
        prefix_len: int | Sequence[int],
        rows: int,
        pad: int,
        device: Any,
        shrink: bool = True,
    ) -> None:
        self.step, self.cache, self.pad, self.device = step, cache, pad, device
        lens = prefix_lengths(prefix_len, rows)
        width = max(lens)
        self.buf = np.ones((rows, max(64, 2 * width)), dtype=np.int64)
        for r, n in enumerate(lens):  # a stacked prefix: row r's slots after its own are pads
            self.buf[r, n:width] = 0
        self.length = width
        self.live = list(lens)
        self.pos = list(lens)
        self.rows = list(range(rows))
        self.index = {g: g for g in self.rows}
        self.select = getattr(step, "select_cache", None) or select_cache
        self.drop_rows = self.drop_slots = shrink
        self.selects = selects(step)
        self.on_host = torch.device(device).type == "cpu"

    @property
    def mask(self) -> np.ndarray:
        """``(rows, cache length)`` 0/1 mask (a view of the buffer)."""
        return self.buf[:, : self.length]

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(array))
        return t if self.on_host else t.to(self.device)

    def forward(
        self, blocks: Sequence[Sequence[int]], where: Sequence[tuple[int, int]]
    ) -> tuple[torch.Tensor, int]:
        """Feed ``blocks[g]`` for every goal ``g`` in the batch (empty: a finished goal that
        could not leave, fed pads only); returns (logits ``(N, V)`` at the ``where`` (row,
        column) positions, in order; column offset of the block in the cache)."""
        n_rows = len(self.rows)
        width = max(len(blocks[g]) for g in self.rows)
        ids = np.full((n_rows, width), self.pad, dtype=np.int64)
        offset = self.length
        if offset + width > self.buf.shape[1]:  # grow the mask buffer geometrically
            grown = np.zeros((n_rows, 2 * (offset + width)), dtype=np.int64)
            grown[:, :offset] = self.buf[:, :offset]
            self.buf = grown
        self.buf[:, offset : offset + width] = 0
        for r, g in enumerate(self.rows):
            n = len(blocks[g])
            ids[r, :n] = blocks[g]
            self.buf[r, offset : offset + n] = 1
            self.live[r] += n
        self.length = offset + width
        pos = np.array([self.pos[g] for g in self.rows], dtype=np.int64)[:, None] + np.arange(width)
        flat = np.array([r * width + c for r, c in where], dtype=np.int64)
        args = (self._tensor(ids), self._tensor(pos), self._tensor(self.mask), self.cache)
        if self.selects:  # the engine runs its output head at these positions only
            logits, self.cache = self.step(*args, select=self._tensor(flat))
            return logits, offset
        logits, self.cache = self.step(*args)
        index = torch.from_numpy(flat).to(logits.device)
        return logits.reshape(-1, logits.shape[-1])[index], offset

    def keep(self, goal: int, offset: int, kept: int, fed: int) -> None:
        """Goal ``goal`` keeps the first ``kept`` of the ``fed`` tokens written at ``offset``."""
        if kept < fed:
            row = self.index[goal]
            self.buf[row, offset + kept : offset + fed] = 0
            self.live[row] -= fed - kept
        self.pos[goal] += kept

    def shrink(self, live: Sequence[Any]) -> None:
        """Drop goals with a false ``live[g]`` from the batch, then cut dead cache slots."""
        keep = [r for r, g in enumerate(self.rows) if live[g]]
        if self.drop_rows and keep and len(keep) < len(self.rows):
            idx = torch.tensor(keep, dtype=torch.long, device=self.device)
            try:
                self.cache = self.select(self.cache, idx, None)
            except NotImplementedError:  # an engine cache without row slicing: rows stay
                self.drop_rows = False
            else:
                self.rows = [self.rows[r] for r in keep]
                self.index = {g: r for r, g in enumerate(self.rows)}
                self.buf = self.buf[keep]
                self.live = [self.live[r] for r in keep]
        if not self.drop_slots or not keep:
            return
        length = self.length
        width = max(self.live)  # the longest row's live slots: the packed length
        if length - width < max(self.MIN_DEAD, length // 4):
            return
        alive = self.mask.astype(bool)  # (rows, cache length): the slots each row attends to
        if bool((alive == alive[:1]).all()):  # every row keeps the same slots: one index list
            cols = np.flatnonzero(alive[0])
            new_mask = self.mask[:, cols]
        else:  # per row, live slots first (stable: in their order), then dead ones as filler
            cols = np.argsort(~alive, axis=1, kind="stable")[:, :width]
            new_mask = np.take_along_axis(self.mask, cols, 1)
        try:
            self.cache = self.select(self.cache, None, self._tensor(cols))
        except NotImplementedError:
            self.drop_slots = False
        else:
            self.buf = np.zeros((len(self.rows), max(64, 2 * width)), dtype=np.int64)
            self.buf[:, :width] = new_mask
            self.length = width
            self.live = [int(x) for x in new_mask.sum(1)]


def _host(logits: torch.Tensor) -> np.ndarray | None:
    """``logits`` as a float32 numpy view when they live on the CPU (None on an accelerator).

    The loop's own arithmetic on logits is tiny (a gather over the allowed ids, one normaliser
    per reported probability); numpy does it single-threaded, where torch's intra-op thread
    pool costs milliseconds per call on a loaded machine."""
    if logits.device.type != "cpu":
        return None
    if logits.dtype != torch.float32:
        logits = logits.float()
    return (logits.detach() if logits.requires_grad else logits).numpy()


def _padded(allowed: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The allowed ids as one ``(N, A)`` matrix (``A``: the longest set) and its ``(N, A)``
    validity mask; padding holds id 0 (masked)."""
    lens = np.fromiter(map(len, allowed), dtype=np.int64, count=len(allowed))
    valid = np.arange(int(lens.max())) < lens[:, None]
    ids = np.zeros(valid.shape, dtype=np.int64)
    ids[valid] = np.concatenate(allowed)  # row-major: each row's ids, in order, then padding
    return ids, valid


def _choose(
    logits: torch.Tensor, allowed: Sequence[np.ndarray], host: np.ndarray | None
) -> list[int]:
    """Masked argmax of each row of ``logits (N, V)`` over its allowed ids, without (N, V)
    copies: ties go to the lowest token id, as ``torch.argmax``. ``host``: the logits as
    numpy (:func:`_host`), None on an accelerator."""
    if not allowed:
        return []
    ids, valid = _padded(allowed)
    rows = np.arange(len(allowed))
    if host is not None:
        picked = host[rows[:, None], ids]  # (N, A)
        picked[~valid] = -np.inf
        return ids[rows, picked.argmax(1)].tolist()
    idx = torch.from_numpy(ids).to(logits.device)
    picked = logits.gather(1, idx).float()  # (N, A)
    picked = picked.masked_fill(torch.from_numpy(~valid).to(logits.device), float("-inf"))
    best = picked.argmax(1)
    return idx.gather(1, best[:, None])[:, 0].tolist()


def _probs(
    logits: torch.Tensor, used: list[int], tokens: list[int], host: np.ndarray | None
) -> list[float]:
    """Full-vocabulary softmax probability of the chosen token at the query rows ``used``
    (``host`` as for :func:`_choose`)."""
    if not used:
        return []
    chosen_ids = [tokens[q] for q in used]
    if host is not None:
        sel = host[used]  # (n, V) copy: only where a probability is reported
        top = sel.max(1, keepdims=True)
        chosen = sel[np.arange(len(used)), chosen_ids]
        sel -= top  # in place: one (n, V) buffer for the whole normaliser
        np.exp(sel, out=sel)
        norm = top[:, 0] + np.log(sel.sum(1))
        return np.exp(chosen - norm).astype(np.float64).tolist()
    rows = torch.tensor(used, device=logits.device)
    chosen = torch.tensor(chosen_ids, device=logits.device)
    sel = logits[rows].float()
    logp = sel.gather(1, chosen[:, None])[:, 0] - torch.logsumexp(sel, 1)
    return logp.exp().tolist()


class _Goal:
    """One goal's decoding state: its grammar state, the block it feeds next (``block``:
    ``committed`` tokens that are output for sure, then the draft walk ``walk``), and the text
    tracker its drafts come from."""

    __slots__ = ("grammar", "state", "block", "committed", "walk", "tracker", "result")

    def __init__(self, grammar: TokenGrammar, result: GenerationResult) -> None:
        self.grammar, self.result = grammar, result
        self.state = grammar.start()
        self.block: list[int] = []
        self.committed = 0
        self.walk: Walk | None = None
        self.tracker = DraftTracker(grammar)

    def write(self, tokens: Sequence[int]) -> None:
        """Tokens become output (forced, chosen, or accepted from a draft)."""
        self.result.tokens += tokens
        self.tracker.feed(tokens)


def constrained_generate(
    step: DecodeStep,
    grammars: Sequence[TokenGrammar],
    suffix_ids: Sequence[Sequence[int]],
    prefix_cache: Any = None,
    prefix_len: int | Sequence[int] = 0,
    max_new_tokens: int | None = None,
    max_draft_tokens: int = 64,
    pad_token_id: int = 0,
    device: torch.device | str | None = None,
    shrink: bool = True,
    should_stop: StopCheck | None = None,
) -> list[GenerationResult]:
    """Decode one descriptor per goal, batched, under each goal's grammar.

    ``prefix_cache`` holds the shared prefix (image + prompt) for ``len(grammars)`` rows and is
    extended and sliced in place (pass a copy to reuse it); ``prefix_len`` is its logical length,
    or per row the length of a stacked prefix (one prefix per goal, see :func:`prefix_lengths`).
    ``suffix_ids[b]`` (non-empty) are goal ``b``'s prompt tokens after the prefix. Greedy: at
    every free choice the allowed token with the highest logit. ``max_draft_tokens = 0`` turns
    drafts off (jump-forward only). ``max_new_tokens`` (default: no limit; every grammar here is
    finite) cuts a goal, which is then ``complete=False``. ``shrink=False`` keeps finished goals
    in the batch (fed pads, masked) and never cuts cache slots: the slower behaviour of engines
    whose cache cannot be sliced, kept for comparison (results are the same).
    ``should_stop`` (no arguments) is called before every model call; when it returns true the
    decode raises :class:`~.cancel.DecodeCancelled` (see :mod:`.cancel`).

    Work per sequential step, outside the model: the grammar is advanced per token through its
    cached automaton, drafts come from each goal's current line (:class:`.drafts.DraftTracker`),
    and a draft's choice points are known from its walk before the model runs, so the model is
    asked for logits only there (``select``, see :mod:`.step`). Nothing re-reads the answer.
    """
    if len(grammars) != len(suffix_ids) or not grammars:
        raise ValueError(
            f"need one suffix per grammar, got {len(grammars)} grammars, {len(suffix_ids)} suffixes"
        )
    if any(len(s) == 0 for s in suffix_ids):
        raise ValueError("every suffix must hold at least one token (the model needs an input)")
    device = device if device is not None else getattr(step, "device", "cpu")
    for g in grammars:
        g.begin()
    try:
        return _decode(
            step, grammars, suffix_ids, prefix_cache, prefix_len, max_new_tokens,
            max_draft_tokens, pad_token_id, device, shrink, should_stop,
        )  # fmt: skip
    finally:
        for g in grammars:
            g.end()


def _decode(
    step: DecodeStep,
    grammars: Sequence[TokenGrammar],
    suffix_ids: Sequence[Sequence[int]],
    prefix_cache: Any,
    prefix_len: int | Sequence[int],
    max_new: int | None,
    max_draft: int,
    pad: int,
    device: Any,
    shrink: bool,
    should_stop: StopCheck | None,
) -> list[GenerationResult]:
    batch = _Batch(step, prefix_cache, prefix_len, len(grammars), pad, device, shrink)
    goals = [_Goal(g, GenerationResult()) for g in grammars]
    for b, goal in enumerate(goals):
        forced, goal.state = goal.grammar.forced(goal.state)
        goal.write(forced)
        goal.block = list(suffix_ids[b]) + list(forced)
        goal.committed = len(goal.block)
        _finish_or_draft(goal, max_draft, max_new)
    blocks = [goal.block for goal in goals]
    batch.shrink(blocks)
    while any(blocks):
        check_stop(should_stop)  # once per step: a cancelled decode ends before the next call
        # The choice points of every block, known before the model runs: (row, column) to ask
        # logits for, and per goal where its draft's free choices and its tail query are.
        where: list[tuple[int, int]] = []
        allowed: list[np.ndarray] = []
        plans: list[tuple[int, int] | None] = []
        for b, goal in enumerate(goals):
            if not goal.block:
                plans.append(None)
                continue
            goal.result.forward_calls += 1
            row, base = batch.index[b], goal.committed - 1
            first = len(where)
            walk = goal.walk
            if walk is not None:
                for j, a in walk.free:
                    where.append((row, base + j))
                    allowed.append(a)
                end = walk.states[-1]
                n_draft = len(walk.tokens)
            else:
                end, n_draft = goal.state, 0
            tail = -1
            if not goal.grammar.is_done(end):  # the choice after the whole draft
                tail = len(where)
                where.append((row, base + n_draft))
                allowed.append(goal.grammar.allowed(end))
            plans.append((first, tail))
        logits, offset = batch.forward(blocks, where)
        host = _host(logits)
        tokens = _choose(logits, allowed, host)
        used: list[list[int]] = [[] for _ in goals]  # queries whose probability is reported
        for b, goal in enumerate(goals):
            if plans[b] is None:
                continue
            first, tail = plans[b]
            res, walk, g = goal.result, goal.walk, goal.grammar
            kept, choice, state = 0, None, goal.state
            if walk is not None:
                kept = len(walk.tokens)
                for n, (j, _) in enumerate(walk.free):
                    q = first + n
                    if tokens[q] != walk.tokens[j]:
                        kept, choice = j, q
                        break
                    used[b].append(q)
                state = walk.states[kept]
                res.drafted += len(walk.tokens)
                res.accepted += kept
                goal.write(walk.tokens[:kept])
            batch.keep(b, offset, goal.committed + kept, len(goal.block))
            if choice is None:
                choice = tail
            if choice < 0:  # the draft reached the grammar's end
                res.complete, goal.block = True, []
                blocks[b] = goal.block
                continue
            token = tokens[choice]
            if len(g.allowed(state)) > 1:
                used[b].append(choice)
            state = g.advance(state, token)
            forced, state = g.forced(state)
            goal.write([token, *forced])
            goal.block, goal.committed, goal.state = [token, *forced], 1 + len(forced), state
            _finish_or_draft(goal, max_draft, max_new)
            blocks[b] = goal.block
        flat = [q for qs in used for q in qs]
        probs = iter(_probs(logits, flat, tokens, host))
        for b, qs in enumerate(used):
            goals[b].result.chosen_probs += [next(probs) for _ in qs]
        batch.shrink(blocks)
    results = [goal.result for goal in goals]
    for res, g in zip(results, grammars):
        eos = getattr(g, "eos", None)
        end = -1 if eos is not None and res.tokens[-1:] == [eos] else None
        res.text = g.codec.decode(res.tokens[:end])
    return results


def _finish_or_draft(goal: _Goal, max_draft: int, max_new: int | None) -> None:
    """End the goal when its grammar is done or the budget is spent; else draft after it."""
    res, g = goal.result, goal.grammar
    goal.walk = None
    if g.is_done(goal.state):
        res.complete, goal.block = True, []
        return
    if max_new is not None and len(res.tokens) >= max_new:
        del res.tokens[max_new:]
        goal.block = []
        return
    if max_draft > 0:
        limit = max_draft if max_new is None else min(max_draft, max_new - len(res.tokens))
        walk = goal.tracker.draft_walk(goal.state, limit)
        if walk.tokens:
            goal.walk = walk
            goal.block += walk.tokens


def greedy_generate(
    step: DecodeStep,
    suffix_ids: Sequence[Sequence[int]],
    max_new_tokens: int,
    prefix_cache: Any = None,
    prefix_len: int | Sequence[int] = 0,
    eos_token_id: int | None = None,
    stop_ids: Sequence[int] | None = None,
    pad_token_id: int = 0,
    device: torch.device | str | None = None,
    shrink: bool = True,
) -> list[GenerationResult]:
    """Unconstrained greedy decoding through the same step: the reference output.

    A row stops after ``eos_token_id``, after its tokens end with ``stop_ids`` (e.g. the tokens
    of ``"\\n</seg>"``), or after ``max_new_tokens``. ``text`` is left empty (no tokenizer here).
    """
    if not suffix_ids or any(len(s) == 0 for s in suffix_ids):
        raise ValueError("need at least one non-empty suffix")
    device = device if device is not None else getattr(step, "device", "cpu")
    batch = _Batch(step, prefix_cache, prefix_len, len(suffix_ids), pad_token_id, device, shrink)
    stop = list(stop_ids or [])
    results = [GenerationResult() for _ in suffix_ids]
    blocks = [list(s) for s in suffix_ids]
    while any(blocks):
        live = [b for b, block in enumerate(blocks) if block]
        where = [(batch.index[b], len(blocks[b]) - 1) for b in live]
        logits, offset = batch.forward(blocks, where)
        for n, b in enumerate(live):
            block = blocks[b]
            res = results[b]
            res.forward_calls += 1
            batch.keep(b, offset, len(block), len(block))
            probs = torch.softmax(logits[n].float(), -1)
            token = int(probs.argmax())
            res.tokens.append(token)
            res.chosen_probs.append(float(probs[token]))
            ended = token == eos_token_id or (stop and res.tokens[-len(stop) :] == stop)
            res.complete = bool(ended)
            blocks[b] = [] if ended or len(res.tokens) >= max_new_tokens else [token]
        batch.shrink(blocks)
    return results
