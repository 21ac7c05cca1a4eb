"""Tiny random Text4Seg backbones built from configs, saved as local Hugging Face directories.

No weights can be downloaded here, so tests, the demo trainer and the node build their models
from configs: the real transformers classes (``LlavaForConditionalGeneration``,
``Qwen2VLForConditionalGeneration``, ``Qwen2_5_VLForConditionalGeneration``,
``InternVLForConditionalGeneration``) at about 1M parameters, with small square inputs
(default 32 x 32 pixels) so one forward takes a few milliseconds on a CPU.

The tokenizer is a byte-level BPE trained offline (:mod:`text4seg_ros.model.tokenizer`): digits
split one per token, the backbone's image special tokens, and a chat template rendering the
registry's prompt.

Processors: see :mod:`text4seg_ros.model.processors` (no torchvision here, so reload them with
:func:`load_processor`, not ``AutoProcessor``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import (
    CLIPVisionConfig,
    GotOcr2ImageProcessorPil,
    InternVLConfig,
    InternVLForConditionalGeneration,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaImageProcessorPil,
    LlavaProcessor,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2Config,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
)
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from .processors import (  # noqa: F401  (load_processor, PROCESSOR_CLASSES re-exported)
    PROCESSOR_CLASSES,
    InternVLProcessorNoVideo,
    Qwen2_5_VLProcessorNoVideo,
    Qwen2VLProcessorNoVideo,
    load_processor,
    save_processor,
)
from .tokenizer import (
    INTERNVL_CHAT_TEMPLATE,
    INTERNVL_SPECIALS,
    LLAVA_CHAT_TEMPLATE,
    LLAVA_SPECIALS,
    QWEN_CHAT_TEMPLATE,
    QWEN_SPECIALS,
    build_tokenizer,
)

TINY_BACKBONES: tuple[str, ...] = ("llava", "qwen2_vl", "qwen2_5_vl", "internvl")


def _check_sizes(backbone: str, sizes: dict[str, int]) -> dict[str, int]:
    defaults = {
        "hidden": 64,  # language model width
        "layers": 2,  # language model layers
        "heads": 4,
        "kv_heads": 2,
        "intermediate": 128,
        "vision_hidden": 32,
        "vision_layers": 2,
        "vision_heads": 2,
        "image_size": 32,  # pixels, square input the image processor resizes to
        "vocab_size": 512,
        "patch": 0,  # vision patch side in pixels; 0 = the backbone's default for image_size
    }
    unknown = sorted(set(sizes) - set(defaults))
    if unknown:
        raise TypeError(
            f"unknown size argument(s) {unknown} for {backbone!r}; allowed: {sorted(defaults)}"
        )
    out = {**defaults, **sizes}
    for key, value in out.items():
        low = 0 if key == "patch" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"size {key} must be an int >= {low}, got {value!r}")
    if out["patch"] and out["image_size"] % out["patch"]:
        raise ValueError(f"patch {out['patch']} must divide image_size {out['image_size']}")
    return out


def _text_kwargs(s: dict[str, int], vocab: int) -> dict[str, Any]:
    return {
        "vocab_size": vocab,
        "hidden_size": s["hidden"],
        "intermediate_size": s["intermediate"],
        "num_hidden_layers": s["layers"],
        "num_attention_heads": s["heads"],
        "num_key_value_heads": s["kv_heads"],
        "max_position_embeddings": 4096,
    }


def _build_llava(
    s: dict[str, int], seed: int, grid: int, extra_texts: Sequence[str] = ()
) -> tuple[Any, Any]:
    tok = build_tokenizer(
        LLAVA_SPECIALS,
        LLAVA_CHAT_TEMPLATE,
        {"image_token": "<image>"},
        s["vocab_size"],
        seed,
        grid,
        bos="<s>",
        extra_texts=extra_texts,
    )
    # patch 8 by default; a grid-aligned tower (e.g. patch 4 on 64 px: 16 x 16 tokens for
    # G = 16) gives every descriptor cell its own visual token.
    patch = s["patch"] or (8 if s["image_size"] >= 32 else 4)
    vision = CLIPVisionConfig(
        hidden_size=s["vision_hidden"],
        intermediate_size=2 * s["vision_hidden"],
        num_hidden_layers=s["vision_layers"],
        num_attention_heads=s["vision_heads"],
        image_size=s["image_size"],
        patch_size=patch,
        projection_dim=s["vision_hidden"],
    )
    text = LlamaConfig(
        **_text_kwargs(s, len(tok)),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    n_image = (s["image_size"] // patch) ** 2
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tok.image_token_id,
        image_seq_length=n_image,
        vision_feature_layer=-2 if s["vision_layers"] > 1 else -1,
    )
    model = LlavaForConditionalGeneration(config)
    size = s["image_size"]
    # LLaVA-1.5 pads the image to a square with the mean colour before resizing ("pad").
    image_processor = LlavaImageProcessorPil(
        do_pad=True,
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        image_mean=list(OPENAI_CLIP_MEAN),
        image_std=list(OPENAI_CLIP_STD),
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    return model, processor


def _qwen_vision(s: dict[str, int], patch: int) -> dict[str, Any]:
    return {
        "depth": s["vision_layers"],
        "embed_dim": s["vision_hidden"],
        "hidden_size": s["hidden"],
        "num_heads": s["vision_heads"],
        "patch_size": patch,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }


def _build_qwen(s: dict[str, int], seed: int, grid: int, v25: bool) -> tuple[Any, Any]:
    named = {
        "image_token": "<|image_pad|>",
        "video_token": "<|video_pad|>",
        "vision_start_token": "<|vision_start|>",
        "vision_end_token": "<|vision_end|>",
    }
    tok = build_tokenizer(QWEN_SPECIALS, QWEN_CHAT_TEMPLATE, named, s["vocab_size"], seed, grid)
    ids = {k: tok.convert_tokens_to_ids(v) for k, v in named.items()}
    patch = s["patch"] or (4 if s["image_size"] <= 32 else 8)
    head_dim = s["hidden"] // s["heads"]
    # mrope splits each rotary half into temporal / height / width sections.
    half = head_dim // 2
    section = [half - 2 * (half // 4), half // 4, half // 4]
    text = {
        **_text_kwargs(s, len(tok)),
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 10000.0,
            "mrope_section": section,
        },
        "bos_token_id": tok.pad_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    vision = _qwen_vision(s, patch)
    if v25:
        vision = {
            **vision,
            "intermediate_size": 2 * s["vision_hidden"],
            "out_hidden_size": s["hidden"],
            "window_size": 2 * patch * 2,
            "fullatt_block_indexes": [s["vision_layers"] - 1],
        }
        vision.pop("embed_dim")
        vision["hidden_size"] = s["vision_hidden"]
    config_cls = Qwen2_5_VLConfig if v25 else Qwen2VLConfig
    config = config_cls(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["image_token"],
        video_token_id=ids["video_token"],
        vision_start_token_id=ids["vision_start_token"],
        vision_end_token_id=ids["vision_end_token"],
    )
    model_cls = Qwen2_5_VLForConditionalGeneration if v25 else Qwen2VLForConditionalGeneration
    model = model_cls(config)
    pixels = s["image_size"] * s["image_size"]
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=patch,
        temporal_patch_size=2,
        merge_size=2,
        size={"shortest_edge": pixels, "longest_edge": pixels},
    )
    proc_cls = Qwen2_5_VLProcessorNoVideo if v25 else Qwen2VLProcessorNoVideo
    processor = proc_cls(
        image_processor=image_processor, tokenizer=tok, chat_template=QWEN_CHAT_TEMPLATE
    )
    return model, processor


def _build_internvl(s: dict[str, int], seed: int, grid: int) -> tuple[Any, Any]:
    named = {
        "start_image_token": "<img>",
        "end_image_token": "</img>",
        "context_image_token": "<IMG_CONTEXT>",
        "video_token": "<video>",
    }
    tok = build_tokenizer(
        INTERNVL_SPECIALS, INTERNVL_CHAT_TEMPLATE, named, s["vocab_size"], seed, grid
    )
    patch = s["patch"] or (4 if s["image_size"] <= 32 else 8)
    vision = {
        "hidden_size": s["vision_hidden"],
        "num_hidden_layers": s["vision_layers"],
        "num_attention_heads": s["vision_heads"],
        "intermediate_size": 2 * s["vision_hidden"],
        "image_size": [s["image_size"], s["image_size"]],
        "patch_size": [patch, patch],
    }
    text = Qwen2Config(
        **_text_kwargs(s, len(tok)),
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.pad_token_id,
    )
    seq = (s["image_size"] // patch) ** 2 // 4  # pixel shuffle with downsample ratio 0.5
    config = InternVLConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tok.context_image_token_id,
        image_seq_length=seq,
        downsample_ratio=0.5,
    )
    model = InternVLForConditionalGeneration(config)
    size = s["image_size"]
    image_processor = GotOcr2ImageProcessorPil(
        size={"height": size, "width": size}, crop_to_patches=False, max_patches=1
    )
    processor = InternVLProcessorNoVideo(
        image_processor=image_processor,
        tokenizer=tok,
        image_seq_length=seq,
        chat_template=INTERNVL_CHAT_TEMPLATE,
    )
    return model, processor


def build_tiny(
    backbone: str,
    grid: int = 16,
    seed: int = 0,
    extra_texts: Sequence[str] = (),
    **sizes: int,
) -> tuple[Any, Any]:
    """Build ``(model, processor)`` of a tiny random ``backbone`` in memory (eval mode, float32).

    ``sizes`` override the defaults of the widths, depths and the input ``image_size``
    (pixels); see :func:`build_tiny_model`. ``extra_texts`` (LLaVA only): more tokenizer
    training lines, so a task's words become few tokens (e.g. the demo's vocabulary).
    """
    if backbone not in TINY_BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; allowed: {', '.join(TINY_BACKBONES)}")
    s = _check_sizes(backbone, sizes)
    torch.manual_seed(seed)
    if extra_texts and backbone != "llava":
        raise ValueError(f"extra_texts is supported for llava only, not {backbone!r}")
    if backbone == "llava":
        model, processor = _build_llava(s, seed, grid, extra_texts)
    elif backbone == "internvl":
        model, processor = _build_internvl(s, seed, grid)
    else:
        model, processor = _build_qwen(s, seed, grid, v25=backbone == "qwen2_5_vl")
    return model.eval(), processor


def build_tiny_model(
    backbone: str,
    out_dir: Path,
    grid: int = 16,
    seed: int = 0,
    extra_texts: Sequence[str] = (),
    **sizes: int,
) -> Path:
    """Build a tiny random ``backbone`` and save it as a local Hugging Face directory.

    ``backbone``: one of :data:`TINY_BACKBONES`. ``grid``: the descriptor grid size G the
    tokenizer corpus uses (the model itself does not depend on it). ``seed`` fixes weights and
    tokenizer. ``sizes`` (all ints >= 1): ``hidden`` (64), ``layers`` (2), ``heads`` (4),
    ``kv_heads`` (2), ``intermediate`` (128), ``vision_hidden`` (32), ``vision_layers`` (2),
    ``vision_heads`` (2), ``image_size`` (32, square input in pixels), ``vocab_size`` (512,
    an upper bound for the BPE), ``patch`` (0: 8 px for LLaVA at 32 px and more, else 4; the
    vision patch side, must divide ``image_size``). ``extra_texts``: see :func:`build_tiny`.
    Writes config, safetensors weights, tokenizer and processor into ``out_dir`` (created) and
    returns it. Reload with
    :func:`text4seg_ros.model.loading.load_pretrained` or, for the processor alone,
    :func:`load_processor`.
    """
    model, processor = build_tiny(backbone, grid=grid, seed=seed, extra_texts=extra_texts, **sizes)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    save_processor(processor, out_dir, backbone)
    return out_dir


def random_llama(
    vocab_size: int,
    seed: int = 0,
    hidden: int = 64,
    layers: int = 2,
    max_positions: int = 1024,
    dtype: torch.dtype = torch.float32,
    tie_embeddings: bool = True,
) -> Any:
    """A random-weight text-only ``LlamaForCausalLM`` in eval mode, for decoding tests/benches.

    4 attention heads, 2 key/value heads, MLP width ``2 * hidden``; ``seed`` fixes the weights.
    """
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        tie_word_embeddings=tie_embeddings,
    )
    return LlamaForCausalLM(config).to(dtype).eval()
