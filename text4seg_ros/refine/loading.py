"""Build a :class:`SamRefiner` from a path: a Hugging Face SAM directory or a ``.pth`` file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch

from ..checks import as_dtype
from .backends import HfSamBackend, SegmentAnythingBackend, build_processor
from .convert import sam_checkpoint_to_hf, sam_kind
from .refiner import RefinerConfig, SamRefiner

BackendName = Literal["auto", "transformers", "segment_anything"]
BACKENDS: tuple[str, ...] = ("auto", "transformers", "segment_anything")
CHECKPOINT_SUFFIXES: tuple[str, ...] = (".pth", ".pt", ".bin")
_EXPECTED = (
    "a Hugging Face SamModel directory (config.json with model_type 'sam' and "
    "model.safetensors) or an official segment_anything checkpoint file (sam_vit_*.pth)"
)


def load_refiner(
    path: str | Path,
    device: str = "cpu",
    config: RefinerConfig | None = None,
    backend: BackendName = "auto",
    dtype: str | torch.dtype = "float32",
) -> SamRefiner:
    """Load SAM from ``path`` and wrap it in a :class:`SamRefiner`.

    * A directory: transformers ``SamModel`` (+ its ``SamProcessor`` if saved there).
    * A ``.pth``/``.pt``/``.bin`` file: read with ``torch.load(weights_only=True)``; with
      ``backend="auto"`` or ``"transformers"`` converted to a ``SamModel``
      (:func:`~.convert.sam_checkpoint_to_hf`); with ``"segment_anything"`` loaded into the
      official package's model (ImportError when that package is absent).

    ``dtype`` (a name in :data:`~text4seg_ros.checks.DTYPE_NAMES` or a torch dtype) is the
    transformers model's weight dtype (half precision is for GPUs; the segment_anything backend
    stays float32).
    Raises FileNotFoundError for a missing path and ValueError for a path that is neither.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    torch_dtype = as_dtype(dtype)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"SAM refiner path {path} does not exist; expected {_EXPECTED}")
    if path.is_dir():
        if backend == "segment_anything":
            raise ValueError(
                f"{path} is a directory; the segment_anything backend takes a .pth checkpoint"
            )
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise ValueError(f"{path} has no config.json; expected {_EXPECTED}")
        try:
            model_type = json.loads(cfg_file.read_text()).get("model_type")
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{cfg_file} is not readable JSON: {exc}") from exc
        if model_type != "sam":
            raise ValueError(f"{cfg_file} has model_type {model_type!r}; expected 'sam'")
        hf = HfSamBackend.from_pretrained(path, device)
        hf.model.to(torch_dtype)
        return SamRefiner(hf, config)
    if path.suffix not in CHECKPOINT_SUFFIXES:
        raise ValueError(f"{path} has suffix {path.suffix!r}; expected {_EXPECTED}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, non-tensor payloads
        raise ValueError(f"cannot read {path} as a weights-only torch checkpoint: {exc}") from exc
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # training checkpoints that wrap the weights
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, expected a state dict")
    if backend == "segment_anything":
        sam = SegmentAnythingBackend.from_state_dict(state, sam_kind(state), device)
        return SamRefiner(sam, config)
    model = sam_checkpoint_to_hf(state).to(torch_dtype)
    processor = build_processor(int(model.config.vision_config.image_size))
    return SamRefiner(HfSamBackend(model, processor, device), config)
