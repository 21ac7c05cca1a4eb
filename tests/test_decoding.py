"""Constrained, batched decoding: identical to greedy when greedy is valid; batch == singles."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from transformers import LlamaForCausalLM

from text4seg_ros.decoding import (
    HFCausalLMStep,
    OracleStep,
    constrained_generate,
    greedy_generate,
    prefill,
)
from text4seg_ros.decoding.general_bpe import train_general_bpe
from text4seg_ros.descriptors import encode_mask
from text4seg_ros.descriptors.grammar import TokenCodec, bsd_grammar, rrle_grammar
from text4seg_ros.descriptors.rrle import SEG_CLOSE, encode_grid, parse_rrle
from text4seg_ros.model.tiny import random_llama

G = 8
PREFIX = "You are the eyes of a robot. Answer with a mask.\n"
EOS = 0  # <|endoftext|> of the general BPE


@pytest.fixture(scope="module")
def codec() -> TokenCodec:
    return TokenCodec(train_general_bpe(1024, 200_000))


def _masks() -> dict[str, np.ndarray]:
    yy, xx = np.mgrid[:32, :32]
    return {
        "cup": (yy >= 8) & (yy < 20) & (xx >= 4) & (xx < 16),
        "the black swan": (yy - 16) ** 2 + (xx - 18) ** 2 < 90,
        "dining table": (yy > xx) & (yy < 28),
    }


def _goals(codec: TokenCodec) -> list[dict]:
    """Suffix, label and target answer tokens of each trained goal (the last one invalid)."""
    goals = []
    for label, mask in _masks().items():
        body = encode_mask(mask, label, G)
        goals.append({"label": label, "body": body})
    rows = encode_mask(_masks()["cup"], "dog", G).split("\n")
    rows[3] = rows[3].replace("*4", "*3")  # a row of 7 cells: greedy output will be invalid
    goals.append({"label": "dog", "body": "\n".join(rows)})
    for goal in goals:
        goal["suffix"] = list(codec.encode(f"Segment the {goal['label']}.\n<seg>"))
        goal["target"] = list(codec.encode(goal["body"] + SEG_CLOSE))
    return goals


def _llama(vocab: int, seed: int, dtype: torch.dtype = torch.float32) -> LlamaForCausalLM:
    return random_llama(vocab, seed, dtype=dtype)


@pytest.fixture(scope="module")
def trained(codec) -> tuple[LlamaForCausalLM, list[dict]]:
    """A tiny Llama trained in seconds to answer each goal with its descriptor."""
    torch.set_num_threads(1)
    goals = _goals(codec)
    model = _llama(codec.tokenizer.get_vocab_size(), seed=0).train()
    prefix = list(codec.encode(PREFIX))
    seqs = [prefix + g["suffix"] + g["target"] + [EOS] for g in goals]
    width = max(map(len, seqs))
    ids = torch.tensor([s + [EOS] * (width - len(s)) for s in seqs])
    labels = torch.full_like(ids, -100)  # loss on the answers only, as in fine-tuning
    for row, (seq, goal) in enumerate(zip(seqs, goals)):
        start = len(prefix) + len(goal["suffix"])
        labels[row, start : len(seq)] = ids[row, start : len(seq)]
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    for _ in range(300):
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 0.005:
            break
    return model.eval(), goals


def _decode(model, goals, codec, drafts=64, batch=True):
    """Constrained results for the goals, batched or one call per goal."""
    step = HFCausalLMStep(model)
    prefix = list(codec.encode(PREFIX))
    grammars = [rrle_grammar(codec, [g["label"]], G) for g in goals]
    if not batch:
        return [_decode(model, [g], codec, drafts)[0] for g in goals]
    cache, n = prefill(step, prefix, len(goals))
    return constrained_generate(
        step, grammars, [g["suffix"] for g in goals], cache, n, max_draft_tokens=drafts
    )


def _greedy(model, goals, codec):
    step = HFCausalLMStep(model)
    cache, n = prefill(step, list(codec.encode(PREFIX)), len(goals))
    stop = list(codec.encode("\n" + SEG_CLOSE))
    return greedy_generate(step, [g["suffix"] for g in goals], 200, cache, n, EOS, stop)


def test_constrained_output_is_the_models_own_valid_greedy_output(trained, codec):
    model, goals = trained
    valid = goals[:3]
    greedy = _greedy(model, valid, codec)
    for res, goal in zip(greedy, valid):
        assert res.tokens == goal["target"], "training did not converge: greedy != its target"
    for drafts in (0, 64):
        out = _decode(model, valid, codec, drafts)
        for res, ref, goal in zip(out, greedy, valid):
            assert res.tokens == ref.tokens and res.complete
            assert res.text == goal["body"] + SEG_CLOSE
            assert res.forward_calls < ref.forward_calls  # jump-forward saves model steps
            assert all(0.0 < p <= 1.0 for p in res.chosen_probs)
            assert res.mean_log_prob > np.log(0.5)  # a trained model is confident
    no_draft, draft = _decode(model, valid, codec, 0), _decode(model, valid, codec, 64)
    for a, b in zip(no_draft, draft):
        assert b.forward_calls < a.forward_calls  # verified drafts save more
        np.testing.assert_allclose(a.chosen_probs, b.chosen_probs, rtol=1e-4)


def test_invalid_greedy_output_is_replaced_by_a_valid_descriptor(trained, codec):
    model, goals = trained
    dog = goals[3]
    greedy = _greedy(model, [dog], codec)[0]
    assert greedy.tokens == dog["target"]  # the model learnt the broken row...
    names = ["others", "dog"]
    assert not parse_rrle(codec.decode(greedy.tokens), names, G).valid
    out = _decode(model, [dog], codec)[0]
    parsed = parse_rrle("<seg>" + out.text, names, G)  # ...the constrained decoder never writes it
    assert out.complete and parsed.valid, parsed.repairs
    assert out.tokens != greedy.tokens


@pytest.mark.parametrize("drafts", [0, 64])
def test_batched_decoding_equals_single_calls(trained, codec, drafts):
    model, goals = trained
    batched = _decode(model, goals, codec, drafts)
    singles = _decode(model, goals, codec, drafts, batch=False)
    for b, s in zip(batched, singles):
        assert b.tokens == s.tokens
        assert b.forward_calls == s.forward_calls
        np.testing.assert_allclose(b.chosen_probs, s.chosen_probs, rtol=1e-4)


def test_batched_random_model_equals_single_calls(codec):
    """Random weights (float64 so near-ties cannot flip), unequal suffixes and labels."""
    model = _llama(codec.tokenizer.get_vocab_size(), seed=3, dtype=torch.float64)
    goals = [
        {"label": lab, "suffix": list(codec.encode(q))}
        for lab, q in [("cup", "cup?\n<seg>"), ("the black swan", "Where is the swan?\n<seg>")]
        + [("dining table", "table\n<seg>")]
    ]
    for drafts in (0, 64):
        batched = _decode(model, goals, codec, drafts)
        singles = _decode(model, goals, codec, drafts, batch=False)
        assert [b.tokens for b in batched] == [s.tokens for s in singles]
        for b in batched:
            assert parse_rrle("<seg>" + b.text, ["others", "x"], G).grid.shape == (G, G)


def test_greedy_reference_matches_transformers_generate(codec):
    model = _llama(codec.tokenizer.get_vocab_size(), seed=1)
    prefix = list(codec.encode(PREFIX))
    suffixes = [list(codec.encode("Segment the cup.\n<seg>")), list(codec.encode("Hi"))]
    step = HFCausalLMStep(model)
    cache, n = prefill(step, prefix, 2)
    ours = greedy_generate(step, suffixes, 12, cache, n)
    for res, suffix in zip(ours, suffixes):
        ids = torch.tensor([prefix + suffix])
        ref = model.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=EOS)
        assert res.tokens == ref[0, ids.shape[1] :].tolist()
        assert res.forward_calls == 12


def _check_valid(results, grammars, codec, grid):
    for res, g in zip(results, grammars):
        assert res.complete
        assert g.accepts(res.tokens) and res.text == codec.decode(res.tokens)
        parsed = parse_rrle("<seg>" + res.text, g.names, grid)
        assert parsed.valid, (res.text, parsed.repairs)


def _random_generations(codec, count: int, grid: int, batch: int = 16) -> int:
    label_sets = [["cup"], ["the black swan"], ["dining table", "cat", "cup"]]
    done, seed = 0, 0
    while done < count:
        model = _llama(codec.tokenizer.get_vocab_size(), seed=100 + seed)
        n = min(batch, count - done)
        grammars = [rrle_grammar(codec, label_sets[(done + i) % 3], grid) for i in range(n)]
        suffixes = [list(codec.encode(f"goal {done + i}:\n<seg>")) for i in range(n)]
        out = constrained_generate(HFCausalLMStep(model), grammars, suffixes)
        _check_valid(out, grammars, codec, grid)
        done, seed = done + n, seed + 1
    return done


def test_no_invalid_descriptor_from_random_weight_models(codec):
    torch.set_num_threads(1)
    assert _random_generations(codec, 48, grid=G) == 48


@pytest.mark.slow
def test_no_invalid_descriptor_in_1000_random_weight_generations(codec):
    """The issue's bar: 0 invalid descriptors in 1,000 constrained generations (G = 16)."""
    torch.set_num_threads(1)
    assert _random_generations(codec, 1000, grid=16, batch=25) == 1000


def test_bsd_random_weight_generations_are_valid(codec):
    from text4seg_ros.descriptors.bsd import parse_bsd

    found = 0
    for seed in (0, 1, 2):
        model = _llama(codec.tokenizer.get_vocab_size(), seed=seed)
        grammars = [bsd_grammar(codec, ["cup"], EOS, grid=4, max_instances=2) for _ in range(4)]
        suffixes = [list(codec.encode(f"instances {i}:\n")) for i in range(4)]
        for res in constrained_generate(HFCausalLMStep(model), grammars, suffixes):
            assert res.complete and res.tokens[-1] == EOS
            assert res.text == codec.decode(res.tokens[:-1])  # the text stops before EOS
            instances, repairs = parse_bsd(res.text, ["cup"], 4)
            assert not repairs and all(not i.repairs for i in instances)
            found += len(instances)
    assert found > 0  # the random models did write instances, not only the empty answer


def test_oracle_counts_free_choices_and_drafts_cut_them(codec):
    goals = _goals(codec)[:3]
    grammars = [rrle_grammar(codec, [g["label"]], G) for g in goals]
    targets = [g["target"] for g in goals]
    starts = [len(g["suffix"]) for g in goals]
    free = []
    for g, target in zip(grammars, targets):  # free choices along the true answer
        state, n = g.start(), 0
        for t in target:
            n += len(g.allowed(state)) > 1
            state = g.advance(state, t)
        free.append(n)
    vocab = codec.tokenizer.get_vocab_size()
    plain = constrained_generate(
        OracleStep(targets, starts, vocab),
        grammars,
        [g["suffix"] for g in goals],
        max_draft_tokens=0,
    )
    drafted = constrained_generate(
        OracleStep(targets, starts, vocab), grammars, [g["suffix"] for g in goals]
    )
    for p, d, target, n in zip(plain, drafted, targets, free):
        assert p.tokens == d.tokens == target
        assert p.forward_calls == n and d.forward_calls < n
        assert len(target) > 2 * n  # jump-forward alone: more than 2 tokens per model step


def test_max_new_tokens_cuts_and_bad_arguments(codec):
    goals = _goals(codec)[:1]
    grammars = [rrle_grammar(codec, ["cup"], G)]
    step = OracleStep([goals[0]["target"]], [len(goals[0]["suffix"])], 1200)
    res = constrained_generate(step, grammars, [goals[0]["suffix"]], max_new_tokens=5)[0]
    assert not res.complete and len(res.tokens) == 5
    assert res.tokens == goals[0]["target"][:5]
    with pytest.raises(ValueError, match="one suffix per grammar"):
        constrained_generate(step, grammars, [])
    with pytest.raises(ValueError, match="at least one token"):
        constrained_generate(step, grammars, [[]])
    with pytest.raises(ValueError, match="non-empty"):
        greedy_generate(step, [[]], 4)


def test_prefix_cache_is_extended_not_replaced(trained, codec):
    """A copy of the prefix cache reused for a second call gives the same answer."""
    model, goals = trained
    step = HFCausalLMStep(model)
    cache, n = prefill(step, list(codec.encode(PREFIX)), 1)
    grammar = [rrle_grammar(codec, [goals[0]["label"]], G)]
    first = constrained_generate(step, grammar, [goals[0]["suffix"]], copy.deepcopy(cache), n)
    second = constrained_generate(step, grammar, [goals[0]["suffix"]], cache, n)
    assert first[0].tokens == second[0].tokens == goals[0]["target"]


def test_non_ascii_labels_decode_to_the_true_answer(codec):
    """Labels whose UTF-8 bytes split across tokens (partial pieces) still decode exactly."""
    grammar = rrle_grammar(codec, ["tête de lit", "日本"], 6)
    grid = np.random.default_rng(0).integers(0, 3, (6, 6))
    text = encode_grid(grid, grammar.names) + SEG_CLOSE
    target = list(codec.encode(text))
    suffix = [list(codec.encode("<seg>"))]
    for drafts in (0, 64):
        step = OracleStep([target], [len(suffix[0])], codec.tokenizer.get_vocab_size())
        res = constrained_generate(step, [grammar], suffix, max_draft_tokens=drafts)[0]
        assert res.tokens == target and res.text == text


def test_row_copy_drafts():
    from text4seg_ros.decoding.drafts import predict_body

    names = ["others", "cup"]
    # at a row start: the row above, then copies of it, then </seg>
    body = "others *4\n others *1| cup *2| others *1\n"
    assert predict_body(body, names, 4) == " others *1| cup *2| others *1\n" * 2 + SEG_CLOSE
    # mid-row, after a label: the run goes on as far as the row above has that label
    assert predict_body(body + " others *1| cup *", names, 4).startswith("2| others *1\n")
    # typed digits that disagree with the row above: the closest count they allow
    assert predict_body("cup *9| others *3\n cup *1", names, 12).startswith("0| others *2\n")
    # the first row has no row above: the current label fills it
    assert predict_body("cup *", names, 4) == "4\n cup *4\n cup *4\n cup *4\n" + SEG_CLOSE
    assert predict_body("", names, 2) == "others *2\n others *2\n" + SEG_CLOSE
    # text that no row copy continues
    assert predict_body("dog *2\n", names, 2) is None
