"""Real-size backbone architectures with random weights, for the GPU check (no hub here).

``llava_1_5_7b``: LLaVA-1.5-7B (CLIP ViT-L/14-336, Vicuna-7B: 4096 wide, 32 layers, 32 heads,
MLP 11008, vocabulary 32064). ``qwen2_vl_2b``: Qwen2-VL-2B (ViT 1280 wide, 32 blocks; Qwen2 text
1536 wide, 28 layers, 12 heads, 2 KV heads, MLP 8960, vocabulary 151936, tied embeddings).
``*_tiny``: the same classes at test size, for the CPU dry run.

The tokenizer is our offline byte-level BPE (:func:`text4seg_ros.model.tokenizer.build_tokenizer`)
carrying the backbone's special tokens; the model keeps the real vocabulary size (its embedding
and output head are full size; the tokenizer uses the first few hundred ids).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaImageProcessorPil,
    LlavaProcessor,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
)
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from text4seg_ros.model.processors import Qwen2VLProcessorNoVideo
from text4seg_ros.model.tokenizer import (
    LLAVA_CHAT_TEMPLATE,
    LLAVA_SPECIALS,
    QWEN_CHAT_TEMPLATE,
    QWEN_SPECIALS,
    build_tokenizer,
)

# name -> (backbone, sizes)
ARCHS: dict[str, tuple[str, dict[str, int]]] = {
    "llava_1_5_7b": ("llava", dict(hidden=4096, layers=32, heads=32, kv_heads=32,
                                   intermediate=11008, vocab=32064, vision_hidden=1024,
                                   vision_layers=24, vision_heads=16, vision_mlp=4096,
                                   image=336, patch=14)),
    "qwen2_vl_2b": ("qwen2_vl", dict(hidden=1536, layers=28, heads=12, kv_heads=2,
                                     intermediate=8960, vocab=151936, vision_hidden=1280,
                                     vision_layers=32, vision_heads=16, patch=14)),
    "llava_tiny": ("llava", dict(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128,
                                 vocab=1024, vision_hidden=32, vision_layers=2, vision_heads=2,
                                 vision_mlp=64, image=56, patch=14)),
    "qwen2_vl_tiny": ("qwen2_vl", dict(hidden=64, layers=2, heads=4, kv_heads=2,
                                       intermediate=128, vocab=1024, vision_hidden=32,
                                       vision_layers=2, vision_heads=2, patch=14)),
}  # fmt: skip


def _llava(s: dict[str, int], grid: int) -> tuple[Any, Any]:
    tok = build_tokenizer(
        LLAVA_SPECIALS, LLAVA_CHAT_TEMPLATE, {"image_token": "<image>"}, 512, 0, grid, bos="<s>"
    )
    vision = CLIPVisionConfig(
        hidden_size=s["vision_hidden"],
        intermediate_size=s["vision_mlp"],
        num_hidden_layers=s["vision_layers"],
        num_attention_heads=s["vision_heads"],
        image_size=s["image"],
        patch_size=s["patch"],
        projection_dim=768,
    )
    text = LlamaConfig(
        vocab_size=max(s["vocab"], len(tok)),
        hidden_size=s["hidden"],
        intermediate_size=s["intermediate"],
        num_hidden_layers=s["layers"],
        num_attention_heads=s["heads"],
        num_key_value_heads=s["kv_heads"],
        max_position_embeddings=4096,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    n_image = (s["image"] // s["patch"]) ** 2
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tok.image_token_id,
        image_seq_length=n_image,
        vision_feature_layer=-2,
    )
    image_processor = LlavaImageProcessorPil(
        do_pad=True,
        size={"shortest_edge": s["image"]},
        crop_size={"height": s["image"], "width": s["image"]},
        image_mean=list(OPENAI_CLIP_MEAN),
        image_std=list(OPENAI_CLIP_STD),
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=s["patch"],
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    return (LlavaForConditionalGeneration, config), processor


def _qwen2_vl(s: dict[str, int], grid: int) -> tuple[Any, Any]:
    named = {
        "image_token": "<|image_pad|>",
        "video_token": "<|video_pad|>",
        "vision_start_token": "<|vision_start|>",
        "vision_end_token": "<|vision_end|>",
    }
    tok = build_tokenizer(QWEN_SPECIALS, QWEN_CHAT_TEMPLATE, named, 512, 0, grid)
    ids = {k: tok.convert_tokens_to_ids(v) for k, v in named.items()}
    half = s["hidden"] // s["heads"] // 2
    section = [half - 2 * (3 * half // 8), 3 * half // 8, 3 * half // 8]  # 2B: [16, 24, 24]
    text = {
        "vocab_size": max(s["vocab"], len(tok)),
        "hidden_size": s["hidden"],
        "intermediate_size": s["intermediate"],
        "num_hidden_layers": s["layers"],
        "num_attention_heads": s["heads"],
        "num_key_value_heads": s["kv_heads"],
        "max_position_embeddings": 32768,
        "tie_word_embeddings": True,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": section},
        "bos_token_id": tok.pad_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    vision = {
        "depth": s["vision_layers"],
        "embed_dim": s["vision_hidden"],
        "hidden_size": s["hidden"],
        "num_heads": s["vision_heads"],
        "mlp_ratio": 4,
        "patch_size": s["patch"],
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }
    config = Qwen2VLConfig(
        text_config=text,
        vision_config=vision,
        tie_word_embeddings=True,
        image_token_id=ids["image_token"],
        video_token_id=ids["video_token"],
        vision_start_token_id=ids["vision_start_token"],
        vision_end_token_id=ids["vision_end_token"],
    )
    image_processor = Qwen2VLImageProcessorPil(patch_size=s["patch"], temporal_patch_size=2,
                                              merge_size=2)  # fmt: skip
    processor = Qwen2VLProcessorNoVideo(
        image_processor=image_processor, tokenizer=tok, chat_template=QWEN_CHAT_TEMPLATE
    )
    return (Qwen2VLForConditionalGeneration, config), processor


def build(
    name: str, device: str | torch.device, dtype: torch.dtype, grid: int = 16, seed: int = 0
) -> tuple[Any, Any, str]:
    """``(model, processor, backbone name)`` of architecture ``name``, random weights, built
    directly on ``device`` in ``dtype`` (eval mode)."""
    if name not in ARCHS:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(ARCHS)}")
    backbone, sizes = ARCHS[name]
    (cls, config), processor = (_llava if backbone == "llava" else _qwen2_vl)(sizes, grid)
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # parameters are created in dtype: no float32 copy of 7B
    try:
        with torch.device(device):
            model = cls(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval(), processor, backbone


def param_bytes(module: torch.nn.Module) -> int:
    """Bytes of a module's parameters (shared tensors counted once)."""
    seen, total = set(), 0
    for p in module.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel() * p.element_size()
    return total
