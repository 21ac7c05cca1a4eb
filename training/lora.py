"""LoRA targets per backbone and the base-model loading the trainer and merge share.

Targets (SPEC section 8): every linear layer of the language model (attention q/k/v/o and MLP
gate/up/down) and the vision-language projector; the vision tower stays frozen (peft freezes
every weight that is not a LoRA factor). Module names are those of transformers v5, where the
language model sits at ``model.language_model`` for all four backbones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig
from transformers import PreTrainedModel

from text4seg_ros.model.loading import load_pretrained
from text4seg_ros.model.registry import Backbone

_LM_LINEARS = (
    r"model\.language_model\.layers\.\d+\."
    r"(?:self_attn\.(?:q|k|v|o)_proj|mlp\.(?:gate|up|down)_proj)"
)
# Projector module names per backbone (Qwen's projector is the vision tower's patch merger).
PROJECTORS: dict[str, str] = {
    "llava": r"model\.multi_modal_projector\.linear_[12]",
    "internvl": r"model\.multi_modal_projector\.linear_[12]",
    "qwen2_vl": r"model\.visual\.merger\.mlp\.[02]",
    "qwen2_5_vl": r"model\.visual\.merger\.mlp\.[02]",
}


def target_modules(backbone: str, projector: bool = True) -> str:
    """peft ``target_modules`` regex (full match on module names) for ``backbone``."""
    if backbone not in PROJECTORS:
        raise ValueError(f"no LoRA targets for backbone {backbone!r}; known: {sorted(PROJECTORS)}")
    parts = [_LM_LINEARS] + ([PROJECTORS[backbone]] if projector else [])
    return "^(?:" + "|".join(parts) + ")$"


def lora_config(backbone: str, r: int = 64, alpha: int = 128, dropout: float = 0.05) -> LoraConfig:
    """The LoRA config of the recipe for ``backbone`` (rank, alpha, dropout of SPEC section 8)."""
    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules(backbone),
        bias="none",
        task_type="CAUSAL_LM",
    )


def load_base(
    path: str | Path,
    dtype: torch.dtype = torch.float32,
    backbone: str | None = None,
    adapter: str | Path | None = None,
    max_tiles: int | None = None,
) -> tuple[PreTrainedModel, Any, Backbone]:
    """Load ``(model, processor, backbone)`` exactly as the Segmenter does (any layout of
    :func:`text4seg_ros.model.loading.load_pretrained`; ``adapter`` merged in when given;
    ``max_tiles``: InternVL tiles, recorded with the processor the run saves)."""
    loaded = load_pretrained(
        path, backbone=backbone, adapter=adapter, dtype=dtype, max_tiles=max_tiles
    )
    return loaded.model, loaded.processor, loaded.backbone
