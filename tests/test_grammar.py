"""Token-level descriptor grammars: masks, forced runs, canonical tokens, validity of every walk."""

from __future__ import annotations

import random
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from text4seg_ros.decoding.general_bpe import train_general_bpe
from text4seg_ros.descriptors.bsd import encode_instances, parse_bsd
from text4seg_ros.descriptors.grammar import (
    BSDGrammar,
    RRLEGrammar,
    TokenCodec,
    TokenGrammar,
    rrle_grammar,
)
from text4seg_ros.descriptors.rrle import SEG_CLOSE, encode_grid, parse_rrle
from text4seg_ros.model.tokenizer import (
    QWEN_CHAT_TEMPLATE,
    QWEN_SPECIALS,
    build_tokenizer,
    llama_tokenizer,
    train_sentencepiece,
)

# The codec fixture is module-scoped and stateless across examples.
FIXTURE_OK = [HealthCheck.function_scoped_fixture]
LABELS = ["cup", "tête de lit", "the black swan", "日本", "cat", "catalog", "others"]


@pytest.fixture(
    scope="module", params=["qwen_regex_general", "gpt2_regex_tiny_backbone", "llama_sentencepiece"]
)
def codec(request, tmp_path_factory) -> TokenCodec:
    """A Qwen2-shaped BPE on general text, the tiny backbones' own tokenizer, and a Llama-2-
    shaped SentencePiece BPE on general text loaded as transformers' LlamaTokenizer.

    Descriptors stand inside answers, so "canonical tokens" here are ``encode_piece``'s (the
    tokens of a text after a token boundary; for byte-level BPEs the same as ``encode``)."""
    if request.param == "qwen_regex_general":
        return TokenCodec(train_general_bpe(1024, 200_000))
    if request.param == "llama_sentencepiece":
        pytest.importorskip("sentencepiece")
        out = tmp_path_factory.mktemp("sp")
        return TokenCodec(llama_tokenizer(train_sentencepiece(1000, 200_000), out))
    return TokenCodec(build_tokenizer(QWEN_SPECIALS, QWEN_CHAT_TEMPLATE, {}))


def _walk(grammar: TokenGrammar, rng: random.Random, eos_bias: float = 0.0) -> list[int]:
    """A random sentence: at every state a uniformly drawn allowed token."""
    state, out = grammar.start(), []
    while not grammar.is_done(state):
        allowed = grammar.allowed(state).tolist()
        eos = getattr(grammar, "eos", None)
        token = eos if eos in allowed and rng.random() < eos_bias else rng.choice(allowed)
        out.append(token)
        state = grammar.advance(state, token)
    return out


def _grid_text(grid: np.ndarray, names: list[str]) -> str:
    return encode_grid(grid, names) + SEG_CLOSE


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    g=st.integers(1, 16),
    labels=st.lists(st.sampled_from(LABELS[:5]), min_size=1, max_size=3, unique=True),
    seed=st.integers(0, 2**31),
)
def test_encoder_output_is_accepted_with_its_canonical_tokens(codec, g, labels, seed):
    """Every descriptor the encoder writes is a sentence, spelled by tokenizer.encode's tokens."""
    grammar = rrle_grammar(codec, labels, g)
    rng = np.random.default_rng(seed)
    # blocky grids (like masks) and noise
    grid = rng.integers(0, len(grammar.names), (g, g))
    if seed % 2:
        grid = np.repeat(grid[:, :1], g, 1)
    tokens = codec.encode_piece(_grid_text(grid, grammar.names))
    assert grammar.accepts(tokens)
    # walking the tokens: each is allowed; each forced run is what the text has next
    state, i = grammar.start(), 0
    while not grammar.is_done(state):
        forced, after = grammar.forced(state)
        assert tuple(tokens[i : i + len(forced)]) == forced
        if forced:
            state, i = after, i + len(forced)
            continue
        assert tokens[i] in grammar.allowed(state)
        state, i = grammar.advance(state, tokens[i]), i + 1
    assert i == len(tokens)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(g=st.integers(1, 12), n_labels=st.integers(1, 4), seed=st.integers(0, 2**31))
def test_random_walks_are_valid_canonical_descriptors(codec, g, n_labels, seed):
    """Any path through the automaton is a repair-free descriptor and encode()'s own tokens."""
    grammar = rrle_grammar(codec, LABELS[:n_labels], g)
    tokens = _walk(grammar, random.Random(seed))
    text = codec.decode(tokens)
    assert text.endswith("\n" + SEG_CLOSE)
    parsed = parse_rrle("<seg>" + text, grammar.names, g)
    assert parsed.valid, parsed.repairs
    assert tuple(tokens) == codec.encode_piece(text)  # canonical: what a fine-tuned model emits
    for row in text[: -len(SEG_CLOSE) - 1].split("\n"):  # maximal runs (distinct neighbours)
        labels = [run.strip().rpartition(" *")[0] for run in row.split("|")]
        assert all(a != b for a, b in zip(labels, labels[1:]))


def test_masks_and_forced_runs_by_hand(codec):
    grammar = RRLEGrammar(codec, ["cup"], grid=16)
    first = {codec.encode_piece("others *")[0], codec.encode_piece("cup *")[0]}
    state = grammar.start()
    assert set(grammar.allowed(state).tolist()) == first
    assert grammar.forced(state) == ((), state)
    vocab = max(first) + 5
    assert np.flatnonzero(grammar.mask(state, vocab)).tolist() == sorted(first)
    with pytest.raises(ValueError, match="vocab_size"):
        grammar.mask(state, max(first))
    state = grammar.advance(state, codec.encode_piece("cup *")[0])
    forced, state = grammar.forced(state)
    assert codec.decode(forced) == "cup *"[len(codec.piece(codec.encode_piece("cup *")[0])) :]
    digits = {codec.piece(t) for t in grammar.allowed(state).tolist()}
    assert digits == set("123456789")  # count 1..16: no leading zero
    state = grammar.advance(state, codec.encode_piece("1")[0])
    digits = {codec.piece(t) for t in grammar.allowed(state).tolist()}
    assert digits == set("0123456") | {"|"}  # 1 then "| ", or 10..16
    state = grammar.advance(state, codec.encode_piece("5")[0])
    forced, state = grammar.forced(state)  # 15 cells of cup: the row ends "| others *1\n"
    assert codec.decode(forced) == "| others *1\n"
    starts = {codec.encode_piece(" others *")[0], codec.encode_piece(" cup *")[0]}
    assert set(grammar.allowed(state).tolist()) == starts  # the next row's label is free
    with pytest.raises(ValueError, match="not allowed"):
        grammar.advance(state, codec.encode_piece("7")[0])


def test_distinct_runs_off_allows_split_runs(codec):
    text = "others *1| others *1\n cup *2\n" + SEG_CLOSE
    assert not rrle_grammar(codec, ["cup"], 2).accepts(codec.encode_piece(text))
    assert rrle_grammar(codec, ["cup"], 2, distinct_runs=False).accepts(codec.encode_piece(text))
    # wrong row sums, extra rows, unknown labels, missing </seg> are never sentences
    grammar = rrle_grammar(codec, ["cup"], 2)
    for bad in ("others *3\n cup *2\n", "others *1\n cup *2\n", "dog *2\n cup *2\n", "cup *2\n"):
        assert not grammar.accepts(codec.encode_piece(bad + SEG_CLOSE))
    assert not grammar.accepts(codec.encode_piece("cup *2\n cup *2\n"))


def test_bsd_grammar_accepts_encoder_output_and_walks_are_valid(codec):
    eos = 0
    grammar = BSDGrammar(codec, ["cup"], eos, grid=8, max_instances=3)
    mask = np.zeros((48, 64), bool)
    mask[5:30, 10:40] = True
    other = np.zeros_like(mask)
    other[30:47, 50:63] = True
    for masks in ([mask], [mask, other], []):
        text = encode_instances(masks, "cup", 8)
        assert grammar.accepts(codec.encode_piece(text) + (eos,)), text
    assert grammar.accepts((eos,))  # no instance: an empty answer
    bricks = BSDGrammar(codec, ["cup"], eos, grid=8, bricks=True)
    assert bricks.accepts(
        codec.encode_piece(encode_instances([mask], "cup", 8, bricks=True)) + (eos,)
    )
    rng = random.Random(0)
    for _ in range(20):
        tokens = _walk(grammar, rng, eos_bias=0.3)
        assert tokens[-1] == eos
        text = codec.decode(tokens[:-1])
        instances, repairs = parse_bsd(text, ["cup"], 8)
        assert not repairs and all(not inst.repairs for inst in instances), text
        assert len(instances) == text.count("<ref>")
        for inst in instances:
            x1, y1, x2, y2 = inst.qbox
            assert 0 <= x1 < x2 <= 1000 and 0 <= y1 < y2 <= 1000


def test_bad_arguments_give_clear_errors(codec):
    with pytest.raises(ValueError, match="besides"):
        RRLEGrammar(codec, ["others"], 4)
    with pytest.raises(ValueError, match="must not contain"):
        RRLEGrammar(codec, ["a|b"], 4)
    with pytest.raises(TypeError, match="sequence"):
        RRLEGrammar(codec, "cup", 4)
    with pytest.raises(ValueError, match="grid"):
        RRLEGrammar(codec, ["cup"], 0)
    with pytest.raises(TypeError, match="grid"):
        RRLEGrammar(codec, ["cup"], True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="grid"):
        BSDGrammar(codec, ["cup"], 0, 0)
    with pytest.raises(TypeError, match="max_instances"):
        BSDGrammar(codec, ["cup"], 0, 8, max_instances="3")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="eos_token_id"):
        BSDGrammar(codec, ["cup"], None, 8)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="even"):
        BSDGrammar(codec, ["cup"], 0, 7, bricks=True)
    with pytest.raises(TypeError, match="encode"):
        TokenCodec(object())


def test_tokenizer_merging_across_separators_is_refused():
    """A BPE without pre-tokenization learns merges like "6\\n" and cannot be constrained."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(["others *16\n cup *4| others *12\n </seg>"] * 50, trainer)
    with pytest.raises(ValueError, match="merges tokens across descriptor separators"):
        RRLEGrammar(TokenCodec(tok), ["cup"], 16)


def test_a_cached_step_costs_microseconds(codec):
    grammar = rrle_grammar(codec, ["cup", "dining table"], 16)
    walks = [_walk(grammar, random.Random(s)) for s in range(5)]
    start = time.perf_counter()
    steps = 0
    for _ in range(3):
        for tokens in walks:
            state = grammar.start()
            for t in tokens:
                grammar.allowed(state)
                state = grammar.advance(state, t)
                steps += 1
    per_step = (time.perf_counter() - start) / steps
    assert per_step < 200e-6, f"{per_step * 1e6:.1f} us per cached step"


def test_a_shared_grammar_is_safe_across_threads(codec):
    """Segmenters share cached grammars; concurrent lazy growth must keep states consistent."""
    from concurrent.futures import ThreadPoolExecutor

    grammar = RRLEGrammar(codec, ["cup", "dining table", "cat"], 12)

    def walk(seed: int) -> list[int]:
        return _walk(grammar, random.Random(seed))

    with ThreadPoolExecutor(4) as pool:
        walks = list(pool.map(walk, range(32)))
    for tokens in walks:
        assert grammar.accepts(tokens)
        assert parse_rrle("<seg>" + codec.decode(tokens), grammar.names, 12).valid


def test_pieces_are_encoded_in_context(codec, request):
    """Byte-level BPEs tokenize a piece alone as inside a text; SentencePiece marks the first
    word of a standalone text with "▁", which encode_piece leaves out (as inside a text)."""
    assert codec.anchor == "0"  # digits are cut on both sides in every supported tokenizer
    text = "others *16\n cup *4| others *12\n"
    inside = codec.encode("1" + text)[len(codec.encode("1")) :]
    assert codec.encode_piece(text) == inside
    assert codec.decode(codec.encode_piece(" cup *")) == " cup *"
    assert codec.piece(codec.encode_piece(" *")[0]) == " *"
    sentencepiece = "sentencepiece" in request.node.callspec.id
    assert (codec.encode(text) != inside) == sentencepiece


def test_codec_caches_only_short_texts(codec) -> None:
    from text4seg_ros.descriptors.grammar_codec import CACHE_MAX_CHARS

    long_text = "others *16\n " * 40
    assert len(long_text) > CACHE_MAX_CHARS
    first = codec.encode(long_text)
    assert codec.encode(long_text) == first and long_text not in codec._encode_cache
    codec.encode("cup *3")
    assert "cup *3" in codec._encode_cache
