"""The lean decode loop: incremental drafts, per-step work independent of the answer's length,
logits asked for only at choice points, and grammar caches bounded across answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from text4seg_ros.decoding import OracleStep, constrained_generate
from text4seg_ros.decoding.drafts import DraftTracker, draft_text
from text4seg_ros.decoding.general_bpe import train_general_bpe
from text4seg_ros.descriptors import encode_mask
from text4seg_ros.descriptors.bsd import encode_instance
from text4seg_ros.descriptors.grammar import TokenCodec, bsd_grammar, rrle_grammar
from text4seg_ros.descriptors.grammar_core import TokenGrammar
from text4seg_ros.descriptors.rrle import SEG_CLOSE, SEG_OPEN


@pytest.fixture(scope="module")
def codec() -> TokenCodec:
    return TokenCodec(train_general_bpe(1024, 200_000))


def _mask(grid: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: 4 * grid, : 4 * grid]
    cy, cx, r = rng.integers(grid, 3 * grid, 2).tolist() + [int(rng.integers(grid // 2, grid))]
    return (yy - cy) ** 2 + (xx - cx) ** 2 < r * r


def _rrle_goal(codec: TokenCodec, grid: int, seed: int, label: str = "cup"):
    body = encode_mask(_mask(grid, seed), label, grid)
    grammar = rrle_grammar(codec, [label], grid, head=SEG_OPEN)
    return grammar, list(codec.encode_piece(SEG_OPEN + body + SEG_CLOSE))


def _bsd_goal(codec: TokenCodec, grid: int, seeds: list[int], label: str = "cup", eos: int = 0):
    triples = []
    for s in seeds:
        mask = _mask(grid, s)
        triples.append(encode_instance(mask, label, grid))
    grammar = bsd_grammar(codec, [label], eos, grid, max_instances=8)
    return grammar, list(codec.encode_piece("\n".join(triples))) + [eos]


@pytest.fixture(scope="module")
def sp_codec(tmp_path_factory) -> TokenCodec:
    """A Llama-2-shaped SentencePiece BPE (word-start marks, byte fallback for the newline)."""
    pytest.importorskip("sentencepiece")
    from text4seg_ros.model.tokenizer import llama_tokenizer, train_sentencepiece

    out = tmp_path_factory.mktemp("sp")
    return TokenCodec(llama_tokenizer(train_sentencepiece(1000, 200_000), out))


@pytest.mark.parametrize("which", ["bpe", "sentencepiece"])
def test_incremental_tracker_drafts_what_the_whole_text_drafts(which, request):
    """At every token of real answers (R-RLE and B-SD), the tracker fed token by token drafts
    exactly what :func:`draft_text` drafts from the whole text decoded so far (byte-level BPE
    and SentencePiece, whose pieces carry word-start marks)."""
    codec = request.getfixturevalue("codec" if which == "bpe" else "sp_codec")
    eos = 2 if which == "sentencepiece" else 0
    goals = [_rrle_goal(codec, 8, s) for s in range(3)] + [_bsd_goal(codec, 8, [1, 2, 3], eos=eos)]
    for grammar, target in goals:
        tracker = DraftTracker(grammar)
        checked = 0
        for n in range(len(target) + 1):
            text = codec.decode(target[:n])
            assert tracker.partial() == text.split("\n")[-1]
            assert tracker.draft() == draft_text(grammar, text), (n, text[-40:])
            checked += bool(tracker.draft())
            if n < len(target):
                tracker.feed([target[n]])
        assert checked > len(target) // 3  # drafts were offered along most of the answer


def test_loop_never_decodes_more_than_one_line_per_step(codec, monkeypatch):
    """Work per step does not grow with the answer: the tokens decoded per step while
    decoding stay bounded by a line (a grid row), at G = 8 and at G = 32 alike."""
    per_step = {}
    for grid in (8, 32):
        grammar, target = _rrle_goal(codec, grid, 5)
        decoded = []
        real = TokenCodec.decode

        def counting(self, tokens, _real=real, _log=decoded):
            _log.append(len(tokens))
            return _real(self, tokens)

        monkeypatch.setattr(TokenCodec, "decode", counting)
        step = OracleStep([target], [3], codec.tokenizer.get_vocab_size())
        out = constrained_generate(step, [grammar], [[1, 2, 3]], prefix_len=0)
        monkeypatch.setattr(TokenCodec, "decode", real)
        assert out[0].tokens == target
        line = max(len(codec.encode_piece(x)) for x in codec.decode(target).split("\n")) + 2
        assert max(decoded[:-1], default=0) <= line  # the last is the answer's text, once
        per_step[grid] = sum(decoded[:-1]) / step.calls
    assert per_step[32] < 4 * per_step[8] + 40  # rows are 4x longer; answers 16x


def test_logits_are_asked_for_only_at_choice_points(codec):
    """The loop hands the step ``select``: one position per free choice of a draft plus the one
    after it, never the whole block (the output head would run over every draft token)."""
    grammar, target = _rrle_goal(codec, 16, 7)
    oracle = OracleStep([target], [3], codec.tokenizer.get_vocab_size())
    asked, fed = [], []

    def step(ids, pos, mask, cache, select=None):
        asked.append(int(select.numel()))
        fed.append(int(ids.numel()))
        return oracle(ids, pos, mask, cache, select=select)

    step.selects = True
    step.select_cache = oracle.select_cache
    out = constrained_generate(step, [grammar], [[1, 2, 3]])
    assert out[0].tokens == target
    assert sum(asked) < sum(fed) / 2  # most block positions are forced or drafted tokens


def test_selecting_steps_and_full_logit_steps_decode_identically(codec):
    """A step without ``select`` (full ``(B, T, V)`` logits) gives the same tokens, calls and
    probabilities as one with it, batched, drafts on and off."""
    goals = [_rrle_goal(codec, 8, s) for s in range(3)]
    targets = [t for _, t in goals]
    vocab = codec.tokenizer.get_vocab_size()

    class Full:
        def __init__(self):
            self.o = OracleStep(targets, [3, 3, 3], vocab)
            self.select_cache = self.o.select_cache

        def __call__(self, ids, pos, mask, cache):
            return self.o(ids, pos, mask, cache)

    for drafts in (0, 64):
        a = constrained_generate(
            OracleStep(targets, [3, 3, 3], vocab),
            [g for g, _ in goals],
            [[1, 2, 3]] * 3,
            max_draft_tokens=drafts,
        )
        b = constrained_generate(
            Full(), [g for g, _ in goals], [[1, 2, 3]] * 3, max_draft_tokens=drafts
        )
        for x, y, t in zip(a, b, targets):
            assert x.tokens == y.tokens == t
            assert x.forward_calls == y.forward_calls
            assert x.chosen_probs == pytest.approx(y.chosen_probs)


def test_bsd_grammar_cache_is_bounded_across_answers(codec, monkeypatch):
    """A standing ``instances`` goal writes new boxes every frame; each new box adds automaton
    states. With the bound, the grammar drops its caches between answers, so the states held
    stay under the bound (plus one answer's), and answers stay right after every reset."""
    monkeypatch.setattr(TokenGrammar, "max_states", 400)
    grammar = bsd_grammar(codec, ["mug"], 0, 8, max_instances=4)
    vocab = codec.tokenizer.get_vocab_size()
    peak = 0
    for frame in range(40):
        _, target = _bsd_goal(codec, 8, [3 * frame, 3 * frame + 1], label="mug")
        step = OracleStep([target], [3], vocab)
        out = constrained_generate(step, [grammar], [[1, 2, 3]])
        assert out[0].tokens == target and out[0].complete
        peak = max(peak, grammar.n_states)
    assert grammar.resets > 0
    assert peak < 400 + 600  # the bound plus one answer's new states


def test_begin_end_keep_states_of_answers_in_flight(codec, monkeypatch):
    """No reset while an answer is being decoded with the grammar (its states stay valid)."""
    monkeypatch.setattr(TokenGrammar, "max_states", 1)
    grammar = rrle_grammar(codec, ["vase"], 4)
    grammar.begin()  # over the bound (the build-time check walked many states): reset
    resets = grammar.resets
    assert resets >= 1 and grammar.n_states == 1
    state = grammar.advance(grammar.start(), int(grammar.allowed(grammar.start())[0]))
    grammar.begin()  # a second answer starts while the first is in flight: no reset
    assert grammar.resets == resets and grammar.n_states > 1
    assert len(grammar.allowed(state)) > 0
    grammar.end()
    grammar.end()
    grammar.begin()  # nothing in flight and over the bound: reset
    assert grammar.resets == resets + 1 and grammar.n_states == 1
    grammar.end()


def test_empty_selection_returns_no_rows(codec):
    """A block whose draft runs to the grammar's end asks for nothing; steps get ``select``
    with zero positions and the loop still finishes the goal."""
    grammar, target = _rrle_goal(codec, 4, 1)
    step = OracleStep([target], [3], codec.tokenizer.get_vocab_size())
    logits, _ = step(
        torch.tensor([[5, 6]]),
        torch.tensor([[3, 4]]),
        torch.ones(1, 2, dtype=torch.long),
        None,
        select=torch.zeros(0, dtype=torch.long),
    )
    assert logits.shape == (0, codec.tokenizer.get_vocab_size())
    out = constrained_generate(step, [grammar], [[1, 2, 3]])
    assert out[0].tokens == target and out[0].complete


def test_masked_argmax_and_probs_agree_on_host_and_torch_paths():
    """The loop reads CPU logits with numpy and accelerator logits with torch: the same choices
    (ties to the lowest allowed id) and the same probabilities either way."""
    from text4seg_ros.decoding.loop import _choose, _host, _probs

    rng = np.random.default_rng(0)
    logits = torch.from_numpy(rng.standard_normal((6, 50)).astype(np.float32))
    logits[2, 7] = logits[2, 9] = 10.0  # a tie: the lower id wins
    allowed = [np.sort(rng.choice(50, n, replace=False)) for n in (1, 3, 8, 2, 5, 50)]
    allowed[2] = np.array([3, 7, 9])
    host = _host(logits)
    tokens = _choose(logits, allowed, host)
    assert tokens == _choose(logits, allowed, None)
    assert tokens[2] == 7
    for n, a in enumerate(allowed):  # against a plain per-row masked argmax
        assert tokens[n] == int(a[np.argmax(logits[n].numpy()[a])])
    used = [0, 2, 5]
    probs = _probs(logits, used, tokens, host)
    expected = torch.softmax(logits[used], 1)[torch.arange(3), [tokens[q] for q in used]]
    np.testing.assert_allclose(probs, expected.numpy(), rtol=1e-5)
    np.testing.assert_allclose(_probs(logits, used, tokens, None), probs, rtol=1e-5)
    assert _choose(logits, [], host) == [] and _probs(logits, [], tokens, host) == []
    assert host is not None and _host(logits.double()).dtype == np.float32
