"""ONNX export of a Text4Seg model, once per model, cached with a manifest.

Two kinds of graph, exported with ``torch.onnx.export(..., dynamo=True)`` from the model's own
modules (so every registered backbone exports through the same code):

* ``decoder.onnx``: the language model and its output head.
  Inputs: ``inputs_embeds (B, T, hidden)``, ``position_ids (B, T)`` (``(3, B, T)`` for mrope
  backbones: Qwen2-VL, Qwen2.5-VL), ``attention_mask (B, L)`` int64 over the cache's old slots
  plus the block (0: masked slot), ``select (N,)`` int64 flat indices ``row * T + column``, then
  ``past_key_i`` / ``past_value_i`` ``(B, kv_heads, P, head_dim)`` per layer (P = L - T may be 0).
  Outputs: ``logits (N, vocab)`` float32 at the selected positions only, then ``present_key_i`` /
  ``present_value_i`` ``(B, kv_heads, L, head_dim)``. Batch, block, past length and N are dynamic.
  The attention mask is built inside the graph as an additive 4-D mask: causal over cache slots
  (a block's tokens are appended after every old slot) and the slots' 0/1 mask.
* ``vision-<key>.onnx``: pixel values to the projected image features ``(n_image_tokens,
  hidden)`` that replace the image placeholder tokens' embeddings. Exported per input shape
  (``key`` names it): Qwen2-VL's vision tower computes its position embeddings from the run-time
  patch grid, so the graph is made for one frame size (a camera's frames all have one); other
  inputs the processor gives (the patch grid) are baked in as constants.

Token embeddings and Qwen's 3-D rope index stay with the loaded model (a table look-up and a few
integer operations per frame).

Cache (:func:`prepare`): a folder with ``manifest.json`` (model fingerprint, opset, exporter
versions, backbone, files); a folder whose manifest differs from the current model or exporter is
exported again. Default folder: ``<model dir>/onnx`` (written by ``text4seg-export``) when it
holds a matching manifest, else ``$TEXT4SEG_CACHE/onnx/<fingerprint>`` (default
``~/.cache/text4seg_ros``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import warnings
from pathlib import Path
from typing import Any

import torch
from transformers import DynamicCache

from .base import Backbone

LOG = logging.getLogger(__name__)
OPSET = 18
FORMAT = 1  # bump when the graphs' inputs or outputs change
# Upper bounds handed to torch.export for the dynamic dimensions (not limits of the runtime
# shapes beyond what the model's positions allow).
_MAX_BATCH, _MAX_BLOCK, _MAX_PAST = 64, 8192, 131072
_LOCK = threading.Lock()


def exporter_versions() -> dict[str, str]:
    """Versions that shape the exported graphs (a change makes cached graphs stale)."""
    import onnx
    import onnxscript
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnx": onnx.__version__,
        "onnxscript": onnxscript.__version__,
        "format": str(FORMAT),
    }


def fingerprint(model: torch.nn.Module) -> str:
    """A hash of the model's config and weights (sha256, hex, 16 chars).

    Every tensor contributes its name, shape, dtype and a strided sample of at most 4096 of its
    values plus its sum, so any training step or merge changes it, without hashing every byte of
    a 7B model at start-up.
    """
    h = hashlib.sha256()
    h.update(model.config.to_json_string(use_diff=False).encode())
    with torch.no_grad():
        for name, t in model.state_dict().items():
            flat = t.detach().reshape(-1)
            stride = max(1, flat.numel() // 4096)
            sample = flat[::stride].to("cpu", torch.float64)
            h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
            h.update(sample.numpy().tobytes())
            h.update(repr(float(flat.double().sum())).encode())
    return h.hexdigest()[:16]


def text_config(model: torch.nn.Module) -> Any:
    """The language model's config."""
    return model.config.get_text_config()


def kv_shape(model: torch.nn.Module) -> tuple[int, int, int]:
    """``(layers, kv_heads, head_dim)`` of the language model's cache."""
    cfg = text_config(model)
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return cfg.num_hidden_layers, getattr(cfg, "num_key_value_heads", heads), head_dim


def check_exportable(model: torch.nn.Module, backbone: Backbone) -> None:
    """Refuse a model the graphs cannot express, with the reason (ValueError)."""
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "language_model"):
        raise ValueError(
            f"{type(model).__name__}: no model.language_model; only the registry's "
            "transformers layouts export (LLaVA, Qwen2-VL, Qwen2.5-VL, InternVL)"
        )
    cfg = text_config(model)
    windows = getattr(cfg, "layer_types", None) or []
    if getattr(cfg, "use_sliding_window", False) or "sliding_attention" in windows:
        raise ValueError(
            f"{backbone.name}: sliding-window attention layers are not expressed by the "
            "exported decoder (it attends to every cache slot); use engine 'torch'"
        )


class DecoderGraph(torch.nn.Module):
    """The exported decoder (see the module doc for inputs and outputs)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.language_model = model.model.language_model
        self.head = model.get_output_embeddings()
        self.layers = kv_shape(model)[0]

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        select: torch.Tensor,
        past: tuple[torch.Tensor, ...],
    ) -> tuple[torch.Tensor, ...]:
        block = inputs_embeds.shape[1]
        total = attention_mask.shape[1]
        cache = DynamicCache(
            ddp_cache_data=[(past[2 * i], past[2 * i + 1]) for i in range(self.layers)]
        )
        device = inputs_embeds.device
        query = torch.arange(block, device=device) + (total - block)
        slots = torch.arange(total, device=device)
        allowed = (slots[None, :] <= query[:, None])[None, None] & attention_mask[
            :, None, None, :
        ].bool()
        low = torch.finfo(inputs_embeds.dtype).min
        mask = torch.zeros(allowed.shape, dtype=inputs_embeds.dtype, device=device)
        mask = mask.masked_fill(~allowed, low)
        out = self.language_model(
            inputs_embeds=inputs_embeds,
            position_ids=position_ids,
            attention_mask=mask,
            past_key_values=cache,
            use_cache=True,
        )
        hidden = out.last_hidden_state
        picked = hidden.reshape(-1, hidden.shape[-1]).index_select(0, select)
        logits = self.head(picked).float()
        present: list[torch.Tensor] = []
        for layer in cache.layers:
            present += [layer.keys, layer.values]
        return (logits, *present)


class VisionGraph(torch.nn.Module):
    """Pixel values to projected image features ``(n_image_tokens, hidden)``; the processor's
    other vision inputs (Qwen's patch grid) are constants of one frame size.

    Qwen2-VL / Qwen2.5-VL vision towers derive rotary positions, attention segments and (2.5)
    attention windows from the patch grid with data-dependent shapes, which ``torch.export``
    cannot trace; for one frame size they are computed here once, eagerly, and handed to the
    tower as the precomputed values its ``transformers`` implementation accepts (segment
    bounds as a numpy array, so the tower splits attention by plain ints).
    """

    def __init__(self, model: torch.nn.Module, constants: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.inner = model.model
        self.constants = constants
        self.hidden = text_config(model).hidden_size
        self.grid_kwargs: dict[str, Any] | None = None
        grid = constants.get("image_grid_thw")
        visual = getattr(self.inner, "visual", None)
        if grid is not None and visual is not None:
            self.grid_kwargs = _qwen_vision_kwargs(visual, grid)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.grid_kwargs is not None:
            visual = self.inner.visual
            pixels = pixel_values.type(visual.dtype)
            grid = self.constants["image_grid_thw"]
            feats = visual(pixels, grid_thw=grid, **dict(self.grid_kwargs)).pooler_output
            return feats.reshape(-1, self.hidden)
        out = self.inner.get_image_features(pixel_values, **self.constants, return_dict=True)
        feats = out.pooler_output
        if isinstance(feats, (list, tuple)):
            feats = torch.cat(list(feats), 0)
        return feats.reshape(-1, self.hidden)


def _qwen_vision_kwargs(visual: torch.nn.Module, grid: torch.Tensor) -> dict[str, Any]:
    """The grid-derived inputs of a Qwen vision tower, computed eagerly for one grid."""
    from transformers import vision_utils as vu

    out: dict[str, Any] = {}
    merge = visual.spatial_merge_size
    out["position_ids"] = vu.get_vision_position_ids(grid, merge)
    cu, longest = vu.get_vision_attention_seqlens(grid, visual.config)
    out["cu_seqlens"] = cu.cpu().numpy()
    out["max_seqlen"] = int((cu[1:] - cu[:-1]).max()) if longest is None else longest
    if hasattr(visual, "window_size"):  # Qwen2.5-VL: windowed attention in most blocks
        index, cu_win = vu.get_vision_window_index(
            grid,
            spatial_merge_size=merge,
            window_size=visual.window_size,
            patch_size=visual.patch_size,
        )
        cu_win = torch.as_tensor(cu_win)
        out["window_index"] = index
        out["cu_window_seqlens"] = cu_win.cpu().numpy()
        out["max_window_seqlen"] = int((cu_win[1:] - cu_win[:-1]).max())
    return out


def vision_inputs(inputs: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Split a processor's output into the pixel values and the other vision inputs."""
    text_keys = ("input_ids", "attention_mask", "mm_token_type_ids")
    extra = {
        k: v
        for k, v in inputs.items()
        if isinstance(v, torch.Tensor) and k not in text_keys and k != "pixel_values"
    }
    return inputs["pixel_values"], extra


def vision_key(pixel_values: torch.Tensor, extra: dict[str, torch.Tensor]) -> str:
    """Name of the vision graph for one frame size (pixel shape and baked constants)."""
    parts = ["x".join(map(str, pixel_values.shape))]
    for k in sorted(extra):
        parts.append(k + "-" + "x".join(str(int(v)) for v in extra[k].reshape(-1).tolist()))
    return hashlib.sha256("_".join(parts).encode()).hexdigest()[:12]


def _io_names(layers: int) -> tuple[list[str], list[str]]:
    past = [f"past_{kind}_{i}" for i in range(layers) for kind in ("key", "value")]
    present = [f"present_{kind}_{i}" for i in range(layers) for kind in ("key", "value")]
    return ["inputs_embeds", "position_ids", "attention_mask", "select", *past], [
        "logits",
        *present,
    ]


def export_decoder(model: torch.nn.Module, backbone: Backbone, path: Path) -> None:
    """Write ``decoder.onnx`` (weights as external data beside it) for ``model``."""
    check_exportable(model, backbone)
    layers, kv_heads, head_dim = kv_shape(model)
    hidden = text_config(model).hidden_size
    param = next(model.parameters())
    dtype, device = param.dtype, param.device
    b, t, p = 2, 3, 5  # example sizes > 1, so no dimension is specialised to 0 or 1
    embeds = torch.randn(b, t, hidden, dtype=dtype, device=device)
    pos = torch.arange(p, p + t, device=device)[None].expand(b, -1)
    if backbone.mrope:
        pos = pos[None].expand(3, -1, -1)
    mask = torch.ones(b, p + t, dtype=torch.long, device=device)
    select = torch.tensor([0, 4], device=device)
    past = tuple(
        torch.randn(b, kv_heads, p, head_dim, dtype=dtype, device=device) for _ in range(2 * layers)
    )
    dim = torch.export.Dim
    batch, block = dim("batch", max=_MAX_BATCH), dim("block", max=_MAX_BLOCK)
    past_len, n = dim("past", max=_MAX_PAST), dim("n", max=_MAX_BATCH * _MAX_BLOCK)
    shapes = {
        "inputs_embeds": {0: batch, 1: block},
        "position_ids": {1: batch, 2: block} if backbone.mrope else {0: batch, 1: block},
        "attention_mask": {0: batch, 1: dim.AUTO},
        "select": {0: n},
        "past": tuple({0: batch, 2: past_len} for _ in range(2 * layers)),
    }
    names_in, names_out = _io_names(layers)
    graph = DecoderGraph(model).eval()
    _export(
        graph, (embeds, pos.contiguous(), mask, select, past), path, shapes, names_in, names_out
    )


def export_vision(
    model: torch.nn.Module, pixel_values: torch.Tensor, extra: dict[str, torch.Tensor], path: Path
) -> None:
    """Write a vision graph for frames whose processor output has this shape."""
    graph = VisionGraph(model, extra).eval()
    _export(graph, (pixel_values,), path, None, ["pixel_values"], ["image_features"])


def _export(
    module: torch.nn.Module,
    args: tuple,
    path: Path,
    shapes: Any,
    names_in: list[str],
    names_out: list[str],
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.onnx")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            args,
            dynamo=True,
            dynamic_shapes=shapes,
            input_names=names_in,
            output_names=names_out,
            opset_version=OPSET,
            verbose=False,
        )
        program.save(str(tmp), external_data=True)
    # external data is named after the file it was saved with: keep that name
    tmp.replace(path)


def default_folder(model: torch.nn.Module, model_path: str | Path | None = None) -> Path:
    """Where the graphs of ``model`` live: ``<model_path>/onnx`` when it holds a manifest of
    this model, else ``$TEXT4SEG_CACHE/onnx/<fingerprint>``."""
    if model_path:
        beside = Path(model_path) / "onnx"
        if (beside / "manifest.json").is_file():
            return beside
    root = Path(os.environ.get("TEXT4SEG_CACHE", Path.home() / ".cache" / "text4seg_ros"))
    return root / "onnx" / fingerprint(model)


class OnnxBundle:
    """The exported graphs of one model in one folder, exported on demand (see module doc)."""

    def __init__(self, model: torch.nn.Module, backbone: Backbone, folder: Path) -> None:
        self.model, self.backbone, self.folder = model, backbone, Path(folder)
        self.released = False  # the torch decoder weights were freed (GraphEngine)
        self.manifest_path = self.folder / "manifest.json"
        self.want = {
            "model_hash": fingerprint(model),
            "backbone": backbone.name,
            "opset": OPSET,
            "exporter": exporter_versions(),
        }

    def manifest(self) -> dict[str, Any]:
        """The folder's manifest ({} when missing or unreadable)."""
        try:
            return json.loads(self.manifest_path.read_text())
        except (OSError, ValueError):
            return {}

    def stale(self) -> bool:
        """True when the folder's graphs are not those of this model and exporter."""
        have = self.manifest()
        if any(have.get(k) != v for k, v in self.want.items()):
            return True
        return not (self.folder / have.get("decoder", "decoder.onnx")).is_file()

    def _write_manifest(self, vision: dict[str, str]) -> None:
        data = {**self.want, "decoder": "decoder.onnx", "vision": vision}
        tmp = self.manifest_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        tmp.replace(self.manifest_path)

    def decoder(self) -> Path:
        """``decoder.onnx``, exported first when missing or stale."""
        with _LOCK:
            if self.stale():
                if self.released:
                    raise RuntimeError(
                        f"the ONNX graphs in {self.folder} were removed or replaced while the "
                        "engine ran, and the torch decoder weights were released after "
                        "loading them: reload the model to export again"
                    )
                LOG.info("exporting the ONNX decoder of %s to %s", self.backbone.name, self.folder)
                self.folder.mkdir(parents=True, exist_ok=True)
                if self.manifest_path.exists():
                    self.manifest_path.unlink()  # stale graphs are never mixed with new ones
                export_decoder(self.model, self.backbone, self.folder / "decoder.onnx")
                self._write_manifest({})
            return self.folder / "decoder.onnx"

    def vision(self, pixel_values: torch.Tensor, extra: dict[str, torch.Tensor]) -> Path:
        """The vision graph for this frame size, exported first when missing."""
        self.decoder()  # a fresh manifest first
        key = vision_key(pixel_values, extra)
        with _LOCK:
            vision = dict(self.manifest().get("vision", {}))
            path = self.folder / f"vision-{key}.onnx"
            if vision.get(key) != path.name or not path.is_file():
                LOG.info("exporting the ONNX vision graph %s to %s", key, self.folder)
                export_vision(self.model, pixel_values, extra, path)
                vision[key] = path.name
                self._write_manifest(vision)
            return path


__all__ = [
    "OPSET",
    "DecoderGraph",
    "OnnxBundle",
    "VisionGraph",
    "check_exportable",
    "default_folder",
    "export_decoder",
    "export_vision",
    "exporter_versions",
    "fingerprint",
    "kv_shape",
    "vision_inputs",
    "vision_key",
]
