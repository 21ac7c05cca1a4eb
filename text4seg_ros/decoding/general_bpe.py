"""A byte-level BPE shaped like the real backbones' tokenizers, trained offline on general text.

Qwen2 / Qwen2.5 (and Llama-3, nearly) pre-tokenize with one regex that isolates every digit and
keeps a leading space on words, then apply byte-level BPE. This module trains such a tokenizer
with ``tokenizers`` on English text that ships with every Python: the docstrings of the standard
library. It never sees a descriptor, so token counts of descriptors are honest (a tokenizer
trained on descriptors would learn merges like ``" others *"`` that no real backbone has).
"""

from __future__ import annotations

import ast
import sysconfig
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

# Qwen2's pre-tokenizer pattern (tokenizer.json of Qwen2-VL / Qwen2.5-VL).
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def stdlib_docstrings(max_chars: int) -> list[str]:
    """Docstrings of the standard library's modules, classes and functions (sorted files)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    texts, total = [], 0
    for path in sorted(root.glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc:
                    texts.append(doc)
                    total += len(doc)
                    if total >= max_chars:
                        return texts
    if not texts:
        raise RuntimeError(f"no docstrings found under {root}")
    return texts


def train_byte_level_bpe(
    texts: Sequence[str], vocab_size: int, specials: Sequence[str], pattern: str | None = None
) -> Tokenizer:
    """Train a byte-level BPE on ``texts``; ``specials`` get the first ids, in order.

    ``pattern`` is the pre-tokenizer regex (e.g. :data:`QWEN2_PATTERN`); None means GPT-2's
    regex with every digit isolated first (Llama-3-like). Either way digits are single tokens.
    """
    tok = Tokenizer(models.BPE())
    if pattern is None:
        steps = [
            pre_tokenizers.Split(Regex(r"\p{N}"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    else:
        steps = [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    tok.pre_tokenizer = pre_tokenizers.Sequence(steps)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(specials),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return tok


@lru_cache(maxsize=4)
def train_general_bpe(vocab_size: int = 8192, max_chars: int = 2_000_000) -> Tokenizer:
    """Train the Qwen2-shaped byte-level BPE on up to ``max_chars`` of stdlib docstrings.

    Special tokens: ``<|endoftext|>`` (id 0, end of sequence), ``<|im_start|>``, ``<|im_end|>``.
    Deterministic for given arguments; cached per process.
    """
    return train_byte_level_bpe(stdlib_docstrings(max_chars), vocab_size, SPECIALS, QWEN2_PATTERN)


def describe(tok: Tokenizer, max_chars: int) -> str:
    """One line saying what the tokenizer is, for benchmark records."""
    return (
        f"byte-level BPE, Qwen2 pre-tokenizer regex (digits split one per token), vocab "
        f"{tok.get_vocab_size()}, trained with `tokenizers` on {max_chars} chars of Python "
        f"standard-library docstrings (general English, no descriptors)"
    )
