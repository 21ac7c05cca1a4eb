"""Decode engines behind one interface (:mod:`.base`): ``torch``, ``onnxruntime``, ``tensorrt``.

* :func:`make_engine`: an engine by name for a loaded model;
* :mod:`.export`: the ONNX graphs the ``onnxruntime`` and ``tensorrt`` engines run, exported once
  per model and cached with a manifest (``text4seg-export`` prepares them ahead of a deployment);
* :class:`EngineUnavailable`: one line saying why an engine cannot run here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .base import Backbone, Engine, EngineUnavailable, ListCache, select_list_cache

ENGINES: tuple[str, ...] = ("torch", "onnxruntime", "tensorrt")


def make_engine(
    name: str,
    model: torch.nn.Module,
    backbone: Backbone,
    model_path: str | Path | None = None,
    folder: str | Path | None = None,
    **options: Any,
) -> Engine:
    """The engine ``name`` (one of :data:`ENGINES`) for ``model``.

    ``folder``: where the ONNX graphs (and TensorRT plans) are kept; default
    :func:`.export.default_folder` (``<model_path>/onnx`` when exported there, else the user
    cache). ``options`` go to the engine (``threads`` for onnxruntime; ``precision`` for
    tensorrt; for torch, ``cuda_graphs=True`` selects its CUDA-graph mode,
    :mod:`.cuda_graphs`, whose further options are ``max_rows``, ``batch_sizes``,
    ``block_sizes``, ``length_step``; without a CUDA device it logs so and decodes eagerly on
    the same static cache). Raises ValueError for an unknown name, :class:`EngineUnavailable`
    (one line) when the engine cannot run here or refuses the model.
    """
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; allowed: {', '.join(ENGINES)}")
    if name == "torch":
        if options.pop("cuda_graphs", False):
            from .cuda_graphs import make_engine as graphed

            return graphed(model, backbone, cuda_graphs=True, **options)
        from .torch_engine import TorchEngine

        return TorchEngine(model, backbone)
    from .export import check_exportable, default_folder

    try:
        check_exportable(model, backbone)
    except ValueError as err:
        raise EngineUnavailable(f"engine {name!r} refuses this model: {err}") from None
    where = Path(folder) if folder else default_folder(model, model_path)
    if name == "onnxruntime":
        from .onnxruntime_engine import OnnxRuntimeEngine

        return OnnxRuntimeEngine(model, backbone, where, **options)
    from .tensorrt_engine import TensorRTEngine

    return TensorRTEngine(model, backbone, where, **options)


__all__ = [
    "ENGINES",
    "Engine",
    "EngineUnavailable",
    "ListCache",
    "make_engine",
    "select_list_cache",
]
