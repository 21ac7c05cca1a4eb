"""Decode-steps bench: answer tokens vs sequential forward calls of the constrained decoder.

For every real mask in ../shared/data (COCO tiny instances labelled with their class names,
DAVIS blackswan frames labelled "the black swan"), at G = 16, the true R-RLE answer
(``"<seg>" + body + "</seg>"``, inside the whole Qwen2-VL prompt text) is tokenized with a
tokenizer shaped like the real backbones' (byte-level
BPE, Qwen2 pre-tokenizer regex, digits split one per token, trained on general English text:
:mod:`text4seg_ros.decoding.general_bpe`). The constrained decoder then runs against a
teacher-forced oracle (:class:`~text4seg_ros.decoding.OracleStep`: its greedy choice at every
free step is the true next token), so the count of sequential forward calls is what a model that
answers correctly needs. Modes:

* ``jump_forward``: grammar-forced tokens are fed without a model step, no drafts;
* ``jump_forward+drafts`` (the decoder's default): plus verified row-copy drafts.

The B-SD form (one ``<ref><box><seg>`` triple per mask, then EOS) is measured the same way.
Writes bench/results/decode_steps.json and prints the Markdown table shown in README.md.

Usage: python bench/decode_steps.py [--grid 16] [--vocab 8192] [--draft 64]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from text4seg_ros.decoding import OracleStep, constrained_generate
from text4seg_ros.decoding.general_bpe import describe, train_general_bpe
from text4seg_ros.descriptors import encode_mask
from text4seg_ros.descriptors.bsd import encode_instance
from text4seg_ros.descriptors.grammar import TokenCodec, bsd_grammar, rrle_grammar
from text4seg_ros.descriptors.rrle import SEG_CLOSE, SEG_OPEN
from text4seg_ros.model.registry import get_backbone
from text4seg_ros.prompts import Task, answer_prefix, question

from common import real_masks, write_json

CORPUS_CHARS = 2_000_000
EOS = 0  # <|endoftext|> of the general BPE


Case = Callable[[str, np.ndarray, str], tuple[object, list[int], list[int]]]


def in_context_case(
    codec: TokenCodec,
    encode: Callable[[str], list[int]],
    prompt_suffix: Callable[[str, str], str],
    eos: int,
    grid: int,
) -> Case:
    """What the Segmenter does for one goal: ``(grammar, target tokens, suffix tokens)``.

    The prompt suffix ends at the answer sentence's newline and the R-RLE grammar starts with
    the forced head ``<seg>`` (B-SD: no head, EOS at the end); the target is the answer's tokens
    inside the whole text (``encode(prompt + answer)`` after the prompt's tokens), as training
    tokenizes it.
    """

    def case(label: str, mask: np.ndarray, form: str) -> tuple[object, list[int], list[int]]:
        task = Task.INSTANCES if form == "bsd" else Task.RES
        prompt = prompt_suffix(question(task, label), answer_prefix(task, label))
        if form == "rrle":
            answer = SEG_OPEN + encode_mask(mask, label, grid) + SEG_CLOSE
            grammar = rrle_grammar(codec, [label], grid, head=SEG_OPEN)
        else:
            answer = encode_instance(mask, label, grid)
            grammar = bsd_grammar(codec, [label], eos, grid, max_instances=1)
        head, whole = encode(prompt), encode(prompt + answer)
        if whole[: len(head)] != head:
            raise AssertionError(f"prompt tokens change before {answer[:30]!r}")
        return grammar, whole[len(head) :] + ([eos] if form == "bsd" else []), head

    return case


def measure(data: dict, codec: TokenCodec, case: Case, draft: int) -> tuple[dict, dict]:
    """Per-dataset and pooled summaries for both forms and both decoding modes."""
    per_dataset: dict = {}
    pooled: dict[str, dict[str, list]] = {"rrle": {}, "bsd": {}}
    for dataset, items in data.items():
        per_dataset[dataset] = {}
        for form in ("rrle", "bsd"):
            cases = [case(label, mask, form) for _, label, mask in items]
            grammars, targets, suffixes = (list(column) for column in zip(*cases))
            runs = {
                "jump_forward": _run(codec, grammars, targets, suffixes, 0),
                "jump_forward+drafts": _run(codec, grammars, targets, suffixes, draft),
            }
            per_dataset[dataset][form] = _summary(targets, runs)
            bucket = pooled[form]
            bucket.setdefault("targets", []).extend(targets)
            for mode, res in runs.items():
                bucket.setdefault(mode, []).extend(res)
    totals = {
        form: _summary(b["targets"], {m: b[m] for m in ("jump_forward", "jump_forward+drafts")})
        for form, b in pooled.items()
    }
    return per_dataset, totals


def result(grid: int, draft: int, tokenizer: str, per_dataset: dict, totals: dict) -> dict:
    """The JSON record: the R-RLE means at top level, everything else below."""
    main = totals["rrle"]
    return {
        "grid": grid,
        "tokenizer": tokenizer,
        "answer_start": "suffix ends at the answer's newline; grammar head '<seg>' (R-RLE)",
        "max_draft_tokens": draft,
        "model": "teacher-forced oracle (greedy choice = true next token)",
        "tokens_per_goal": main["tokens_per_goal"],
        "steps_per_goal": main["steps_per_goal"],
        "ratio": main["ratio"],
        "steps_per_goal_jump_forward_only": main["steps_per_goal_jump_forward_only"],
        "ratio_jump_forward_only": main["ratio_jump_forward_only"],
        "bar_3x_met": main["ratio"] >= 3.0,
        "bar_3x_met_jump_forward_only": main["ratio_jump_forward_only"] >= 3.0,
        "totals": totals,
        "datasets": per_dataset,
    }


def _run(codec, grammars, targets, suffixes, draft: int, batch: int = 32) -> list:
    """Oracle-driven constrained decoding; checks the output is the true answer."""
    out = []
    for i in range(0, len(targets), batch):
        sl = slice(i, i + batch)
        step = OracleStep(targets[sl], [len(s) for s in suffixes[sl]], codec.vocab)
        res = constrained_generate(step, grammars[sl], suffixes[sl], max_draft_tokens=draft)
        for r, t in zip(res, targets[sl]):
            if r.tokens != t:
                raise AssertionError(f"oracle decode differs from the true answer: {r.text!r}")
        out += res
    return out


def _summary(targets, runs: dict[str, list]) -> dict:
    tokens = np.array([len(t) for t in targets], dtype=float)
    row = {"goals": len(targets), "tokens_per_goal": float(tokens.mean())}
    for mode, res in runs.items():
        steps = np.array([r.forward_calls for r in res], dtype=float)
        key = "" if mode == "jump_forward+drafts" else "_jump_forward_only"
        row[f"steps_per_goal{key}"] = float(steps.mean())
        row[f"ratio{key}"] = float(tokens.sum() / steps.sum())
        row[f"min_goal_ratio{key}"] = float((tokens / steps).min())
    drafted = runs["jump_forward+drafts"]
    row["draft_tokens_accepted"] = float(
        sum(r.accepted for r in drafted) / max(1, sum(r.drafted for r in drafted))
    )
    return row


def run(grid: int, vocab: int, draft: int) -> dict:
    data = real_masks()
    start = time.perf_counter()
    tok = train_general_bpe(vocab, CORPUS_CHARS)
    codec = TokenCodec(tok)
    codec.vocab = tok.get_vocab_size()  # type: ignore[attr-defined]

    def encode(text: str) -> list[int]:
        return list(tok.encode(text).ids)

    qwen = get_backbone("qwen2_vl")
    case = in_context_case(codec, encode, qwen.prompt_suffix, EOS, grid)
    out = result(grid, draft, describe(tok, CORPUS_CHARS), *measure(data, codec, case, draft))
    out["seconds"] = time.perf_counter() - start
    return out


def table(record: dict) -> str:
    """The Markdown table of README's decoding section."""
    lines = [
        "| data | form | goals | tokens/goal | steps/goal, jump-forward | ratio "
        "| steps/goal, + drafts | ratio |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    rows = [(d, f, r) for d, forms in record["datasets"].items() for f, r in forms.items()]
    rows += [("all", f, r) for f, r in record["totals"].items()]
    for dataset, form, r in rows:
        lines.append(
            f"| {dataset} | {'R-RLE' if form == 'rrle' else 'B-SD'} | {r['goals']} "
            f"| {r['tokens_per_goal']:.1f} | {r['steps_per_goal_jump_forward_only']:.1f} "
            f"| {r['ratio_jump_forward_only']:.2f}x | {r['steps_per_goal']:.1f} "
            f"| {r['ratio']:.2f}x |"
        )
    return "\n".join(lines)


def main(
    run_fn: Callable[[int, int, int], dict] = run,
    vocab: int = 8192,
    result_name: str = "decode_steps.json",
    doc: str = __doc__,
) -> None:
    """Command line shared with decode_steps_sentencepiece.py: run, write JSON, print table."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--grid", type=int, default=16)
    parser.add_argument("--vocab", type=int, default=vocab)
    parser.add_argument("--draft", type=int, default=64, help="max draft tokens per call")
    args = parser.parse_args()
    record = run_fn(args.grid, args.vocab, args.draft)
    path = write_json(result_name, record)
    print(table(record))
    print(f"\nwrote {path} in {record['seconds']:.1f} s")


if __name__ == "__main__":
    main()
