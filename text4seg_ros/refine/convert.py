"""Official ``sam_vit_*.pth`` checkpoints (segment_anything layout) to transformers SamModel.

The checkpoint is a plain state dict (``torch.load(weights_only=True)`` reads it). Module names
follow ``segment_anything.modeling``: ``image_encoder`` (``patch_embed.proj``, ``pos_embed``,
``blocks.N`` with ``norm1``/``attn``/``norm2``/``mlp``, ``neck`` as a Sequential
conv/LayerNorm2d/conv/LayerNorm2d), ``prompt_encoder`` (``pe_layer``, ``point_embeddings``,
``mask_downscaling`` Sequential), ``mask_decoder`` (``transformer``, ``output_upscaling``
Sequential, MLPs holding a ``layers`` list). The architecture (ViT-B/L/H or any smaller one) is
read from the tensor shapes; only the mask decoder's head count is not in the weights (8 in
every released SAM).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

# Ordered substring renames (segment_anything name -> transformers name).
_RENAMES: tuple[tuple[str, str], ...] = (
    ("image_encoder.", "vision_encoder."),
    ("patch_embed.proj.", "patch_embed.projection."),
    ("neck.0.", "neck.conv1."),
    ("neck.1.", "neck.layer_norm1."),
    ("neck.2.", "neck.conv2."),
    ("neck.3.", "neck.layer_norm2."),
    (".blocks.", ".layers."),
    ("pe_layer.positional_encoding_gaussian_matrix", "shared_embedding.positional_embedding"),
    ("point_embeddings.", "point_embed."),
    ("mask_downscaling.0.", "mask_embed.conv1."),
    ("mask_downscaling.1.", "mask_embed.layer_norm1."),
    ("mask_downscaling.3.", "mask_embed.conv2."),
    ("mask_downscaling.4.", "mask_embed.layer_norm2."),
    ("mask_downscaling.6.", "mask_embed.conv3."),
    ("output_upscaling.0.", "upscale_conv1."),
    ("output_upscaling.1.", "upscale_layer_norm."),
    ("output_upscaling.3.", "upscale_conv2."),
    (".norm", ".layer_norm"),  # norm1..norm4, norm_final_attn
)
_MLP = re.compile(
    r"^(.*(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\.layers\.(\d+)\.(.*)$"
)
_DROPPED = ("pixel_mean", "pixel_std")  # SAM's normalisation buffers; the processor normalises


def _mlp_depths(state: Mapping[str, Any]) -> dict[str, int]:
    depths: dict[str, int] = {}
    for key in state:
        m = _MLP.match(key)
        if m:
            depths[m.group(1)] = max(depths.get(m.group(1), 0), int(m.group(2)) + 1)
    return depths


def convert_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a segment_anything ``Sam`` state dict to transformers ``SamModel`` names."""
    depths = _mlp_depths(state)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in _DROPPED:
            continue
        m = _MLP.match(key)
        if m:
            # segment_anything's MLP is one list; transformers' is proj_in, layers, proj_out.
            stem, i, rest = m.group(1), int(m.group(2)), m.group(3)
            n = depths[stem]
            part = "proj_in" if i == 0 else "proj_out" if i == n - 1 else f"layers.{i - 1}"
            key = f"{stem}.{part}.{rest}"
        for old, new in _RENAMES:
            key = key.replace(old, new)
        out[key] = value
    pe = "prompt_encoder.shared_embedding.positional_embedding"
    if pe in out:  # one matrix in segment_anything, tied in transformers
        out["shared_image_embedding.positional_embedding"] = out[pe]
    return out


def _need(state: Mapping[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in state:
        raise ValueError(
            f"not a segment_anything SAM checkpoint: missing {key!r} "
            f"(expected keys under image_encoder., prompt_encoder., mask_decoder.)"
        )
    return state[key]


def infer_config(state: Mapping[str, torch.Tensor], decoder_heads: int = 8) -> Any:
    """A ``SamConfig`` matching the shapes of a segment_anything state dict."""
    from transformers import SamConfig

    patch = _need(state, "image_encoder.patch_embed.proj.weight")  # (C, 3, p, p)
    hidden, patch_size = int(patch.shape[0]), int(patch.shape[-1])
    pos = state.get("image_encoder.pos_embed")  # (1, E, E, C)
    embed = int(pos.shape[1]) if pos is not None else None
    blocks = sorted({int(k.split(".")[2]) for k in state if k.startswith("image_encoder.blocks.")})
    if not blocks:
        raise ValueError("not a segment_anything SAM checkpoint: no image_encoder.blocks.*")
    rel = state.get("image_encoder.blocks.0.attn.rel_pos_h")  # (2 * size - 1, head_dim)
    head_dim = int(rel.shape[1]) if rel is not None else 64
    if embed is None:
        raise ValueError("checkpoint has no image_encoder.pos_embed: cannot tell the input size")
    global_idx, window = [], 14
    for b in blocks:
        r = state.get(f"image_encoder.blocks.{b}.attn.rel_pos_h")
        if r is None:
            continue
        if int(r.shape[0]) == 2 * embed - 1:
            global_idx.append(b)
        else:
            window = (int(r.shape[0]) + 1) // 2
    out_ch = int(_need(state, "image_encoder.neck.0.weight").shape[0])
    gauss = _need(state, "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix")
    mask_ch = int(_need(state, "prompt_encoder.mask_downscaling.3.weight").shape[0])
    dec = "mask_decoder.transformer."
    dec_layers = len({k.split(".")[3] for k in state if k.startswith(dec + "layers.")})
    cross_q = _need(state, dec + "layers.0.cross_attn_token_to_image.q_proj.weight")
    iou_layers = _mlp_depths(state).get("mask_decoder.iou_prediction_head", 3)
    image_size = embed * patch_size
    return SamConfig(
        vision_config=dict(
            hidden_size=hidden,
            output_channels=out_ch,
            num_hidden_layers=len(blocks),
            num_attention_heads=hidden // head_dim,
            image_size=image_size,
            patch_size=patch_size,
            window_size=window,
            global_attn_indexes=global_idx,
            mlp_dim=int(_need(state, "image_encoder.blocks.0.mlp.lin1.weight").shape[0]),
            num_pos_feats=int(gauss.shape[1]),
            qkv_bias="image_encoder.blocks.0.attn.qkv.bias" in state,
            use_rel_pos=rel is not None,
        ),
        prompt_encoder_config=dict(
            hidden_size=out_ch,
            image_size=image_size,
            patch_size=patch_size,
            mask_input_channels=mask_ch,
        ),
        mask_decoder_config=dict(
            hidden_size=out_ch,
            mlp_dim=int(_need(state, dec + "layers.0.mlp.lin1.weight").shape[0]),
            num_hidden_layers=dec_layers,
            num_attention_heads=decoder_heads,
            attention_downsample_rate=out_ch // int(cross_q.shape[0]),
            num_multimask_outputs=int(_need(state, "mask_decoder.mask_tokens.weight").shape[0]) - 1,
            iou_head_depth=iou_layers,
            iou_head_hidden_dim=int(
                _need(state, "mask_decoder.iou_prediction_head.layers.0.weight").shape[0]
            ),
        ),
    )


def sam_kind(state: Mapping[str, torch.Tensor]) -> str:
    """``vit_b`` / ``vit_l`` / ``vit_h`` from the encoder width (768 / 1024 / 1280)."""
    hidden = int(_need(state, "image_encoder.patch_embed.proj.weight").shape[0])
    kinds = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}
    if hidden not in kinds:
        raise ValueError(f"encoder width {hidden} is none of SAM's ViT-B/L/H (768/1024/1280)")
    return kinds[hidden]


def sam_checkpoint_to_hf(state: Mapping[str, torch.Tensor], decoder_heads: int = 8) -> Any:
    """A transformers ``SamModel`` holding the weights of a segment_anything state dict.

    Loads strictly: any weight left over or missing raises ValueError naming it.
    """
    from transformers import SamModel

    config = infer_config(state, decoder_heads)
    model = SamModel(config)
    converted = convert_state_dict(state)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    if missing or unexpected:
        raise ValueError(
            "SAM checkpoint does not map onto transformers SamModel: "
            f"missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
            f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}"
        )
    bad = [k for k in expected if tuple(expected[k].shape) != tuple(converted[k].shape)]
    if bad:
        raise ValueError(
            f"SAM checkpoint shapes do not match the inferred config for {bad[:8]} "
            f"(e.g. {bad[0]}: {tuple(converted[bad[0]].shape)} vs {tuple(expected[bad[0]].shape)})"
        )
    model.load_state_dict(converted, strict=True)
    return model.eval()
