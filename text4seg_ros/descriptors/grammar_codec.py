"""Token ids of descriptor pieces as they appear *inside* a longer text (see :mod:`.grammar`).

A grammar is built from pieces (``" cup *"``, ``"1"``, ``"| "``...) that are tokenized one at a
time, but a descriptor is never tokenized on its own: it follows the answer sentence. What a
piece's tokens are in the middle of a text is not always what ``encode(piece)`` gives:

* SentencePiece tokenizers (Llama-2 / Vicuna, the LLaVA-1.5 family) put a word-start mark
  ``"▁"`` before the first word of a text (``add_dummy_prefix``), so ``encode("others *1")`` is
  ``"▁other" "s" "▁*" "1"`` while after ``"<seg>"`` the same text is ``"other" "s" "▁*" "1"``;
  and their decoder strips the space of a leading ``"▁"``, so ``decode(["▁*"])`` is ``"*"``.
* Byte-level BPEs (GPT-2, Qwen) have no such marks: in-context and standalone agree.

:class:`TokenCodec` therefore encodes a piece after an *anchor*: a short text that ends where
every supported tokenizer always cuts (a digit: Llama-2's ``split_digits`` and the Qwen / GPT-2
digit rules isolate digits), and drops the anchor's tokens; pieces and texts are decoded after
the anchor's tokens in the same way. The anchor is the first of :data:`ANCHORS` whose tokens
stay intact before every text of :data:`PROBES` (the last resort ``""`` is the plain encode).
Whatever the anchor, the grammar compares its automaton with the tokens of whole sample
descriptors when it is built (:meth:`.grammar.TokenGrammar._check_canonical`), and the
Segmenter checks the real prompt/answer boundary (``Segmenter.check_boundary``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# Tried in order; "" (no anchor) keeps the plain encode for tokenizers that merge digits.
ANCHORS: tuple[str, ...] = ("0", "\n", "")
# Texts descriptor pieces start with: labels (with and without a leading space), counts,
# separators, markers. An anchor must stay its own tokens before every one of them.
PROBES: tuple[str, ...] = (
    "others *1",
    " others *1",
    "1",
    "16",
    "|",
    "\n others",
    "\n</seg>",
    ", ",
    "]",
    "<seg>cup",
    "<ref>cup",
    "Sure",
)


# Longest text kept in the encode caches (labels are far shorter; descriptors far longer).
CACHE_MAX_CHARS = 256


class TokenCodec:
    """Canonical ``encode(text) -> token ids`` and in-context piece encoding of a tokenizer.

    Takes a transformers tokenizer (``encode(text, add_special_tokens=False)``) or a
    ``tokenizers.Tokenizer``. :meth:`encode` tokenizes a whole text; :meth:`encode_piece`,
    :meth:`piece` and :meth:`decode` work on text in the middle of a longer text (after
    :attr:`anchor`, see the module doc), which is where descriptors are.
    """

    def __init__(self, tokenizer: Any) -> None:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None and hasattr(tokenizer, "encode_batch"):  # a tokenizers.Tokenizer
            backend = tokenizer
        if backend is None and not hasattr(tokenizer, "encode"):
            raise TypeError(f"tokenizer must have encode(); got {type(tokenizer).__name__}")
        self.tokenizer = tokenizer
        self._backend = backend
        self._encode_cache: dict[str, tuple[int, ...]] = {}
        self._piece_cache: dict[str, tuple[int, ...]] = {}
        self._pieces: dict[int, str] = {}
        self.anchor = ""
        self._anchor_ids: tuple[int, ...] = ()
        self._anchor_text = ""
        for anchor in ANCHORS:
            ids = self.encode(anchor)
            if all(self.encode(anchor + p)[: len(ids)] == ids for p in PROBES):
                self.anchor, self._anchor_ids = anchor, ids
                self._anchor_text = self._decode_raw(ids)
                break

    def encode(self, text: str) -> tuple[int, ...]:
        """Token ids of the whole ``text`` without special tokens (cached when short).

        Only texts up to :data:`CACHE_MAX_CHARS` are cached (separators, labels, digits): whole
        descriptors encoded for checks would otherwise pile up for the life of a node.
        """
        ids = self._encode_cache.get(text)
        if ids is None:
            if self._backend is not None:
                ids = tuple(self._backend.encode(text, add_special_tokens=False).ids)
            else:
                ids = tuple(self.tokenizer.encode(text, add_special_tokens=False))
            if len(text) <= CACHE_MAX_CHARS:
                self._encode_cache[text] = ids
        return ids

    def encode_piece(self, text: str) -> tuple[int, ...]:
        """Token ids of ``text`` where it follows a token boundary inside a longer text.

        ValueError when the tokenizer merges ``text`` with the anchor before it.
        """
        ids = self._piece_cache.get(text)
        if ids is None:
            whole = self.encode(self.anchor + text)
            n = len(self._anchor_ids)
            if whole[:n] != self._anchor_ids:
                raise ValueError(
                    f"tokenizer merges tokens across descriptor separators: {text!r} merges "
                    f"with the text before it (anchor {self.anchor!r})"
                )
            ids = whole[n:]
            if len(text) <= CACHE_MAX_CHARS:
                self._piece_cache[text] = ids
        return ids

    def _decode_raw(self, ids: Sequence[int]) -> str:
        ids = [int(t) for t in ids]
        if self._backend is not None:
            return self._backend.decode(ids, skip_special_tokens=False)
        return self.tokenizer.decode(ids, clean_up_tokenization_spaces=False)

    def decode(self, tokens: Sequence[int]) -> str:
        """Text of tokens that stand inside a longer text (decoded whole after the anchor's
        tokens, so multi-byte characters survive and a leading ``"▁"`` keeps its space)."""
        text = self._decode_raw(self._anchor_ids + tuple(int(t) for t in tokens))
        if text.startswith(self._anchor_text):
            return text[len(self._anchor_text) :]
        return self._decode_raw(tokens)  # pragma: no cover - decoders that rewrite the anchor

    def piece(self, token: int) -> str:
        """The text of one token inside a longer text (cached)."""
        text = self._pieces.get(token)
        if text is None:
            text = self._pieces[token] = self.decode([token])
        return text


__all__ = ["ANCHORS", "CACHE_MAX_CHARS", "PROBES", "TokenCodec"]
