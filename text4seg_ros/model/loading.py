"""Load a backbone and its processor from disk, in any of the supported layouts.

Layouts (detected from the files; :func:`load_pretrained`):

* ``hf``: a Hugging Face directory (``config.json`` with a registered ``model_type``, weights as
  ``model*.safetensors`` or ``pytorch_model*.bin``, tokenizer and processor files).
* ``lora``: a base model (any layout here) plus a peft LoRA adapter directory
  (``adapter_config.json`` + ``adapter_model.safetensors``/``.bin``), merged into the weights at
  load (``merge_adapter=True``, fastest at inference) or kept as separate LoRA layers. The
  adapter directory may be given as the path itself when its ``base_model_name_or_path`` is a
  local directory.
* ``llava_original``: the original LLaVA-1.5 / Text4Seg training layout (``LlavaLlamaForCausalLM``:
  ``config.json`` with ``mm_*`` keys, language model weights, the ``mm_projector`` inside them or
  in ``mm_projector.bin``/``.safetensors``; the CLIP vision tower given separately by path),
  converted at load time to ``LlavaForConditionalGeneration``: see :mod:`.llava_original`.

Weights are read with safetensors or ``torch.load(weights_only=True)``; ``trust_remote_code``
is False unless the caller asks. Missing or mismatched files raise :class:`FileNotFoundError`
or :class:`ValueError` naming what is missing and what was expected.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from ..checks import DTYPE_NAMES, as_dtype
from .meta import model_prompt
from .processors import load_processor
from .registry import Backbone, detect_backbone, get_backbone

WEIGHT_FILES: tuple[str, ...] = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILES: tuple[str, ...] = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
PROCESSOR_FILES: tuple[str, ...] = ("processor_config.json", "preprocessor_config.json")
ADAPTER_WEIGHTS: tuple[str, ...] = ("adapter_model.safetensors", "adapter_model.bin")
# The one dtype table (names in text4seg_ros.checks.DTYPE_NAMES), as torch dtypes.
DTYPES: dict[str, torch.dtype] = {name: as_dtype(name) for name in DTYPE_NAMES}
LAYOUTS: tuple[str, ...] = ("hf", "lora", "llava_original")


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device`` that this torch can use; ValueError (one line) otherwise.

    ``cpu`` always; ``cuda`` / ``cuda:N`` only where this torch build has CUDA and sees GPU
    ``N``; ``mps`` where available. Checked before any weights are read, so a CPU-only install
    asked for ``cuda`` says so instead of failing deep inside ``Module.to``.
    """
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"invalid device {str(device)!r}: {exc}") from None
    if parsed.type == "cpu":
        return parsed
    if parsed.type == "cuda":
        if torch.version.cuda is None:
            raise ValueError(
                f"device {str(device)!r}: this torch ({torch.__version__}) is built without "
                "CUDA; use 'cpu' or install a CUDA build of torch"
            )
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {str(device)!r}: no CUDA GPU is visible; use 'cpu'")
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(
                f"device {str(device)!r}: only {count} CUDA GPU(s) visible (cuda:0..{count - 1})"
            )
        return parsed
    if parsed.type == "mps" and torch.backends.mps.is_available():
        return parsed
    raise ValueError(f"device {str(device)!r} is not available here; use 'cpu' or 'cuda[:N]'")


@dataclass
class LoadedModel:
    """A model ready for inference (eval mode) with its processor and registry entry."""

    model: PreTrainedModel
    processor: Any
    backbone: Backbone
    path: Path
    layout: str  # one of LAYOUTS
    adapter: Path | None = None


def read_config(path: Path) -> dict[str, Any]:
    """``config.json`` of a model directory as a dict; FileNotFoundError naming it if absent."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"model directory {str(path)!r} does not exist")
    file = path / "config.json"
    if not file.is_file():
        present = sorted(p.name for p in path.iterdir())[:20]
        raise FileNotFoundError(
            f"{str(path)!r} has no config.json (expected a Hugging Face model directory, an "
            f"original LLaVA checkpoint or a LoRA adapter); found: {present}"
        )
    return json.loads(file.read_text())


def require_any(path: Path, names: tuple[str, ...], what: str) -> Path:
    """The first of ``names`` present in ``path``, else FileNotFoundError naming them all."""
    for name in names:
        if (path / name).is_file():
            return path / name
    raise FileNotFoundError(f"{what} missing in {str(path)!r}: expected one of {', '.join(names)}")


def is_adapter_dir(path: Path) -> bool:
    """True when ``path`` holds a peft adapter (``adapter_config.json``)."""
    return (Path(path) / "adapter_config.json").is_file()


def is_llava_original(config: dict[str, Any]) -> bool:
    """True for the original LLaVA training layout (``LlavaLlamaForCausalLM``, ``mm_*`` keys)."""
    archs = config.get("architectures") or []
    return (
        config.get("model_type") in ("llava_llama", "llava_mistral", "llava_qwen")
        or any(a.startswith("Llava") and a.endswith("ForCausalLM") for a in archs)
        or ("mm_vision_tower" in config and config.get("model_type") != "llava")
    )


def _load_hf(
    path: Path,
    backbone: Backbone | None,
    dtype: torch.dtype,
    trust_remote_code: bool,
    max_tiles: int | None = None,
) -> tuple[PreTrainedModel, Any, Backbone]:
    config = read_config(path)
    if backbone is None:
        model_type = config.get("model_type", "")
        if "auto_map" in config and not trust_remote_code:
            note = " (it ships remote code; pass trust_remote_code=True only if you trust it)"
        else:
            note = ""
        try:
            backbone = detect_backbone(model_type)
        except ValueError as err:
            raise ValueError(f"{str(path)!r}: {err}{note}") from None
    require_any(path, WEIGHT_FILES, "model weights")
    require_any(path, TOKENIZER_FILES, "tokenizer")
    require_any(path, PROCESSOR_FILES, "image processor config")
    model = backbone.model_class.from_pretrained(
        str(path), dtype=dtype, trust_remote_code=trust_remote_code
    )
    return model, load_processor(path, backbone.name, max_tiles), backbone


def attach_adapter(model: PreTrainedModel, adapter: Path, merge: bool) -> PreTrainedModel:
    """Apply the peft LoRA adapter in ``adapter`` to ``model``; merged or kept as LoRA layers.

    Returns the transformers model (with LoRA layers injected when not merged), so the
    registry's step adapters work on it unchanged.
    """
    from peft import PeftModel

    adapter = Path(adapter)
    if not adapter.is_dir():
        raise FileNotFoundError(f"adapter directory {str(adapter)!r} does not exist")
    require_any(adapter, ("adapter_config.json",), "LoRA adapter config")
    require_any(adapter, ADAPTER_WEIGHTS, "LoRA adapter weights")
    peft_model = PeftModel.from_pretrained(model, str(adapter), is_trainable=False)
    if merge:
        return peft_model.merge_and_unload()
    return peft_model.get_base_model()


def load_pretrained(
    path: str | Path,
    backbone: str | None = None,
    adapter: str | Path | None = None,
    merge_adapter: bool = True,
    vision_tower: str | Path | None = None,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = torch.float32,
    trust_remote_code: bool = False,
    max_tiles: int | None = None,
) -> LoadedModel:
    """Load model + processor from ``path`` (layout detected, see module doc), in eval mode.

    ``backbone``: registry name; None reads it from ``config.json``. ``adapter``: a LoRA
    adapter directory to apply on top (or give the adapter directory as ``path``).
    ``vision_tower``: the CLIP vision tower directory for the original LLaVA layout (default:
    the config's ``mm_vision_tower`` when that is a local directory). ``dtype``: ``float32``,
    ``float16`` or ``bfloat16``. ``device``: see :func:`check_device` (ValueError when this
    torch cannot use it). ``max_tiles``: InternVL image tiles (None: as recorded with the
    processor, else 1; see :func:`.processors.configure_processor`).
    """
    path = Path(path).expanduser()
    dtype = as_dtype(dtype)
    device = check_device(device)
    chosen = get_backbone(backbone) if backbone else None
    if not path.exists():
        raise FileNotFoundError(f"model path {str(path)!r} does not exist")
    if adapter is None and is_adapter_dir(path):
        adapter_cfg = json.loads((path / "adapter_config.json").read_text())
        base = adapter_cfg.get("base_model_name_or_path") or ""
        if not base or not Path(base).is_dir():
            raise FileNotFoundError(
                f"{str(path)!r} is a LoRA adapter whose base model {base!r} is not a local "
                "directory: pass the base model as path and this directory as adapter="
            )
        path, adapter = Path(base), path
    config = read_config(path)
    processor_path = path
    if is_llava_original(config):
        from .llava_original import load_llava_original

        if chosen is not None and chosen.name != "llava":
            raise ValueError(f"{str(path)!r} is an original LLaVA checkpoint, not {backbone!r}")
        model, processor = load_llava_original(path, vision_tower, dtype)
        chosen, layout = get_backbone("llava"), "llava_original"
    else:
        model, processor, chosen = _load_hf(path, chosen, dtype, trust_remote_code, max_tiles)
        layout = "hf"
    if adapter is not None:
        adapter = Path(adapter).expanduser()
        model = attach_adapter(model, adapter, merge_adapter)
        layout = "lora"
        if (adapter / "tokenizer_config.json").is_file() and any(
            (adapter / n).is_file() for n in PROCESSOR_FILES
        ):
            processor_path = adapter  # training saved its own processor (e.g. added tokens)
            processor = load_processor(processor_path, chosen.name, max_tiles)
    if model_prompt(path) == "question_first":  # text4seg.json: the layout it was trained with
        chosen = chosen.question_first()
    model = model.to(device=device, dtype=dtype).eval()
    return LoadedModel(model, processor, chosen, path, layout, adapter)
