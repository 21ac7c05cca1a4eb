"""Tiny random SAM models for tests and demos (no weights can be downloaded here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .backends import build_processor


def tiny_sam_config(image_size: int = 128, hidden: int = 32) -> Any:
    """A ``SamConfig`` of about 0.1 M parameters with SAM's structure.

    ``image_size`` is the square input side (multiple of 16); the image embedding is
    ``image_size / 16`` wide and the low-resolution mask frame four times that. The mask
    decoder keeps SAM's 8 heads, so converted checkpoints round-trip with the default
    ``decoder_heads``.
    """
    from transformers import SamConfig

    if image_size % 16:
        raise ValueError(f"image_size must be a multiple of 16, got {image_size}")
    return SamConfig(
        vision_config=dict(
            hidden_size=hidden,
            output_channels=hidden,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=16,
            window_size=4,
            global_attn_indexes=[1],
            mlp_dim=2 * hidden,
            num_pos_feats=hidden // 2,
        ),
        prompt_encoder_config=dict(
            hidden_size=hidden, image_size=image_size, patch_size=16, mask_input_channels=8
        ),
        mask_decoder_config=dict(
            hidden_size=hidden,
            mlp_dim=2 * hidden,
            num_hidden_layers=2,
            num_attention_heads=8,
            iou_head_hidden_dim=hidden,
        ),
    )


def build_tiny_sam(out_dir: str | Path, seed: int = 0, image_size: int = 128) -> Path:
    """Save a random tiny ``SamModel`` and its ``SamProcessor`` to ``out_dir``; returns it."""
    from transformers import SamModel

    torch.manual_seed(seed)
    model = SamModel(tiny_sam_config(image_size)).eval()
    with torch.no_grad():
        # Default init leaves norms at 1/0 and the vision tower near 0 (initializer 1e-10): noise
        # on every tensor gives non-trivial masks and lets tests catch swapped weights.
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    build_processor(image_size).save_pretrained(out)
    return out
