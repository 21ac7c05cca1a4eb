"""Load the Segmenter the node's parameters describe (the node's only tie to the model code).

``Segmenter.from_pretrained`` receives the path and every model parameter it accepts. A
parameter set to a non-default value that this Segmenter does not accept is an error, never
silently ignored.
"""

from __future__ import annotations

import gc
import inspect
import sys
from pathlib import Path

from ..model.types import SegmenterLike
from .params import DEFAULTS, NodeConfig

# node parameter -> from_pretrained keyword
MODEL_KWARGS = {
    "backbone": "backbone",
    "device": "device",
    "dtype": "dtype",
    "grid": "grid",
    "descriptor": "descriptor",
    "engine": "engine",
    "refiner": "refiner",
    "refiner_path": "refiner_path",
}


def load_segmenter(config: NodeConfig) -> SegmenterLike:
    """``Segmenter.from_pretrained(config.model_path, ...)``; ValueError for unusable settings."""
    if not config.model_path:
        raise ValueError("parameter model_path is empty: set it to a model directory")
    path = Path(config.model_path).expanduser()
    if not path.is_dir():
        raise ValueError(f"model_path {str(path)!r} is not a directory")
    from ..model.segmenter import Segmenter  # heavy (torch, transformers): imported on configure

    accepted = inspect.signature(Segmenter.from_pretrained).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    kwargs = {}
    for name, keyword in MODEL_KWARGS.items():
        value = getattr(config, name)
        if name == "backbone" and not value:
            continue  # empty: the Segmenter reads it from the model config
        if keyword in accepted or takes_any:
            kwargs[keyword] = value
        elif value != DEFAULTS[name]:
            raise ValueError(
                f"parameter {name}={value!r} is not supported by Segmenter.from_pretrained "
                f"(it accepts: {', '.join(accepted)}); leave it at {DEFAULTS[name]!r}"
            )
    return Segmenter.from_pretrained(str(path), **kwargs)


def freeze_heap() -> None:
    """Take the objects alive now (the loaded model, the libraries) out of the cyclic GC.

    A full collection walks every tracked object: with a model's millions of long-lived
    objects that stalls the camera callbacks and the worker for up to a second (seen in the
    node tests as one 1.2 s answer among 0.25 s ones). ``gc.freeze`` is what long-running
    servers do after start-up; :func:`free_memory` undoes it so a dropped model is collected.
    """
    gc.collect()
    gc.freeze()


def free_memory() -> None:
    """Collect garbage and return cached accelerator memory after a model was dropped."""
    gc.unfreeze()
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
