"""The batch shrinks: finished goals leave it, dead cache slots are cut, results stay the same."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import DynamicCache, LlamaForCausalLM
from transformers.cache_utils import DynamicSlidingWindowLayer

from text4seg_ros.decoding import (
    HFCausalLMStep,
    OracleStep,
    constrained_generate,
    greedy_generate,
    prefill,
)
from text4seg_ros.decoding.general_bpe import train_general_bpe
from text4seg_ros.decoding.loop import _Batch
from text4seg_ros.decoding.step import select_cache
from text4seg_ros.descriptors.bsd import parse_bsd
from text4seg_ros.descriptors.grammar import TokenCodec, bsd_grammar, rrle_grammar
from text4seg_ros.descriptors.rrle import parse_rrle
from text4seg_ros.model.tiny import random_llama

G = 8
EOS = 0  # <|endoftext|> of the general BPE
PREFIX = "You are the eyes of a robot.\n"
MAX_INSTANCES = 4


@pytest.fixture(scope="module")
def codec() -> TokenCodec:
    return TokenCodec(train_general_bpe(1024, 200_000))


def _llama(vocab: int, seed: int) -> LlamaForCausalLM:
    """Random weights in float64, so no near-tie can flip between batch shapes."""
    return random_llama(vocab, seed, max_positions=4096, dtype=torch.float64)


class Recorder:
    """Wraps a step; records the batch rows and the cache part of the attention mask per call."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.widths: list[int] = []
        self.cache_masks: list[torch.Tensor] = []

    def __call__(self, ids, pos, mask, cache):
        self.widths.append(ids.shape[0])
        self.cache_masks.append(mask[:, : mask.shape[1] - ids.shape[1]].clone())
        return self.inner(ids, pos, mask, cache)


class Opaque:
    """An engine's own cache object that the loop cannot slice."""

    def __init__(self, cache) -> None:
        self.cache = cache


class OpaqueStep:
    """A step whose cache is an :class:`Opaque` and which has no ``select_cache``."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def __call__(self, ids, pos, mask, cache):
        logits, out = self.inner(ids, pos, mask, cache.cache if cache is not None else None)
        return logits, Opaque(out)


def _mixed(codec: TokenCodec):
    """Three short I-SD goals around one long B-SD goal (a random model lists every instance)."""
    grammars = [
        rrle_grammar(codec, ["cup"], G),
        rrle_grammar(codec, ["the black swan"], G),
        bsd_grammar(codec, ["cup"], EOS, grid=G, max_instances=MAX_INSTANCES),
        rrle_grammar(codec, ["dining table", "cat"], G),
    ]
    questions = ["cup?\n<seg>", "Where is the swan?\n<seg>", "instances of cup:\n", "table\n<seg>"]
    return grammars, [list(codec.encode(q)) for q in questions]


def _run(model, codec, grammars, suffixes, wrap=Recorder, **kwargs):
    step = wrap(HFCausalLMStep(model))
    cache, n = prefill(HFCausalLMStep(model), list(codec.encode(PREFIX)), len(grammars))
    if isinstance(step, OpaqueStep):
        cache = Opaque(cache)
    return constrained_generate(step, grammars, suffixes, cache, n, **kwargs), step


@pytest.fixture(scope="module")
def mixed(codec):
    model = _llama(codec.tokenizer.get_vocab_size(), seed=0)
    grammars, suffixes = _mixed(codec)
    shrunk, rec = _run(model, codec, grammars, suffixes)
    full, rec_full = _run(model, codec, grammars, suffixes, shrink=False)
    singles = [_run(model, codec, [g], [s])[0][0] for g, s in zip(grammars, suffixes)]
    return model, grammars, suffixes, (shrunk, rec), (full, rec_full), singles


def _same(a, b) -> None:
    assert a.tokens == b.tokens and a.text == b.text
    assert a.forward_calls == b.forward_calls and a.complete == b.complete
    assert (a.drafted, a.accepted) == (b.drafted, b.accepted)
    np.testing.assert_allclose(a.chosen_probs, b.chosen_probs, rtol=1e-9)


def test_mixed_batch_equals_singles_and_finished_goals_leave(mixed):
    _, grammars, _, (shrunk, rec), (full, rec_full), singles = mixed
    for a, b, c in zip(shrunk, full, singles):
        _same(a, c)
        _same(b, c)
    bsd = shrunk[2]
    instances, repairs = parse_bsd(bsd.text, ["cup"], G)
    assert not repairs and len(instances) == MAX_INSTANCES  # the bound is what stopped it
    short = max(r.forward_calls for i, r in enumerate(shrunk) if i != 2)
    assert bsd.forward_calls > 2 * short  # the B-SD goal runs far longer than the others
    for r, g in zip(shrunk, grammars):
        if g is not grammars[2]:
            assert parse_rrle("<seg>" + r.text, g.names, G).valid
    # the previous behaviour: every goal in every call; now the batch shrinks to the long goal
    assert rec_full.widths == [4] * bsd.forward_calls
    assert len(rec.widths) == bsd.forward_calls
    assert rec.widths[0] == 4 and rec.widths[-1] == 1
    assert all(a >= b for a, b in zip(rec.widths, rec.widths[1:]))
    for calls in range(1, 5):  # a goal is in the batch for exactly its own forward calls
        assert (
            sum(w >= calls for w in rec.widths)
            == sorted((r.forward_calls for r in shrunk), reverse=True)[calls - 1]
        )
    assert sum(rec.widths) == sum(r.forward_calls for r in shrunk) < sum(rec_full.widths)


def _dead(mask: torch.Tensor) -> int:
    """Slots dead to every row (what no packing order can keep)."""
    return int((~mask.bool().any(0)).sum())


def _slack(mask: torch.Tensor) -> int:
    """Cache length beyond the longest row's live slots (what per-row packing removes)."""
    return mask.shape[1] - int(mask.bool().sum(1).max())


def test_dead_cache_slots_are_cut(mixed):
    *_, (shrunk, rec), (full, rec_full), _ = mixed
    # without shrinking, slots nobody attends to pile up (pads, rejected drafts, finished rows)
    last = rec_full.cache_masks[-1]
    assert _dead(last) > last.shape[1] // 2
    assert _slack(last) > last.shape[1] // 2
    # with it, the cache a call sees is never longer than the packing threshold allows
    for mask in rec.cache_masks[1:]:
        assert _slack(mask) < max(_Batch.MIN_DEAD, mask.shape[1] // 4)
    # rows were packed each their own way (a slot live in one row, dead in another)
    assert any(((m == 0).any(0) & (m == 1).any(0)).any() for m in rec.cache_masks[1:])
    assert rec.cache_masks[-1].shape[1] < last.shape[1] // 2
    assert any(b.shape[1] < a.shape[1] for a, b in zip(rec.cache_masks, rec.cache_masks[1:]))


def test_engine_cache_that_cannot_be_sliced_keeps_rows(mixed, codec):
    model, grammars, suffixes, (shrunk, _), *_ = mixed
    calls: list[int] = []

    class Counting(OpaqueStep):
        def __call__(self, ids, pos, mask, cache):
            calls.append(ids.shape[0])
            return super().__call__(ids, pos, mask, cache)

    out, _ = _run(model, codec, grammars, suffixes, wrap=Counting)
    for a, b in zip(out, shrunk):
        _same(a, b)
    assert calls == [4] * shrunk[2].forward_calls  # rows stayed, masked, as before


def test_select_cache_cuts_rows_and_slots():
    gen = torch.Generator().manual_seed(0)
    data = [
        (torch.randn(3, 2, 5, 4, generator=gen), torch.randn(3, 2, 5, 4, generator=gen))
        for _ in range(2)
    ]
    cache = DynamicCache(ddp_cache_data=[(k.clone(), v.clone()) for k, v in data])
    rows, cols = torch.tensor([0, 2]), torch.tensor([0, 1, 4])
    assert select_cache(cache, rows, None) is cache
    assert select_cache(cache, None, cols) is cache
    for layer, (k, v) in zip(cache.layers, data):
        assert torch.equal(layer.keys, k[[0, 2]][:, :, [0, 1, 4]])
        assert torch.equal(layer.values, v[[0, 2]][:, :, [0, 1, 4]])
    assert cache.get_seq_length() == 3
    per_row = torch.tensor([[2, 0], [1, 2]])  # each row its own slots, in its own order
    before = [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]
    select_cache(cache, None, per_row)
    for layer, (k, v) in zip(cache.layers, before):
        for r in range(2):
            assert torch.equal(layer.keys[r], k[r][:, per_row[r]])
            assert torch.equal(layer.values[r], v[r][:, per_row[r]])
    assert select_cache(None, rows, cols) is None
    with pytest.raises(NotImplementedError, match="cannot slice a Opaque"):
        select_cache(Opaque(cache), rows, None)
    sliding = DynamicCache()
    sliding.layers = [DynamicSlidingWindowLayer(sliding_window=8)]
    sliding.layers[0].update(*data[0])
    select_cache(sliding, rows, None)  # rows: fine for sliding-window layers
    assert sliding.layers[0].keys.shape[0] == 2
    with pytest.raises(NotImplementedError, match="plain DynamicLayer"):
        select_cache(sliding, None, cols)


def test_oracle_goals_leave_the_batch(codec):
    """The teacher-forced oracle follows row drops: each goal still decodes its own answer."""
    from text4seg_ros.descriptors import encode_mask
    from text4seg_ros.descriptors.rrle import SEG_CLOSE

    yy, xx = np.mgrid[:32, :32]
    masks = [xx < 0, (yy - 16) ** 2 + (xx - 18) ** 2 < 90, (yy > xx) & (yy < 28), xx > yy // 2]
    labels = ["cup", "the black swan", "dining table", "cat"]
    targets = [
        list(codec.encode(encode_mask(m, lab, G) + SEG_CLOSE)) for m, lab in zip(masks, labels)
    ]
    suffixes = [list(codec.encode(f"Segment the {lab}.\n<seg>")) for lab in labels]
    grammars = [rrle_grammar(codec, [lab], G) for lab in labels]
    oracle = OracleStep(targets, [len(s) for s in suffixes], codec.tokenizer.get_vocab_size())
    rec = Recorder(oracle)
    rec.select_cache = oracle.select_cache  # the oracle's own row bookkeeping
    out = constrained_generate(rec, grammars, suffixes, max_draft_tokens=0)
    assert [r.tokens for r in out] == targets
    assert rec.widths[0] == 4 and rec.widths[-1] == 1 and len(set(rec.widths)) > 2
    assert sum(rec.widths) == sum(r.forward_calls for r in out)


def test_greedy_reference_rows_leave_and_match_singles(codec):
    """The unconstrained reference loop shrinks too: rows that hit EOS leave, others go on."""
    model = _llama(codec.tokenizer.get_vocab_size(), seed=1)
    prefix = list(codec.encode(PREFIX))
    suffixes = [list(codec.encode(q)) for q in ("cup?", "Where is the swan?", "table", "hi")]

    def run(rows, eos, shrink=True):
        step = Recorder(HFCausalLMStep(model))
        cache, n = prefill(step.inner, prefix, len(rows))
        return greedy_generate(step, rows, 12, cache, n, eos, shrink=shrink), step

    free, _ = run(suffixes, None)
    eos = free[1].tokens[3]  # goal 1 stops after at most 4 tokens, the others maybe later
    batched, rec = run(suffixes, eos)
    kept, rec_kept = run(suffixes, eos, shrink=False)
    singles = [run([s], eos)[0][0] for s in suffixes]
    for a, b, c in zip(batched, kept, singles):
        assert a.tokens == b.tokens == c.tokens and a.forward_calls == c.forward_calls
        np.testing.assert_allclose(a.chosen_probs, c.chosen_probs, rtol=1e-9)
    assert len(batched[1].tokens) <= 4 < max(len(r.tokens) for r in batched)
    assert rec.widths[-1] < 4 and sum(rec.widths) == sum(r.forward_calls for r in batched)
    assert set(rec_kept.widths) == {4}


def test_per_row_prefix_lengths_mask_each_rows_padding():
    """A stacked prefix (one per goal): row r attends to its own first prefix_len[r] slots only,
    and continues at position prefix_len[r]."""
    from text4seg_ros.decoding.loop import prefix_lengths

    step = OracleStep([[1]] * 3, [0] * 3, vocab=4)
    batch = _Batch(step, None, [3, 5, 0], 3, pad=0, device="cpu")
    assert batch.mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]]
    assert batch.pos == [3, 5, 0] and batch.live == [3, 5, 0]
    assert prefix_lengths(4, 2) == [4, 4]
    with pytest.raises(ValueError, match="2 lengths for 3 rows"):
        prefix_lengths([1, 2], 3)
    with pytest.raises(ValueError, match=">= 0"):
        prefix_lengths([1, -2], 2)
