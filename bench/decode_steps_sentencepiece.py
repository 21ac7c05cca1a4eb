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

import tempfile
import time

from decode_steps import in_context_case, main, measure, result

from text4seg_ros.descriptors.grammar import TokenCodec
from text4seg_ros.model.registry import get_backbone
from text4seg_ros.model.tokenizer import llama_tokenizer, train_sentencepiece

from common import real_masks

CORPUS_CHARS = 2_000_000


def run(grid: int, vocab: int, draft: int) -> dict:
    data = real_masks()
    start = time.perf_counter()
    tok = llama_tokenizer(train_sentencepiece(vocab, CORPUS_CHARS), tempfile.mkdtemp())
    codec = TokenCodec(tok)
    codec.vocab = len(tok)  # type: ignore[attr-defined]  # what _run's oracle needs

    def encode(text: str) -> list[int]:
        return list(tok(text, add_special_tokens=False)["input_ids"])

    llava = get_backbone("llava")
    case = in_context_case(codec, encode, llava.prompt_suffix, int(tok.eos_token_id), grid)
    description = (
        f"SentencePiece BPE, Llama-2 trainer settings (split_digits, byte_fallback, dummy "
        f"prefix), vocab {len(tok)}, trained on {CORPUS_CHARS} chars of Python "
        "standard-library docstrings, loaded as transformers' LlamaTokenizer"
    )
    out = result(grid, draft, description, *measure(data, codec, case, draft))
    out["seconds"] = time.perf_counter() - start
    return out


if __name__ == "__main__":
    main(run, 8000, "decode_steps_sentencepiece.json", __doc__)
