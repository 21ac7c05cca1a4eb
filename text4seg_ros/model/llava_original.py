"""The original LLaVA-1.5 / Text4Seg checkpoint layout, converted at load time (and back).

The research code (``LlavaLlamaForCausalLM``, which the public ``text4seg-llava-7b-p24``
checkpoint uses) saves:

* ``config.json``: a Llama config plus ``mm_vision_tower`` (a CLIP name such as
  ``openai/clip-vit-large-patch14-336``), ``mm_projector_type`` (``mlp2x_gelu``),
  ``mm_vision_select_layer`` (-2), ``mm_vision_select_feature`` (``patch``: drop CLS),
  ``mm_hidden_size`` and ``image_aspect_ratio`` (``pad``: pad to a square with the mean colour);
* language model weights (``model.embed_tokens``, ``model.layers.N``, ``model.norm``,
  ``lm_head``) in ``model*.safetensors`` or ``pytorch_model*.bin`` (index files for shards);
* the projector ``model.mm_projector.{0,2}`` inside those weights, or alone in
  ``mm_projector.bin``/``mm_projector.safetensors`` (the pre-training stage output);
* a Llama tokenizer without an ``<image>`` token (the image is spliced in by index -200).

:func:`load_llava_original` maps it onto ``LlavaForConditionalGeneration``: projector ->
``model.multi_modal_projector.linear_{1,2}``, language model -> ``model.language_model.*``,
vision tower loaded from its own directory (HF ``CLIPVisionModel`` or full ``CLIPModel``), and
an ``<image>`` token added to the tokenizer (embedding rows grown) when it is missing.
:func:`save_llava_original` writes the layout from a transformers LLaVA (tests, export).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tokenizers import AddedToken
from transformers import (
    AutoTokenizer,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaImageProcessorPil,
    LlavaProcessor,
)
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from .tokenizer import LLAVA_CHAT_TEMPLATE

IMAGE_TOKEN = "<image>"
PROJECTOR_FILES: tuple[str, ...] = ("mm_projector.safetensors", "mm_projector.bin")
LM_WEIGHT_FILES: tuple[str, ...] = (
    "model.safetensors.index.json",
    "model.safetensors",
    "pytorch_model.bin.index.json",
    "pytorch_model.bin",
)
_PROJECTOR_KEYS = {
    "model.mm_projector.0.weight": "model.multi_modal_projector.linear_1.weight",
    "model.mm_projector.0.bias": "model.multi_modal_projector.linear_1.bias",
    "model.mm_projector.2.weight": "model.multi_modal_projector.linear_2.weight",
    "model.mm_projector.2.bias": "model.multi_modal_projector.linear_2.bias",
}
_MM_KEYS = (
    "mm_vision_tower",
    "mm_hidden_size",
    "mm_projector_type",
    "mm_vision_select_layer",
    "mm_vision_select_feature",
    "mm_use_im_start_end",
    "mm_use_im_patch_token",
    "mm_patch_merge_type",
    "image_aspect_ratio",
    "tune_mm_mlp_adapter",
    "freeze_mm_mlp_adapter",
    "mm_projector_lr",
    "image_grid_pinpoints",
    "tokenizer_padding_side",
    "tokenizer_model_max_length",
    "use_mm_proj",
    "mm_vision_tower_lr",
)


def read_weights(file: Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` file, a ``.bin`` (``weights_only=True``) or an
    ``*.index.json`` of shards next to it."""
    file = Path(file)
    if file.name.endswith(".index.json"):
        index = json.loads(file.read_text())
        shards = sorted(set(index.get("weight_map", {}).values()))
        missing = [s for s in shards if not (file.parent / s).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{file.name} lists shards missing in {str(file.parent)!r}: {missing}"
            )
        out: dict[str, torch.Tensor] = {}
        for shard in shards:
            out.update(read_weights(file.parent / shard))
        return out
    if file.suffix == ".safetensors":
        return load_file(str(file))
    return torch.load(str(file), map_location="cpu", weights_only=True)


def _first(path: Path, names: tuple[str, ...]) -> Path | None:
    return next((path / n for n in names if (path / n).is_file()), None)


def _vision_dir(path: Path, config: dict[str, Any], vision_tower: str | Path | None) -> Path:
    name = config.get("mm_vision_tower") or config.get("vision_tower") or "?"
    candidate = Path(vision_tower).expanduser() if vision_tower else Path(str(name))
    if not candidate.is_dir():
        raise FileNotFoundError(
            f"vision tower for {str(path)!r} not found: pass vision_tower=<directory of the CLIP "
            f"model {name!r} in Hugging Face layout (config.json + weights)>"
            + (f"; {str(candidate)!r} is not a directory" if vision_tower else "")
        )
    if not (candidate / "config.json").is_file():
        raise FileNotFoundError(f"vision tower directory {str(candidate)!r} has no config.json")
    return candidate


def _convert(
    lm: dict[str, torch.Tensor], vision: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Original key names -> ``LlavaForConditionalGeneration`` key names."""
    out: dict[str, torch.Tensor] = {}
    for key, value in lm.items():
        if key in _PROJECTOR_KEYS:
            out[_PROJECTOR_KEYS[key]] = value
        elif key.startswith("model.vision_tower."):
            continue  # a frozen tower copy some checkpoints carry; the given tower is used
        elif key.startswith("model."):
            out["model.language_model." + key.removeprefix("model.")] = value
        elif key == "lm_head.weight":
            out[key] = value
        else:
            raise ValueError(f"unexpected weight {key!r} in the LLaVA checkpoint")
    for key, value in vision.items():
        out["model.vision_tower." + key] = value
    return out


def _tokenizer(path: Path) -> Any:
    if not any((path / n).is_file() for n in ("tokenizer.json", "tokenizer.model")):
        raise FileNotFoundError(
            f"tokenizer missing in {str(path)!r}: expected tokenizer.json or tokenizer.model"
        )
    tok = AutoTokenizer.from_pretrained(str(path))
    if IMAGE_TOKEN not in tok.get_vocab():
        tok.add_tokens(
            [AddedToken(IMAGE_TOKEN, special=True, normalized=False)], special_tokens=True
        )
    if tok.pad_token is None:
        tok.pad_token = tok.unk_token or tok.eos_token
    return tok


def _grow_rows(weights: dict[str, torch.Tensor], key: str, rows: int) -> None:
    """Append mean rows so a matrix has ``rows`` rows (new tokens; the image token's row is
    replaced by image features and never sampled)."""
    value = weights[key]
    if value.shape[0] < rows:
        extra = value.float().mean(0, keepdim=True).to(value.dtype)
        weights[key] = torch.cat([value, extra.expand(rows - value.shape[0], -1)], dim=0)


def load_llava_original(
    path: Path, vision_tower: str | Path | None, dtype: torch.dtype
) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """Load and convert an original LLaVA checkpoint directory (see module doc)."""
    path = Path(path)
    config = json.loads((path / "config.json").read_text())
    kind = config.get("mm_projector_type", "linear")
    if kind != "mlp2x_gelu":
        raise ValueError(
            f"{str(path)!r}: mm_projector_type {kind!r} not supported; expected 'mlp2x_gelu' "
            "(LLaVA-1.5), the projector of transformers' LlavaForConditionalGeneration"
        )
    lm_file = _first(path, LM_WEIGHT_FILES)
    if lm_file is None:
        raise FileNotFoundError(
            f"language model weights missing in {str(path)!r}: "
            f"expected one of {', '.join(LM_WEIGHT_FILES)}"
        )
    lm = read_weights(lm_file)
    if not any(k in lm for k in _PROJECTOR_KEYS):
        projector = _first(path, PROJECTOR_FILES)
        if projector is None:
            raise FileNotFoundError(
                f"mm_projector weights missing: not in {lm_file.name} and none of "
                f"{', '.join(PROJECTOR_FILES)} in {str(path)!r}"
            )
        lm.update(read_weights(projector))
    vdir = _vision_dir(path, config, vision_tower)
    tower = CLIPVisionModel.from_pretrained(str(vdir), dtype=dtype)
    vision_config: CLIPVisionConfig = tower.config
    tok = _tokenizer(path)
    text_dict = {k: v for k, v in config.items() if k not in _MM_KEYS}
    for k in ("architectures", "model_type", "_name_or_path", "transformers_version"):
        text_dict.pop(k, None)
    text_config = LlamaConfig(**text_dict)
    vocab = max(len(tok), text_config.vocab_size)
    text_config.vocab_size = vocab
    patch = vision_config.patch_size
    select = config.get("mm_vision_select_feature", "patch")
    llava_config = LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=tok.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=(vision_config.image_size // patch) ** 2,
        vision_feature_layer=config.get("mm_vision_select_layer", -2),
        vision_feature_select_strategy="default" if select == "patch" else "full",
        projector_hidden_act="gelu",
    )
    weights = _convert(lm, tower.state_dict())
    for key in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
        if key not in weights:
            raise ValueError(f"{str(path)!r}: weight {key!r} missing from {lm_file.name}")
        _grow_rows(weights, key, vocab)
    with torch.device("meta"):  # shapes only: no memory for a 7B model's random weights
        expected = LlavaForConditionalGeneration(llava_config).state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"LLaVA checkpoint {str(path)!r} does not match the converted layout: "
            f"missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
            f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}"
        )
    for key, value in weights.items():
        if value.shape != expected[key].shape:
            raise ValueError(
                f"weight {key!r}: shape {tuple(value.shape)} in the checkpoint, "
                f"{tuple(expected[key].shape)} expected from config.json"
            )
    # from_pretrained with a state dict: built on the meta device and filled in ``dtype``,
    # buffers (rotary frequencies, position ids) initialised properly.
    model = LlavaForConditionalGeneration.from_pretrained(
        None, config=llava_config, state_dict=weights, dtype=dtype
    )
    size = vision_config.image_size
    if (vdir / "preprocessor_config.json").is_file():
        image_processor = LlavaImageProcessorPil.from_pretrained(str(vdir))
    else:  # CLIP's standard preprocessing at the tower's input size
        image_processor = LlavaImageProcessorPil(
            size={"shortest_edge": size},
            crop_size={"height": size, "width": size},
            image_mean=list(OPENAI_CLIP_MEAN),
            image_std=list(OPENAI_CLIP_STD),
        )
    image_processor.do_pad = config.get("image_aspect_ratio", "pad") == "pad"
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=patch,
        vision_feature_select_strategy=llava_config.vision_feature_select_strategy,
        num_additional_image_tokens=1,
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    return model.eval(), processor


def save_llava_original(
    model: LlavaForConditionalGeneration,
    processor: LlavaProcessor,
    out_dir: str | Path,
    vision_dir: str | Path,
    projector_separate: bool = True,
    safetensors: bool = True,
) -> Path:
    """Write ``model`` in the original LLaVA layout (language model + ``mm_projector`` in
    ``out_dir``, the CLIP vision tower as a ``CLIPVisionModel`` directory in ``vision_dir``).

    ``projector_separate``: the projector in ``mm_projector.*`` (else inside the language model
    weights). ``safetensors``: ``.safetensors`` files (else ``torch.save`` ``.bin``).
    """
    out_dir, vision_dir = Path(out_dir), Path(vision_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    inverse = {v: k for k, v in _PROJECTOR_KEYS.items()}
    lm, projector = {}, {}
    for key, value in state.items():
        if key in inverse:
            projector[inverse[key]] = value
        elif key.startswith("model.language_model."):
            lm["model." + key.removeprefix("model.language_model.")] = value
        elif key == "lm_head.weight":
            lm[key] = value
    if not projector_separate:
        lm.update(projector)

    def write(tensors: dict[str, torch.Tensor], stem: str) -> None:
        if safetensors:
            save_file(tensors, str(out_dir / f"{stem}.safetensors"), metadata={"format": "pt"})
        else:
            torch.save(tensors, str(out_dir / f"{stem}.bin"))

    write(lm, "model" if safetensors else "pytorch_model")
    if projector_separate:
        write(projector, "mm_projector")
    tower = CLIPVisionModel(model.config.vision_config)
    tower.load_state_dict(model.model.vision_tower.state_dict())
    tower.save_pretrained(str(vision_dir))
    processor.image_processor.save_pretrained(str(vision_dir))
    text = model.config.text_config.to_dict()
    config = {
        **{k: v for k, v in text.items() if k not in ("architectures", "model_type")},
        "architectures": ["LlavaLlamaForCausalLM"],
        "model_type": "llava_llama",
        "mm_vision_tower": str(vision_dir),
        "mm_hidden_size": model.config.vision_config.hidden_size,
        "mm_projector_type": "mlp2x_gelu",
        "mm_vision_select_layer": model.config.vision_feature_layer,
        "mm_vision_select_feature": (
            "patch" if model.config.vision_feature_select_strategy == "default" else "cls_patch"
        ),
        "image_aspect_ratio": "pad" if processor.image_processor.do_pad else "square",
        "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False,
    }
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    processor.tokenizer.save_pretrained(str(out_dir))
    return out_dir
