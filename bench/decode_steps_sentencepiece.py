"""Decode-steps bench with a Llama-2-shaped SentencePiece tokenizer (the LLaVA-1.5 family).

The same measurement as :mod:`decode_steps` (every real mask in ../shared/data, G = 16, a
teacher-forced oracle, jump-forward only vs jump-forward + drafts), with what the Segmenter
does for such a tokenizer: the prompt suffix ends at the answer sentence's newline and the
grammar starts with the forced head ``<seg>`` (B-SD: no head), and the target tokens are those
of the answer inside the whole text (``tokenizer(prompt + answer)`` after the prompt's tokens),
as training tokenizes it. The tokenizer: SentencePiece BPE with Llama-2's trainer settings
(``split_digits``, ``byte_fallback``, dummy prefix) trained on standard-library docstrings
(:func:`text4seg_ros.model.tokenizer.train_sentencepiece`), loaded as transformers'
``LlamaTokenizer`` from a bare ``tokenizer.model``. Token counts include the head's tokens.

Writes bench/results/decode_steps_sentencepiece.json and prints a Markdown table.

Usage: python bench/decode_steps_sentencepiece.py [--grid 16] [--vocab 8000] [--draft 64]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from decode_steps import _run, _summary, table

from text4seg_ros.descriptors import encode_mask
from text4seg_ros.descriptors.bsd import encode_instance
from text4seg_ros.descriptors.grammar import TokenCodec, bsd_grammar, rrle_grammar
from text4seg_ros.descriptors.rrle import SEG_CLOSE, SEG_OPEN
from text4seg_ros.model.registry import get_backbone
from text4seg_ros.model.tokenizer import llama_tokenizer, train_sentencepiece
from text4seg_ros.prompts import Task, answer_prefix, question

from common import real_masks, write_json

CORPUS_CHARS = 2_000_000


def run(grid: int, vocab: int, draft: int) -> dict:
    data = real_masks()
    start = time.perf_counter()
    tok = llama_tokenizer(train_sentencepiece(vocab, CORPUS_CHARS), tempfile.mkdtemp())
    codec = TokenCodec(tok)
    codec.vocab = len(tok)  # type: ignore[attr-defined]  # what _run's oracle needs
    eos = int(tok.eos_token_id)
    llava = get_backbone("llava")
    per_dataset: dict = {}
    pooled: dict[str, dict[str, list]] = {"rrle": {}, "bsd": {}}
    for dataset, items in data.items():
        per_dataset[dataset] = {}
        for form in ("rrle", "bsd"):
            grammars, targets, suffixes = [], [], []
            task = Task.INSTANCES if form == "bsd" else Task.RES
            for _, label, mask in items:
                prompt = llava.prompt_suffix(question(task, label), answer_prefix(task, label))
                if form == "rrle":
                    answer = SEG_OPEN + encode_mask(mask, label, grid) + SEG_CLOSE
                    grammars.append(rrle_grammar(codec, [label], grid, head=SEG_OPEN))
                else:
                    answer = encode_instance(mask, label, grid)
                    grammars.append(bsd_grammar(codec, [label], eos, grid, max_instances=1))
                head = list(tok(prompt, add_special_tokens=False)["input_ids"])
                whole = list(tok(prompt + answer, add_special_tokens=False)["input_ids"])
                if whole[: len(head)] != head:
                    raise AssertionError(f"prompt tokens change before {answer[:30]!r}")
                targets.append(whole[len(head) :] + ([eos] if form == "bsd" else []))
                suffixes.append(head)
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
    main = totals["rrle"]
    return {
        "grid": grid,
        "tokenizer": (
            f"SentencePiece BPE, Llama-2 trainer settings (split_digits, byte_fallback, dummy "
            f"prefix), vocab {len(tok)}, trained on {CORPUS_CHARS} chars of Python "
            "standard-library docstrings, loaded as transformers' LlamaTokenizer"
        ),
        "answer_start": "suffix ends at the answer's newline; grammar head '<seg>' (R-RLE)",
        "max_draft_tokens": draft,
        "model": "teacher-forced oracle (greedy choice = true next token)",
        "tokens_per_goal": main["tokens_per_goal"],
        "steps_per_goal": main["steps_per_goal"],
        "ratio": main["ratio"],
        "steps_per_goal_jump_forward_only": main["steps_per_goal_jump_forward_only"],
        "ratio_jump_forward_only": main["ratio_jump_forward_only"],
        "totals": totals,
        "datasets": per_dataset,
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grid", type=int, default=16)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--draft", type=int, default=64, help="max draft tokens per call")
    args = parser.parse_args()
    result = run(args.grid, args.vocab, args.draft)
    path = write_json("decode_steps_sentencepiece.json", result)
    print(table(result))
    print(f"\nwrote {path} in {result['seconds']:.1f} s")


if __name__ == "__main__":
    main()
