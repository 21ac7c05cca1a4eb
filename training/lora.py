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


def freeze_parts(model: PreTrainedModel, parts: list[str]) -> list[str]:
    """Set ``requires_grad`` False on the named parts of a multimodal model (in place):
    ``vision`` the vision tower, ``projector`` the vision-language projector, ``embeddings``
    the word embeddings (with tied weights, the output head too). Returns the parameter names
    frozen. Raises ValueError for an unknown part or one this model does not have."""
    inner = model.model
    modules = {
        "vision": getattr(inner, "vision_tower", None) or getattr(inner, "visual", None),
        "projector": getattr(inner, "multi_modal_projector", None),
        "embeddings": model.get_input_embeddings(),
    }
    frozen: list[str] = []
    for part in parts:
        if part not in modules:
            raise ValueError(f"unknown part {part!r}; known: {sorted(modules)}")
        module = modules[part]
        if module is None:
            raise ValueError(f"{type(model).__name__} has no {part} module to freeze")
        module.requires_grad_(False)
        ids = {id(p) for p in module.parameters()}
        frozen += [n for n, p in model.named_parameters() if id(p) in ids]
    return frozen
