"""Offline byte-level BPE tokenizers for the tiny backbones, with chat templates.

Trained with ``tokenizers`` in a few milliseconds on prompt and descriptor text. Like Llama's and
Qwen's, they split every digit into its own token (run counts such as ``*16`` are ``*``, ``1``,
``6``) and carry the backbone's image special tokens. The chat templates render exactly the
prompts of :mod:`text4seg_ros.model.registry` (messages in the transformers content-list form;
an item ``{"type": "image"}`` marks the image).
"""

from __future__ import annotations

import random

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

# Chat templates (jinja) rendering the same text as the registry's prompt builders. Messages
# use the transformers content-list form; an item {"type": "image"} marks the image.
# LLaVA-1.5 / Text4Seg use the vicuna_v1 conversation: this system line, then "USER: ..." and
# "ASSISTANT: ...</s>" turns separated by single spaces.
LLAVA_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
LLAVA_CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if loop.first and m['role'] != 'system' %}" + LLAVA_SYSTEM + " {% endif %}"
    "{% if m['role'] == 'system' %}{{ m['content'] if m['content'] is string "
    "else m['content'][0]['text'] }} "
    "{% elif m['role'] == 'user' %}USER: "
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %} "
    "{% else %}ASSISTANT: {% for c in m['content'] %}{{ c['text'] }}{% endfor %}</s>"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
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
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE (digits split one per token) carrying ``specials``.

    ``specials[0]`` is the pad token and ``specials[1]`` the end-of-turn (eos) token. ``named``
    maps model-specific attribute names (``image_token``, ``start_image_token``...) to tokens
    so the processors find them as ``tokenizer.image_token`` and ``tokenizer.image_token_id``.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"\p{N}"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(specials),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(seed, grid), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=specials[0],
        eos_token=specials[1],
        bos_token=bos,
        extra_special_tokens=named,
        chat_template=chat_template,
        padding_side="left",
    )
