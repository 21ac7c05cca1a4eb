"""Constrained decoding with a SentencePiece tokenizer shaped like Llama-2's (LLaVA-1.5 family).

The tokenizer is a SentencePiece BPE trained here on general English (standard-library
docstrings, never a descriptor) with Llama-2's trainer settings (``split_digits``,
``byte_fallback``, dummy prefix, identity normalization) and loaded from a bare
``tokenizer.model`` as transformers' ``LlamaTokenizer``, which is how the research LLaVA
checkpoints ship it and how :mod:`text4seg_ros.model.llava_original` loads it.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from text4seg_ros.decoding import constrained_generate
from text4seg_ros.decoding.step import HFCausalLMStep
from text4seg_ros.descriptors.bsd import encode_instances, parse_bsd
from text4seg_ros.descriptors.grammar import TokenCodec, bsd_grammar, rrle_grammar
from text4seg_ros.descriptors.rrle import SEG_CLOSE, SEG_OPEN, encode_grid, parse_rrle
from text4seg_ros.model.tiny import random_llama
from text4seg_ros.model.tokenizer import llama_tokenizer, train_sentencepiece
from text4seg_ros.prompts import Task, answer_prefix

spm = pytest.importorskip("sentencepiece")

LABELS = ["the black swan", "cup", "red mug left of the laptop", "tête de lit", "日本"]
PROMPT = answer_prefix(Task.RES, "the black swan")  # "Sure, ... 'the black swan':\n"


@pytest.fixture(scope="module")
def proto() -> bytes:
    return train_sentencepiece(2000, 300_000)


@pytest.fixture(scope="module")
def tok(proto, tmp_path_factory):
    return llama_tokenizer(proto, tmp_path_factory.mktemp("sp"))


@pytest.fixture(scope="module")
def codec(tok) -> TokenCodec:
    return TokenCodec(tok)


def ids(tok, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False)["input_ids"])


def answer_tokens(tok, prompt: str, answer: str) -> list[int]:
    """Tokens of ``answer`` inside the whole text ``prompt + answer`` (asserting the cut)."""
    whole, head = ids(tok, prompt + answer), ids(tok, prompt)
    assert whole[: len(head)] == head, "the prompt's tokens change when the answer follows"
    return whole[len(head) :]


def test_tokenizer_is_shaped_like_llama2(proto, tok, codec):
    """Converted LlamaTokenizer == SentencePiece itself; digits split, "\\n" a byte, "▁" marks."""
    sp = spm.SentencePieceProcessor(model_proto=proto)
    text = PROMPT + "<seg>others *16\n the black swan *3| others *13\n</seg>"
    assert ids(tok, text) == sp.encode(text)
    pieces = tok.convert_ids_to_tokens(ids(tok, text))
    assert "<0x0A>" in pieces and "\n" not in pieces  # byte fallback, as Llama-2's 13
    numeric = [p for p in pieces if any(c.isdigit() for c in p) and not p.startswith("<0x")]
    assert numeric == list("16313")  # digits split, one per token
    assert "▁*" in pieces
    # The dummy prefix: standalone encoding differs from the same text inside an answer, which
    # is why the grammar encodes pieces in context.
    assert tok.convert_ids_to_tokens(ids(tok, "others *1"))[0].startswith("▁")
    assert not tok.convert_ids_to_tokens(codec.encode_piece("others *1"))[0].startswith("▁")
    assert codec.piece(codec.encode_piece(" *")[0]) == " *"  # decode keeps the mark's space
    assert tok.decode(codec.encode_piece(" *")) == "*"  # (plain decode strips it)


def test_separators_and_multi_word_labels_by_hand(tok, codec):
    """'\\n ' rows and '| ' runs: the label after them carries the word-start mark."""
    grammar = rrle_grammar(codec, ["the black swan"], 2, head=SEG_OPEN)
    body = "the black swan *2\n others *1| the black swan *1\n" + SEG_CLOSE
    tokens = answer_tokens(tok, PROMPT, SEG_OPEN + body)
    assert grammar.accepts(tokens)
    pieces = tok.convert_ids_to_tokens(tokens)
    text = "".join(pieces)
    assert "<0x0A>▁other" in text and "|▁the▁b" in text
    assert codec.decode(tokens) == SEG_OPEN + body
    # the first label is glued to "<seg>" (no mark), later ones are words of their own
    assert not pieces[pieces.index(">") + 1].startswith("▁")
    # forced runs: "<seg>" then a free choice of the first label; digits one per token
    state = grammar.start()
    forced, state = grammar.forced(state)
    assert codec.decode(forced) == SEG_OPEN
    assert len(grammar.allowed(state)) == 2  # "other..." or "the..."


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    g=st.integers(1, 16),
    labels=st.lists(st.sampled_from(LABELS), min_size=1, max_size=3, unique=True),
    seed=st.integers(0, 2**31),
)
def test_encoder_output_in_its_answer_is_accepted(tok, codec, g, labels, seed):
    """The tokens of a descriptor inside its whole answer text are a sentence of the grammar."""
    grammar = rrle_grammar(codec, labels, g, head=SEG_OPEN)
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, len(grammar.names), (g, g))
    if seed % 2:
        cells = np.repeat(cells[:, :1], g, 1)
    body = encode_grid(cells, grammar.names) + SEG_CLOSE
    tokens = answer_tokens(tok, PROMPT, SEG_OPEN + body)
    assert grammar.accepts(tokens)
    state, i = grammar.start(), 0  # every forced run is what the text has next
    while not grammar.is_done(state):
        forced, after = grammar.forced(state)
        if forced:
            assert tuple(tokens[i : i + len(forced)]) == forced
            state, i = after, i + len(forced)
            continue
        state, i = grammar.advance(state, tokens[i]), i + 1
    assert i == len(tokens)


def test_random_walks_are_canonical_answers(tok, codec):
    """Any path through the automaton is a valid descriptor spelled as the tokenizer spells it
    inside the answer (R-RLE with head "<seg>", and B-SD triples ended by EOS)."""
    rng = random.Random(0)
    for n in range(30):
        labels = rng.sample(LABELS, 1 + n % 3)
        g = 1 + n % 9
        grammar = rrle_grammar(codec, labels, g, head=SEG_OPEN)
        state, walk = grammar.start(), []
        while not grammar.is_done(state):
            walk.append(rng.choice(grammar.allowed(state).tolist()))
            state = grammar.advance(state, walk[-1])
        text = codec.decode(walk)
        assert text.startswith(SEG_OPEN) and text.endswith("\n" + SEG_CLOSE)
        assert parse_rrle(text, grammar.names, g).valid
        assert answer_tokens(tok, PROMPT, text) == walk
    eos = tok.eos_token_id
    prompt = answer_prefix(Task.INSTANCES, "red mug left of the laptop")
    grammar = bsd_grammar(codec, ["red mug left of the laptop"], eos, grid=4, max_instances=3)
    mask = np.zeros((40, 60), bool)
    mask[3:20, 5:33] = True
    text = encode_instances([mask, ~mask], "red mug left of the laptop", 4)
    assert grammar.accepts(answer_tokens(tok, prompt, text) + [eos])
    for _ in range(20):
        state, walk = grammar.start(), []
        while not grammar.is_done(state):
            allowed = grammar.allowed(state).tolist()
            walk.append(eos if eos in allowed and rng.random() < 0.3 else rng.choice(allowed))
            state = grammar.advance(state, walk[-1])
        text = codec.decode(walk[:-1])
        instances, repairs = parse_bsd(text, ["red mug left of the laptop"], 4)
        assert not repairs and len(instances) == text.count("<ref>")
        assert answer_tokens(tok, prompt, text) == walk[:-1]


def generate_and_check(tok, codec, n_models: int, n_batches: int, batch: int = 10) -> int:
    """Constrained answers of random Llama-architecture models with this tokenizer over random
    label sets and grid sizes; returns how many were invalid or not canonical."""

    torch.set_num_threads(1)
    prompt_ids = ids(tok, "USER: segment it. ASSISTANT: " + PROMPT)
    invalid = 0
    for seed in range(n_models):
        model = random_llama(len(tok), seed, hidden=32, max_positions=2048, tie_embeddings=False)
        step = HFCausalLMStep(model)
        for b in range(n_batches):
            rng = random.Random(seed * 1000 + b)
            g = rng.choice([3, 4, 6, 8])
            label_sets = [rng.sample(LABELS, rng.randint(1, 3)) for _ in range(batch)]
            grammars = [rrle_grammar(codec, ls, g, head=SEG_OPEN) for ls in label_sets]
            outs = constrained_generate(step, grammars, [prompt_ids] * batch, pad_token_id=0)
            for grammar, out in zip(grammars, outs):
                parsed = parse_rrle(out.text, grammar.names, g)
                ok = out.complete and parsed.valid and len(parsed.grid) == g
                ok = ok and answer_tokens(tok, PROMPT, out.text) == out.tokens
                invalid += not ok
    return invalid


def test_random_weight_tiny_llamas_give_only_valid_descriptors(tok, codec):
    """200 constrained answers (4 random models x 5 batches of 10): 0 invalid, all canonical."""
    assert generate_and_check(tok, codec, n_models=4, n_batches=5) == 0


@pytest.mark.slow
def test_thousand_random_weight_llama_answers_are_valid(tok, codec):
    """1,000 constrained answers (10 random models x 10 batches of 10): 0 invalid."""
    assert generate_and_check(tok, codec, n_models=10, n_batches=10) == 0


def test_legacy_llama_tokenizer_gives_the_same_answer_tokens(proto, tok, tmp_path):
    """``legacy=True`` (the older Llama tokenizer configs) changes nothing inside answers."""
    old = llama_tokenizer(proto, tmp_path / "legacy", legacy=True)
    text = PROMPT + "<seg>others *2\n the black swan *1| others *1\n</seg>"
    assert ids(old, text) == ids(tok, text)
    grammar = rrle_grammar(TokenCodec(old), ["the black swan"], 2, head=SEG_OPEN)
    assert grammar.accepts(answer_tokens(old, PROMPT, text[len(PROMPT) :]))
