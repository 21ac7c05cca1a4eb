"""The ``onnxruntime`` engine: the exported graphs (:mod:`.export`) on ONNX Runtime.

Providers: ``CUDAExecutionProvider`` when the model is on a CUDA device and the installed
onnxruntime has it, else ``CPUExecutionProvider``. The KV cache is never copied between steps:

* on CUDA, inputs and outputs go through I/O binding to torch tensors on the device (their
  buffer pointers): each step's grown cache (``present_*``) is written into tensors allocated
  here and becomes the next step's ``past_*``;
* on the CPU, ``InferenceSession.run`` with numpy views of the torch tensors: ONNX Runtime reads
  contiguous numpy inputs in place and returns its outputs as numpy arrays over its own buffers,
  which become torch tensors without a copy (``torch.from_numpy``). This is the same zero-copy
  hand-over with about a third of the Python work per call of binding 4 + 4 x layers names by
  pointer (measured: I/O binding cost about 0.1 ms more per call than ``run`` on the demo
  model's decoder, next to about 0.7 ms for the graph itself).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import torch

from .base import Backbone, EngineUnavailable, ListCache
from .export import OnnxBundle
from .graph import GraphEngine

LOG = logging.getLogger(__name__)
_NP = {torch.float32: np.float32, torch.float16: np.float16, torch.int64: np.int64}


def _import_ort() -> Any:
    try:
        import onnxruntime
    except ImportError as err:  # pragma: no cover - a dependency of the package
        raise EngineUnavailable(
            "engine 'onnxruntime' needs the onnxruntime package (pip install onnxruntime)"
        ) from err
    return onnxruntime


class OnnxRuntimeEngine(GraphEngine):
    """Decoder and vision graphs on ONNX Runtime (see the module doc).

    ``folder``: where the graphs are (exported there on first use or when stale).
    ``threads``: intra-op threads (default: torch's).
    """

    name = "onnxruntime"

    def __init__(
        self, model: torch.nn.Module, backbone: Backbone, folder: Any, threads: int | None = None
    ) -> None:
        super().__init__(model, backbone)
        if self.dtype not in (torch.float32, torch.float16):
            raise EngineUnavailable(
                f"engine 'onnxruntime' runs float32 or float16 models, got {self.dtype} "
                "(load with --dtype float32)"
            )
        self.ort = _import_ort()
        self.bundle = OnnxBundle(model, backbone, folder)
        self.threads = threads or torch.get_num_threads()
        cuda = self.device.type == "cuda"
        available = self.ort.get_available_providers()
        if cuda and "CUDAExecutionProvider" not in available:
            raise EngineUnavailable(
                "engine 'onnxruntime' on CUDA needs onnxruntime-gpu (CUDAExecutionProvider); "
                f"this onnxruntime has {', '.join(available)}"
            )
        if cuda:
            index = self.device.index or 0
            self.providers: list[Any] = [("CUDAExecutionProvider", {"device_id": index})]
            self.ort_device = ("cuda", index)
        else:
            self.providers = ["CPUExecutionProvider"]
            self.ort_device = ("cpu", 0)
        self.decoder = self._session(self.bundle.decoder())
        self.out_names = [o.name for o in self.decoder.get_outputs()]
        self.in_names = [i.name for i in self.decoder.get_inputs()]
        self.past_names = [(f"past_key_{i}", f"past_value_{i}") for i in range(self.layers)]
        self.host_outputs = ["logits"] + [
            name for i in range(self.layers) for name in (f"present_key_{i}", f"present_value_{i}")
        ]
        self.vocab = int(self.model.get_output_embeddings().weight.shape[0])
        self._vision: dict[str, Any] = {}

    def _session(self, path: os.PathLike) -> Any:
        options = self.ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        return self.ort.InferenceSession(str(path), options, providers=self.providers)

    # -- binding -----------------------------------------------------------------------------
    def _bind(self, io: Any, name: str, tensor: torch.Tensor, output: bool = False) -> None:
        """Bind a contiguous torch tensor by its buffer pointer (empty ones by an OrtValue)."""
        if tensor.numel() == 0:  # no buffer to point at: a zero-size value
            value = self.ort.OrtValue.ortvalue_from_shape_and_type(
                list(tensor.shape), _NP[tensor.dtype], *self.ort_device
            )
            (io.bind_ortvalue_output if output else io.bind_ortvalue_input)(name, value)
            return
        bind = io.bind_output if output else io.bind_input
        bind(
            name,
            self.ort_device[0],
            self.ort_device[1],
            _NP[tensor.dtype],
            list(tensor.shape),
            tensor.data_ptr(),
        )

    def run_vision(
        self, pixel_values: torch.Tensor, extra: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """The vision graph of this frame size (exported on first use)."""
        path = self.bundle.vision(pixel_values, extra)
        session = self._vision.get(path.name)
        if session is None:
            session = self._vision[path.name] = self._session(path)
        out = session.run(None, {"pixel_values": pixel_values.cpu().numpy()})[0]
        return torch.from_numpy(out).to(self.device)

    def run_decoder(
        self,
        embeds: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor,
        select: torch.Tensor,
        cache: ListCache,
    ) -> tuple[torch.Tensor, ListCache]:
        """One decoder call (see the module doc): numpy views on the CPU, I/O binding on CUDA."""
        if self.ort_device[0] == "cpu":
            return self._run_host(embeds, positions, mask, select, cache)
        b, t = embeds.shape[:2]
        total = cache.length + t
        io = self.decoder.io_binding()
        self._bind(io, "inputs_embeds", embeds)
        self._bind(io, "position_ids", positions)
        self._bind(io, "attention_mask", mask)
        self._bind(io, "select", select)
        logits = torch.empty(select.shape[0], self.vocab, dtype=torch.float32, device=self.device)
        self._bind(io, "logits", logits, output=True)
        keys, values = [], []
        shape = (b, self.kv_heads, total, self.head_dim)
        for i in range(self.layers):
            self._bind(io, f"past_key_{i}", cache.keys[i])
            self._bind(io, f"past_value_{i}", cache.values[i])
            k = torch.empty(shape, dtype=self.dtype, device=self.device)
            v = torch.empty(shape, dtype=self.dtype, device=self.device)
            self._bind(io, f"present_key_{i}", k, output=True)
            self._bind(io, f"present_value_{i}", v, output=True)
            keys.append(k)
            values.append(v)
        self.decoder.run_with_iobinding(io)
        return logits, ListCache(keys, values)

    def _run_host(
        self,
        embeds: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor,
        select: torch.Tensor,
        cache: ListCache,
    ) -> tuple[torch.Tensor, ListCache]:
        """The CPU call: ``run`` on numpy views in, ONNX Runtime's output buffers out."""
        feeds = {
            "inputs_embeds": embeds.numpy(),
            "position_ids": positions.numpy(),
            "attention_mask": mask.numpy(),
            "select": select.numpy(),
        }
        for (key, value), k, v in zip(self.past_names, cache.keys, cache.values):
            feeds[key] = k.numpy()
            feeds[value] = v.numpy()
        logits, *present = self.decoder.run(self.host_outputs, feeds)
        grown = [torch.from_numpy(a) for a in present]  # present_key_0, present_value_0, ...
        return torch.from_numpy(logits), ListCache(grown[0::2], grown[1::2])


__all__ = ["OnnxRuntimeEngine"]
