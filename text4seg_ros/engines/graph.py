"""What the ONNX Runtime and TensorRT engines share: prefix assembly and the decoder step.

A graph engine runs two exported graphs (:mod:`.export`): the vision graph (pixels to image
features) and the decoder graph (embeddings, positions, slot mask, selected positions and the
cache in; selected logits and the grown cache out). Around them, per frame: the backbone's
processor, the token embeddings with the image features put at the image placeholder tokens,
and the positions (Qwen's 3-D rope index from the loaded model, as the torch engine computes
it); per step: embeddings of the block and its positions. Subclasses implement
:meth:`GraphEngine.run_vision` and :meth:`GraphEngine.run_decoder`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .base import (
    Backbone,
    ListCache,
    Prefix,
    image_token_id,
    right_pad,
    select_list_cache,
    stack_prefixes,
)
from .export import OnnxBundle, kv_shape, vision_inputs


class GraphEngine:
    """Base of the engines that run exported graphs (see the module doc)."""

    name = "graph"
    bundle: OnnxBundle  # the exported graphs; each subclass sets it in its __init__
    batched_prefill = True  # False: the runtime prefills one row at a time (TensorRT's profile)

    def __init__(self, model: torch.nn.Module, backbone: Backbone) -> None:
        self.model, self.backbone = model, backbone
        self.embed = model.get_input_embeddings()
        self.layers, self.kv_heads, self.head_dim = kv_shape(model)
        self.image_token = image_token_id(model)

    @property
    def device(self) -> torch.device:
        """Device of the decoder's inputs and of the cache buffers."""
        return self.embed.weight.device

    def embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings ``(B, T, hidden)`` of ``ids (B, T)`` (a numpy take on the CPU:
        single-threaded, where torch's pool costs milliseconds per small call under load)."""
        if self.device.type == "cpu":
            table = self.embed.weight.detach().numpy()
            return torch.from_numpy(table[ids.cpu().numpy()])
        return self.embed(ids.to(self.device))

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of embeddings and cache."""
        return self.embed.weight.dtype

    def release_torch_decoder(self) -> int:
        """Free the torch copy of the language model once its graph is loaded; returns bytes.

        The decoder graph holds its own weights, so the torch layers, final norm and an untied
        output head are dead weight after :meth:`__init__`: for a 7B model on a GPU, 14 GB
        held twice. They move to the ``meta`` device (no storage). Kept: the token embeddings
        (the engine embeds in torch) and the vision tower and projector (a new frame size
        exports its vision graph on first use). Only the owner of the model may call this
        (``Segmenter.from_pretrained`` does): the model cannot run in torch afterwards, and
        the bundle refuses to export its decoder again (:meth:`.export.OnnxBundle.decoder`).
        """
        language_model = self.model.model.language_model
        parts = [language_model.layers, language_model.norm]
        head = self.model.get_output_embeddings()
        if head is not None and head.weight is not self.embed.weight:  # untied output head
            parts.append(head)
        freed = sum(
            p.numel() * p.element_size()
            for part in parts
            for p in part.parameters()
            if p.device.type != "meta"
        )
        for part in parts:
            part.to("meta")
        self.bundle.released = True
        return freed

    # -- to implement ------------------------------------------------------------------------
    def run_vision(
        self, pixel_values: torch.Tensor, extra: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """Image features ``(n_image_tokens, hidden)`` of one frame's processed pixels."""
        raise NotImplementedError

    def run_decoder(
        self,
        embeds: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor,
        select: torch.Tensor,
        cache: ListCache,
    ) -> tuple[torch.Tensor, ListCache]:
        """One decoder call: ``(logits (N, V) float32, cache grown by the block)``."""
        raise NotImplementedError

    # -- the engine interface ----------------------------------------------------------------
    @torch.no_grad()
    def encode_prefix(
        self, processor: Any, image: np.ndarray, system: str | None, question: str | None = None
    ) -> Prefix:
        """Vision graph, embeddings with the image features, decoder graph over the prefix."""
        inputs = self._inputs(processor, image, system, question)
        ids = inputs["input_ids"]
        embeds = self._embed_prefix(ids, self._features(inputs))
        rope_delta = 0
        if self.backbone.mrope:
            positions, deltas = self.model.model.get_rope_index(
                ids,
                mm_token_type_ids=inputs["mm_token_type_ids"],
                image_grid_thw=inputs["image_grid_thw"],
                attention_mask=inputs["attention_mask"],
            )
            rope_delta = int(deltas.reshape(-1)[0])
        else:
            positions = torch.arange(ids.shape[1], device=self.device)[None]
        cache = self._prefill(embeds, positions, inputs["attention_mask"])
        return Prefix(
            keys=cache.keys,
            values=cache.values,
            input_ids=ids,
            image_size=(int(image.shape[0]), int(image.shape[1])),
            rope_delta=rope_delta,
            n_image_tokens=int((ids == self.image_token).sum()),
        )

    @torch.no_grad()
    def encode_prefixes(
        self, processor: Any, image: np.ndarray, system: str | None, questions: Sequence[str]
    ) -> Prefix:
        """Question first: every goal's prefix of one frame in one decoder call, stacked
        (:func:`.base.stack_prefixes`' layout); the vision graph runs once. Qwen's 3-D rope
        index and a single question take :meth:`encode_prefix` per question."""
        if self.backbone.mrope or len(questions) < 2 or not self.batched_prefill:
            return stack_prefixes(
                [self.encode_prefix(processor, image, system, q) for q in questions]
            )
        inputs = [self._inputs(processor, image, system, q) for q in questions]
        feats = self._features(inputs[0])  # the same frame for every question
        rows = [self._embed_prefix(i["input_ids"], feats)[0] for i in inputs]
        embeds, mask = right_pad(rows, 0)
        ids, _ = right_pad([i["input_ids"][0] for i in inputs], 0)
        width = ids.shape[1]
        positions = torch.arange(width, device=self.device)[None].expand(len(rows), -1)
        cache = self._prefill(embeds, positions, mask.to(self.device))
        return Prefix(
            keys=cache.keys,
            values=cache.values,
            input_ids=ids,
            image_size=(int(image.shape[0]), int(image.shape[1])),
            n_image_tokens=int((inputs[0]["input_ids"] == self.image_token).sum()),
            lengths=tuple(int(r.shape[0]) for r in rows),
        )

    def _inputs(
        self, processor: Any, image: np.ndarray, system: str | None, question: str | None
    ) -> dict[str, torch.Tensor]:
        """The processor's tensors for one prefix, on the engine's device and dtype."""
        inputs = self.backbone.preprocess(processor, image, system, question)
        return {
            k: (v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device))
            for k, v in inputs.items()
            if isinstance(v, torch.Tensor)
        }

    def _features(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Image features ``(n_image_tokens, hidden)`` of the frame (the vision graph)."""
        pixels, extra = vision_inputs(inputs)
        return self.run_vision(pixels, extra)

    def _embed_prefix(self, ids: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """Embeddings ``(1, P, hidden)`` of ``ids (1, P)`` with the image features put at the
        image placeholder tokens."""
        embeds = self.embed(ids)
        where = ids == self.image_token
        if int(where.sum()) != feats.shape[0]:
            raise RuntimeError(
                f"{int(where.sum())} image tokens in the prompt but {feats.shape[0]} features"
            )
        embeds[where] = feats.to(embeds.dtype)
        return embeds

    def _prefill(
        self, embeds: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor
    ) -> ListCache:
        """The decoder graph over ``embeds (B, P, hidden)`` from an empty cache."""
        b = embeds.shape[0]
        empty = torch.zeros(
            b, self.kv_heads, 0, self.head_dim, dtype=self.dtype, device=self.device
        )
        cache = ListCache([empty] * self.layers, [empty] * self.layers)
        select = torch.zeros(0, dtype=torch.long, device=self.device)
        embeds, positions = embeds.contiguous(), positions.contiguous()
        _, cache = self.run_decoder(embeds, positions, mask.contiguous(), select, cache)
        return cache

    def cache(self, prefix: Prefix, batch: int) -> ListCache:
        """Dense ``batch``-row copies of the prefix cache."""
        return ListCache.from_prefix(prefix, batch)

    def make_step(self, prefix: Prefix) -> GraphStep:
        """The decoder step for continuations of ``prefix``."""
        return GraphStep(self, prefix.rope_delta)


class GraphStep:
    """:class:`~text4seg_ros.decoding.step.DecodeStep` over a graph engine (``selects``)."""

    selects = True

    def __init__(self, engine: GraphEngine, rope_delta: int) -> None:
        self.engine, self.rope_delta = engine, rope_delta
        self.calls = 0

    @property
    def device(self) -> torch.device:
        """Where the decoder builds its inputs."""
        return self.engine.device

    @torch.no_grad()
    def __call__(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        cache: ListCache,
        select: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ListCache]:
        self.calls += 1
        engine = self.engine
        b, t = input_ids.shape
        device = engine.device
        embeds = engine.embed_ids(input_ids)
        positions = position_ids.to(device)
        if engine.backbone.mrope:  # text after the image: one position on the t, h, w axes
            positions = (positions + self.rope_delta)[None].expand(3, -1, -1)
        full = select is None
        if full:
            select = torch.arange(b * t, device=device)
        logits, cache = engine.run_decoder(
            embeds.contiguous(),
            positions.contiguous(),
            attention_mask.to(device).contiguous(),
            select.to(device).contiguous(),
            cache,
        )
        return (logits.reshape(b, t, -1) if full else logits), cache

    def select_cache(
        self, cache: ListCache, rows: torch.Tensor | None, columns: torch.Tensor | None
    ) -> ListCache:
        """Keep batch rows and cache slots (see :func:`.base.select_list_cache`)."""
        return select_list_cache(cache, rows, columns)


__all__ = ["GraphEngine", "GraphStep"]
