"""Load the Segmenter the node's parameters describe (the node's only tie to the model code).

``Segmenter.from_pretrained`` receives the path and the model parameters (``backbone``,
``device``, ``dtype``, ``grid``, ``descriptor``, ``engine``, ``refiner``, ``refiner_path``, and
``engine_options={"cuda_graphs": True}`` when ``cuda_graphs`` is set: torch engine only);
``cpu_threads`` > 0 sets torch's intra-op thread count first (ONNX Runtime takes it too); an
empty ``backbone`` is left out (the Segmenter reads it from the model config), ``grid`` 0 becomes
the model's own grid (``text4seg.json``, see :mod:`text4seg_ros.model.meta`) and an empty
``model_path`` the shipped demo model. Unusable values raise there (e.g. an engine that is not
available).
"""

from __future__ import annotations

import gc
import sys

from ..model.meta import resolve_model
from ..model.types import SegmenterLike
from .params import NodeConfig


def load_segmenter(config: NodeConfig) -> SegmenterLike:
    """``Segmenter.from_pretrained(config.model_path, ...)``; ValueError for unusable settings."""
    try:
        path = resolve_model(config.model_path)
    except FileNotFoundError as exc:
        raise ValueError(f"parameter model_path is empty and {exc}") from None
    if not path.is_dir():
        raise ValueError(f"model_path {str(path)!r} is not a directory")
    if config.cuda_graphs and config.engine != "torch":
        raise ValueError(f"cuda_graphs is a mode of the torch engine, not of {config.engine!r}")
    from ..model.segmenter import Segmenter  # heavy (torch, transformers): imported on configure

    if config.cpu_threads:
        import torch

        # Process-wide, before the engine is built: ONNX Runtime sessions take torch's count.
        torch.set_num_threads(config.cpu_threads)

    extra = {"engine_options": {"cuda_graphs": True}} if config.cuda_graphs else {}
    return Segmenter.from_pretrained(
        str(path),
        backbone=config.backbone or None,
        device=config.device,
        dtype=config.dtype,
        grid=config.grid or None,
        descriptor=config.descriptor,
        engine=config.engine,
        refiner=config.refiner,
        refiner_path=config.refiner_path,
        **extra,
    )


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
