"""Offline tokenizers for the tiny backbones, with chat templates.

* :func:`build_tokenizer`: byte-level BPEs trained with ``tokenizers`` in a few milliseconds on
  prompt and descriptor text. Like Llama's and Qwen's, they split every digit into its own token
  (run counts such as ``*16`` are ``*``, ``1``, ``6``) and carry the backbone's image special
  tokens; ``pattern`` swaps in a pre-tokenizer regex such as Qwen2's.
* :func:`train_sentencepiece` / :func:`llama_tokenizer`: a SentencePiece BPE with Llama-2's
  trainer settings (``split_digits``, ``byte_fallback``, dummy prefix, identity normalization),
  trained on general English (standard-library docstrings, never descriptors) and loaded from a
  ``tokenizer.model`` as the research LLaVA checkpoints ship it (transformers converts it to
  its ``LlamaTokenizer``).

The chat templates render exactly the prompts of :mod:`text4seg_ros.model.registry` (messages
in the transformers content-list form; an item ``{"type": "image"}`` marks the image).
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerFast

from ..decoding.general_bpe import train_byte_level_bpe

# Chat templates (jinja) rendering the same text as the registry's prompt builders. Messages
# use the transformers content-list form; an item {"type": "image"} marks the image.
# LLaVA-1.5 / Text4Seg use the vicuna_v1 conversation: this system line, then "USER: ..." and
# "ASSISTANT: ...</s>" turns separated by single spaces.
LLAVA_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)


def _vicuna_template(user_content: str) -> str:
    """The vicuna_v1 chat template with ``user_content`` writing a user turn's content list."""
    return (
        "{% for m in messages %}"
        "{% if loop.first and m['role'] != 'system' %}" + LLAVA_SYSTEM + " {% endif %}"
        "{% if m['role'] == 'system' %}{{ m['content'] if m['content'] is string "
        "else m['content'][0]['text'] }} "
        "{% elif m['role'] == 'user' %}USER: " + user_content + " "
        "{% else %}ASSISTANT: {% for c in m['content'] %}{{ c['text'] }}{% endfor %}</s>"
        "{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
    )


# The items in their order, the image as "<image>\n".
LLAVA_CHAT_TEMPLATE = _vicuna_template(
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
)
# The question-first layout of the same prompt (text4seg.json "prompt": "question_first",
# Backbone.question_first): the user turn's text, then its image.
LLAVA_QUESTION_FIRST_CHAT_TEMPLATE = _vicuna_template(
    "{% for c in m['content'] if c['type'] != 'image' %}{{ c['text'] }}\n{% endfor %}"
    "{% for c in m['content'] if c['type'] == 'image' %}<image>{% endfor %}"
)
QWEN_CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if loop.first and m['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
INTERNVL_CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if loop.first and m['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<IMG_CONTEXT>\n"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Special tokens per tokenizer family; the first is the pad token, the second the end of turn.
QWEN_SPECIALS = (
    "<|endoftext|>",
    "<|im_end|>",
    "<|im_start|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
INTERNVL_SPECIALS = (
    "<|endoftext|>",
    "<|im_end|>",
    "<|im_start|>",
    "<img>",
    "</img>",
    "<IMG_CONTEXT>",
    "<video>",
)
LLAVA_SPECIALS = ("<pad>", "</s>", "<s>", "<image>", "<unk>")

_WORDS = (
    "the a an of in on at left right top bottom front back red green blue yellow white black "
    "orange purple brown gray pink cup mug bottle laptop chair table person dog cat horse car "
    "bowl plate box book phone keyboard mouse floor wall door window shelf robot gripper object "
    "small large near far middle every all which where what is this that image picture mask "
    "can you segment please label find locate give respond with answer sure here are for and "
    "class classes candidate following these instances box boxes others background"
).split()


def corpus(seed: int, grid: int) -> list[str]:
    """Prompt-like and descriptor-like text to train the BPE on (deterministic per seed)."""
    # Imported here: prompts imports the descriptors package, which is light, but keeping the
    # module import graph flat avoids cycles when the registry imports this module.
    from ..prompts import INSTANCE_QUESTIONS, REFERRING_QUESTIONS, answer_prefix

    rng = random.Random(seed)
    lines = []
    for _ in range(200):
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 4)))
        lines.append(rng.choice(REFERRING_QUESTIONS + INSTANCE_QUESTIONS).format(text=words))
        lines.append(answer_prefix("res", words) + "<seg>")
        runs = []
        left = grid
        while left:
            n = rng.randint(1, left)
            runs.append(f"{rng.choice(('others', words))} *{n}")
            left -= n
        lines.append("| ".join(runs) + "\n " + "</seg>")
        lines.append(f"<ref>{words}</ref><box>[{rng.randint(0, 1000)}, {rng.randint(0, 1000)}]")
    lines += [LLAVA_SYSTEM, "USER: ASSISTANT: You are a helpful assistant."] * 20
    lines.append("0123456789 " * 4)
    return lines


def build_tokenizer(
    specials: tuple[str, ...],
    chat_template: str,
    named: dict[str, str],
    vocab_size: int = 512,
    seed: int = 0,
    grid: int = 16,
    bos: str | None = None,
    pattern: str | None = None,
    extra_texts: Sequence[str] = (),
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE (digits split one per token) carrying ``specials``.

    ``specials[0]`` is the pad token and ``specials[1]`` the end-of-turn (eos) token. ``named``
    maps model-specific attribute names (``image_token``, ``start_image_token``...) to tokens
    so the processors find them as ``tokenizer.image_token`` and ``tokenizer.image_token_id``.
    ``pattern``: a pre-tokenizer regex (e.g. Qwen2's, which isolates digits and glues
    punctuation to the next word: ``">others"``) instead of GPT-2's with digits split.
    ``extra_texts``: more training lines (e.g. whole answers, from which a Qwen-regex BPE learns
    merges such as ``">others"`` across the ``<seg>`` marker, as web-trained vocabularies hold).
    """
    tok = train_byte_level_bpe(
        corpus(seed, grid) + list(extra_texts), vocab_size, specials, pattern
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=specials[0],
        eos_token=specials[1],
        bos_token=bos,
        extra_special_tokens=named,
        chat_template=chat_template,
        padding_side="left",
    )


# Llama-2's SentencePiece trainer settings (its tokenizer.model's trainer_spec), scaled down.
LLAMA_SP_OPTIONS: dict[str, Any] = {
    "model_type": "bpe",
    "split_digits": True,
    "byte_fallback": True,
    "split_by_unicode_script": True,
    "split_by_whitespace": True,
    "split_by_number": True,
    "allow_whitespace_only_pieces": True,
    "max_sentencepiece_length": 16,
    "character_coverage": 0.99995,
    "normalization_rule_name": "identity",
    "add_dummy_prefix": True,
    "remove_extra_whitespaces": False,
    "unk_id": 0,
    "bos_id": 1,
    "eos_id": 2,
    "pad_id": -1,
}


@lru_cache(maxsize=4)
def train_sentencepiece(vocab_size: int = 2000, max_chars: int = 300_000) -> bytes:
    """A Llama-2-shaped SentencePiece BPE model (serialized ``tokenizer.model`` bytes).

    Trained on up to ``max_chars`` of standard-library docstrings, one line per sentence (as
    Llama's corpus: ``"\\n"`` is not a piece and falls back to the byte ``<0x0A>``). Pieces:
    ``<unk>`` 0, ``<s>`` 1, ``</s>`` 2, the 256 byte pieces, then merges. About half a second.
    Deterministic for given arguments; cached per process.
    """
    import sentencepiece as spm

    from ..decoding.general_bpe import stdlib_docstrings

    lines = [ln for doc in stdlib_docstrings(max_chars) for ln in doc.split("\n") if ln.strip()]
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=buffer,
        vocab_size=vocab_size,
        num_threads=1,
        minloglevel=2,
        **LLAMA_SP_OPTIONS,
    )
    return buffer.getvalue()


def llama_tokenizer(model_proto: bytes, out_dir: str | Path, legacy: bool = False) -> Any:
    """Write ``model_proto`` as a research-style Llama tokenizer (``tokenizer.model`` and a
    ``tokenizer_config.json`` naming ``LlamaTokenizer``, no ``tokenizer.json``) into
    ``out_dir`` and load it back with ``AutoTokenizer`` (transformers converts it)."""
    from transformers import AutoTokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.model").write_bytes(model_proto)
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": None,
        "legacy": legacy,
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return AutoTokenizer.from_pretrained(str(out))
