"""The ``tensorrt`` engine: TensorRT plans built from the same ONNX graphs (:mod:`.export`).

Needs an NVIDIA GPU, the model on ``cuda`` and the ``tensorrt`` Python package (the optional
extra: ``pip install .[tensorrt]``); without the package, asking for the engine raises
:class:`~.base.EngineUnavailable` with one line naming it. Not installable on the development
machine (no GPU; the wheel fetches its libraries from NVIDIA's index), so its tests run behind
``@pytest.mark.gpu``.

Plans: the decoder with two optimisation profiles, ``decode`` (batch 1..8, block 1..64, the
selected positions 0..512, cache up to ``max_cache`` slots) and ``prefill`` (batch 1, a whole
prompt prefix up to ``max_prefix`` tokens, empty cache); the vision graph for each frame size.
``precision``: ``"fp32"`` (TF32 off: the same tokens as torch in float32), ``"fp16"`` or
``"bf16"`` (TensorRT's reduced-precision kernels; inputs and outputs keep the graph's dtype).
Plans are cached beside the ONNX files, keyed by GPU name and compute capability, TensorRT
version, the ONNX manifest's model hash and exporter versions, precision and profiles.
Buffers are torch CUDA tensors (``set_tensor_address``), run on torch's current stream, so the
cache stays on the device between steps.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch

from .base import Backbone, EngineUnavailable, ListCache
from .export import OnnxBundle
from .graph import GraphEngine

LOG = logging.getLogger(__name__)
PRECISIONS = ("fp32", "fp16", "bf16")
MAX_BATCH, MAX_BLOCK = 8, 64


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or :class:`EngineUnavailable` naming the package."""
    try:
        import tensorrt
    except ImportError:
        raise EngineUnavailable(
            "engine 'tensorrt' needs the tensorrt package on an NVIDIA GPU machine: "
            "pip install 'text4seg_ros[tensorrt]' (or pip install tensorrt)"
        ) from None
    return tensorrt


class _Plan:
    """One deserialised TensorRT engine and its execution context."""

    def __init__(self, trt: Any, data: bytes) -> None:
        self.trt = trt
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise EngineUnavailable("engine 'tensorrt': the cached plan does not deserialise")
        self.context = self.engine.create_execution_context()
        self.profile = -1

    def run(
        self, inputs: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor], profile: int
    ) -> None:
        stream = torch.cuda.current_stream()
        if profile != self.profile:
            self.context.set_optimization_profile_async(profile, stream.cuda_stream)
            self.profile = profile
        for name, t in inputs.items():
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        for name, t in outputs.items():
            self.context.set_tensor_address(name, t.data_ptr())
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")


class TensorRTEngine(GraphEngine):
    """Decoder and vision plans on TensorRT (see the module doc)."""

    name = "tensorrt"
    batched_prefill = False  # its prefill profile holds one row: per-goal prefixes go one by one

    def __init__(
        self,
        model: torch.nn.Module,
        backbone: Backbone,
        folder: Any,
        precision: str = "fp16",
        max_cache: int = 4096,
        max_prefix: int = 2048,
    ) -> None:
        self.trt = import_tensorrt()
        super().__init__(model, backbone)
        if self.device.type != "cuda":
            raise EngineUnavailable(
                "engine 'tensorrt' runs on an NVIDIA GPU: load the model with device 'cuda'"
            )
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.precision, self.max_cache, self.max_prefix = precision, max_cache, max_prefix
        self.bundle = OnnxBundle(model, backbone, folder)
        self.vocab = int(model.get_output_embeddings().weight.shape[0])
        self.decoder = self._plan(self.bundle.decoder(), dynamic=True)
        self._vision: dict[str, _Plan] = {}

    # -- building ----------------------------------------------------------------------------
    def _key(self, onnx: Path, dynamic: bool) -> str:
        props = torch.cuda.get_device_properties(self.device)
        manifest = self.bundle.manifest()
        parts = {
            "gpu": props.name,
            "sm": f"{props.major}.{props.minor}",
            "tensorrt": self.trt.__version__,
            "onnx": onnx.name,
            "model_hash": manifest.get("model_hash"),
            "exporter": manifest.get("exporter"),
            "precision": self.precision,
            "profiles": [MAX_BATCH, MAX_BLOCK, self.max_cache, self.max_prefix] if dynamic else [],
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]

    def _plan(self, onnx: Path, dynamic: bool) -> _Plan:
        path = onnx.parent / f"{onnx.stem}-{self._key(onnx, dynamic)}.plan"
        if not path.is_file():
            LOG.info("building TensorRT plan %s (minutes for a large model)", path.name)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(self._build(onnx, dynamic))
            tmp.replace(path)
        return _Plan(self.trt, path.read_bytes())

    def _build(self, onnx: Path, dynamic: bool) -> bytes:
        trt = self.trt
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise EngineUnavailable(f"engine 'tensorrt' cannot parse {onnx.name}: {errors}")
        config = builder.create_builder_config()
        if self.precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        elif self.precision == "bf16":
            config.set_flag(trt.BuilderFlag.BF16)
        else:
            config.clear_flag(trt.BuilderFlag.TF32)
        if dynamic:
            for profile_shapes in self._profiles():
                profile = builder.create_optimization_profile()
                for name, (lo, opt, hi) in profile_shapes.items():
                    profile.set_shape(name, lo, opt, hi)
                config.add_optimization_profile(profile)
        data = builder.build_serialized_network(network, config)
        if data is None:
            raise EngineUnavailable(f"engine 'tensorrt' failed to build {onnx.name}")
        return bytes(data)

    def _profiles(self) -> list[dict[str, tuple[tuple[int, ...], ...]]]:
        """Shapes (min, opt, max) of every decoder input: profile 0 decode, 1 prefill."""
        hidden = self.embed.weight.shape[1]
        kv, d = self.kv_heads, self.head_dim
        out = []
        for b, t, past, n in (
            ((1, 4, MAX_BATCH), (1, 16, MAX_BLOCK), (0, 512, self.max_cache), (0, 8, 512)),
            ((1, 1, 1), (1, 512, self.max_prefix), (0, 0, 0), (0, 0, 1)),
        ):
            total = tuple(t[i] + past[i] for i in range(3))
            shapes = {
                "inputs_embeds": tuple((b[i], t[i], hidden) for i in range(3)),
                "position_ids": tuple(
                    (3, b[i], t[i]) if self.backbone.mrope else (b[i], t[i]) for i in range(3)
                ),
                "attention_mask": tuple((b[i], total[i]) for i in range(3)),
                "select": tuple((n[i],) for i in range(3)),
            }
            for layer in range(self.layers):
                for kind in ("key", "value"):
                    shapes[f"past_{kind}_{layer}"] = tuple((b[i], kv, past[i], d) for i in range(3))
            out.append(shapes)
        return out

    # -- running -----------------------------------------------------------------------------
    def run_vision(
        self, pixel_values: torch.Tensor, extra: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """The vision plan of this frame size (built on first use)."""
        path = self.bundle.vision(pixel_values, extra)
        plan = self._vision.get(path.name)
        if plan is None:
            plan = self._vision[path.name] = self._plan(path, dynamic=False)
        pixels = pixel_values.contiguous()
        shape = tuple(plan.engine.get_tensor_shape("image_features"))
        out = torch.empty(shape, dtype=self.dtype, device=self.device)
        plan.run({"pixel_values": pixels}, {"image_features": out}, 0)
        return out

    def run_decoder(
        self,
        embeds: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor,
        select: torch.Tensor,
        cache: ListCache,
    ) -> tuple[torch.Tensor, ListCache]:
        """One decoder call; profile 1 (prefill) for an empty cache, else 0 (decode)."""
        b, t = embeds.shape[:2]
        profile = 1 if cache.length == 0 else 0  # only a frame's prefix starts from nothing
        if profile == 0 and (b > MAX_BATCH or t > MAX_BLOCK or cache.length + t > self.max_cache):
            raise RuntimeError(
                f"tensorrt decode profile holds batch <= {MAX_BATCH}, block <= {MAX_BLOCK}, "
                f"cache <= {self.max_cache}; got {b}, {t}, {cache.length + t}"
            )
        inputs = {
            "inputs_embeds": embeds,
            "position_ids": positions,
            "attention_mask": mask,
            "select": select,
        }
        logits = torch.empty(select.shape[0], self.vocab, dtype=torch.float32, device=self.device)
        outputs = {"logits": logits}
        shape = (b, self.kv_heads, cache.length + t, self.head_dim)
        keys, values = [], []
        for i in range(self.layers):
            inputs[f"past_key_{i}"] = cache.keys[i]
            inputs[f"past_value_{i}"] = cache.values[i]
            keys.append(torch.empty(shape, dtype=self.dtype, device=self.device))
            values.append(torch.empty(shape, dtype=self.dtype, device=self.device))
            outputs[f"present_key_{i}"] = keys[-1]
            outputs[f"present_value_{i}"] = values[-1]
        self.decoder.run(inputs, outputs, profile)
        return logits, ListCache(keys, values)


__all__ = ["PRECISIONS", "TensorRTEngine", "import_tensorrt"]
