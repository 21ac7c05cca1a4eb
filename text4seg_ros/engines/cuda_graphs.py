"""CUDA-graph mode of the torch engine: a static KV cache and one captured graph per bucket.

Decoding small batches on a GPU is bound by kernel launches, not arithmetic: a 7B decoder step
launches hundreds of kernels whose Python and launch overhead exceeds their run time. Here the
language model runs on a :class:`~.static_cache.StaticKV` (buffers allocated once), and each call
shape is rounded up to a bucket (:mod:`.buckets`: rows, block tokens, attended length); the first
call of a bucket captures the language model's forward into a ``torch.cuda.CUDAGraph``, later
calls copy their inputs into the graph's static buffers and replay it. The output head runs
eagerly at the selected positions only (the decoder asks for few).

Everything but the capture is plain torch and runs on any device: with ``capture=False`` (and
always without CUDA) the same static-cache code runs eagerly, which the CPU tests check token
for token against the engine's dynamic-cache step. A backbone whose forward cannot be captured
(an operation that syncs with the host, a data-dependent shape) is logged once and decoded
eagerly on the same static cache; :func:`make_engine` logs and returns the eager engine where
no CUDA device is present.

The mask the model gets is additive 4-D ``(rows, 1, block, length)``: slot ``s`` is visible to
block column ``j`` when the decoder's 0/1 mask allows it and ``s <= used + j`` (causal within
the block). Padding rows see every slot of their own row (stale but finite values), so no row is
fully masked and nothing turns NaN.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .base import Prefix
from .buckets import (
    BATCH_BUCKETS,
    BLOCK_BUCKETS,
    LENGTH_STEP,
    Bucket,
    check_sizes,
    choose_bucket,
)
from .export import kv_shape
from .static_cache import SlotView, StaticKV

LOG = logging.getLogger(__name__)
# Slots beyond the prefix a new static cache gets (decoded tokens, drafts and dead slots until
# the decoder packs them); it grows, dropping its graphs, when a call needs more.
EXTRA_SLOTS = 1024


class _Runner:
    """Static input/output buffers of one bucket and, once captured, its graph."""

    def __init__(self, bucket: Bucket, device: torch.device, capturable: bool = True) -> None:
        b, t, n = bucket.rows, bucket.block, bucket.length
        self.bucket, self.capturable = bucket, capturable
        self.ids = torch.zeros(b, t, dtype=torch.long, device=device)
        self.pos = torch.zeros(b, t, dtype=torch.long, device=device)
        self.mask = torch.ones(b, n, dtype=torch.long, device=device)
        self.offset = torch.zeros((), dtype=torch.long, device=device)
        self.cols = torch.arange(t, device=device)
        self.slots = torch.arange(n, device=device)
        self.hidden: torch.Tensor | None = None
        self.graph: Any = None


class StaticStep:
    """:class:`~text4seg_ros.decoding.step.DecodeStep` on a :class:`StaticKV` (``selects``).

    ``capture``: capture and replay CUDA graphs (needs the model on a CUDA device); False runs
    the same code eagerly. ``batch_sizes`` / ``block_sizes`` / ``length_step``: the buckets.
    """

    selects = True

    def __init__(
        self,
        model: torch.nn.Module,
        mrope: bool,
        capture: bool,
        batch_sizes: Sequence[int] = BATCH_BUCKETS,
        block_sizes: Sequence[int] = BLOCK_BUCKETS,
        length_step: int = LENGTH_STEP,
        name: str = "",
    ) -> None:
        self.model, self.mrope, self.name = model, mrope, name or type(model).__name__
        self.language_model = model.model.language_model
        self.embed = model.get_input_embeddings()
        self.head = model.get_output_embeddings()
        self.batch_sizes = check_sizes(batch_sizes, "batch_sizes")
        self.block_sizes = check_sizes(block_sizes, "block_sizes")
        self.length_step = int(length_step)
        self.capture = bool(capture) and self.device.type == "cuda"
        self.delta = torch.zeros((), dtype=torch.long, device=self.device)
        self.runners: dict[Bucket, _Runner] = {}
        self.kv_id: int | None = None
        self.pool: Any = None
        self.calls = 0
        self.replays = 0
        self.captures = 0

    @property
    def device(self) -> torch.device:
        """Where the decoder builds its inputs (the embeddings' device)."""
        return self.embed.weight.device

    def set_prefix(self, rope_delta: int) -> None:
        """Continuations of a new prefix: its rope delta (Qwen mrope) becomes graph data."""
        self.delta.fill_(int(rope_delta))

    # -- the captured part ---------------------------------------------------------------------
    def _body(self, r: _Runner, kv: StaticKV) -> torch.Tensor:
        """The language model over the bucket's buffers; returns hidden ``(b, t, hidden)``."""
        b, n = r.bucket.rows, r.bucket.length
        dtype = self.embed.weight.dtype
        embeds = self.embed(r.ids)
        positions = r.pos
        if self.mrope:  # text after the image: one position on the t, h and w axes
            positions = (positions + self.delta)[None].expand(3, -1, -1)
        slots = r.offset + r.cols  # (t,) where the block is written
        visible = (r.mask[:, None, :] != 0) & (r.slots[None, None, :] <= slots[None, :, None])
        mask = torch.zeros(visible.shape, dtype=dtype, device=embeds.device)
        mask.masked_fill_(~visible, torch.finfo(dtype).min)
        out = self.language_model(
            inputs_embeds=embeds,
            position_ids=positions,
            attention_mask=mask[:, None],  # (b, 1, t, n) additive
            past_key_values=SlotView(kv, b, n, slots),
            use_cache=True,
        )
        return out.last_hidden_state

    def _capture(self, r: _Runner, kv: StaticKV) -> None:
        """Warm up on a side stream, then capture the body into ``r.graph``."""
        stream = torch.cuda.Stream(device=self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            self._body(r, kv)  # warm-up: lazy initialisations happen outside the capture
        torch.cuda.current_stream(self.device).wait_stream(stream)
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        # thread_local: CUDA work of other threads (a node's callbacks) does not break it.
        with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
            r.hidden = self._body(r, kv)
        r.graph = graph
        self.captures += 1

    def _run(self, r: _Runner, kv: StaticKV) -> torch.Tensor:
        if self.capture and r.capturable and r.graph is None:
            try:
                self._capture(r, kv)
            except Exception as err:  # noqa: BLE001 (any capture failure means: run eager)
                self.capture = False
                r.graph = None
                LOG.warning(
                    "CUDA graphs: %s cannot be captured (%s: %s); decoding eagerly on the "
                    "static cache",
                    self.name,
                    type(err).__name__,
                    str(err).splitlines()[0] if str(err) else "",
                )
        if r.graph is not None:
            r.graph.replay()
            self.replays += 1
            return r.hidden
        return self._body(r, kv)

    # -- the DecodeStep ------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        cache: StaticKV,
        select: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, StaticKV]:
        if not isinstance(cache, StaticKV):
            raise TypeError(f"StaticStep needs a StaticKV cache, got {type(cache).__name__}")
        self.calls += 1
        rows, block = input_ids.shape
        used = cache.used
        if attention_mask.shape != (rows, used + block):
            raise ValueError(
                f"attention_mask {tuple(attention_mask.shape)} must be (rows, cache length + "
                f"block) = ({rows}, {used + block})"
            )
        if cache.generation != self.kv_id:  # graphs hold buffer addresses: drop stale ones
            self._drop_graphs(cache)
        bucket, bucketed = self._bucket(rows, block, cache)
        r = self.runners.get(bucket) if bucketed else None
        if r is None:
            r = _Runner(bucket, self.device, capturable=bucketed)
            if bucketed:
                self.runners[bucket] = r
        r.ids.zero_()
        r.ids[:rows, :block].copy_(input_ids)
        r.pos.zero_()
        r.pos[:rows, :block].copy_(position_ids)
        r.mask.zero_()
        r.mask[:rows, : used + block].copy_(attention_mask)
        r.mask[rows:].fill_(1)  # padding rows: every slot visible (finite outputs, unused)
        r.offset.fill_(used)
        hidden = self._run(r, cache)[:rows, :block]
        cache.used = used + block
        if select is None:
            return self.head(hidden).float(), cache
        flat = hidden.reshape(-1, hidden.shape[-1]).index_select(0, select.to(hidden.device))
        return self.head(flat).float(), cache

    def _drop_graphs(self, cache: StaticKV) -> None:
        """Forget the graphs (they hold the old buffers' addresses) and their memory pool.

        A pool whose graphs are all gone but whose blocks are still referenced (a caller may
        hold a view of the last ``hidden``) cannot take a new capture: PyTorch asserts
        ``use_count > 0`` (seen on an H200 with torch 2.11, LLaVA: every capture after the
        first cache was refused and decoding fell back to eager). The next capture gets a
        fresh pool; the old one is freed with its last tensor.
        """
        self.runners.clear()
        self.pool = None
        self.kv_id = cache.generation

    def _bucket(self, rows: int, block: int, cache: StaticKV) -> tuple[Bucket, bool]:
        """The bucket of this call and whether it is one (False: exact shapes, never captured);
        grows the cache (dropping graphs) when the call does not fit."""
        args = (self.batch_sizes, self.block_sizes, self.length_step)
        bucket = choose_bucket(rows, block, cache.used, cache.capacity, *args)
        if bucket is None and rows <= self.batch_sizes[-1] and block <= self.block_sizes[-1]:
            grown = cache.used + self.block_sizes[-1] + EXTRA_SLOTS
            LOG.info("static KV cache grows to %d slots (graphs captured again)", grown)
            cache.grow(grown)
            self._drop_graphs(cache)
            bucket = choose_bucket(rows, block, cache.used, cache.capacity, *args)
        if bucket is None:  # beyond the largest bucket: exact shapes, eager
            if cache.used + block > cache.capacity:
                cache.grow(cache.used + block + EXTRA_SLOTS)
                self._drop_graphs(cache)
            return Bucket(rows, block, cache.used + block), False
        return bucket, True

    def select_cache(
        self, cache: StaticKV, rows: torch.Tensor | None, columns: torch.Tensor | None
    ) -> StaticKV:
        """Keep batch rows and cache slots, in place (graphs stay valid)."""
        return cache.select(rows, columns)


class StaticTorchEngine:
    """The torch engine on a static KV cache, with CUDA graphs (``capture=True``) or eager.

    The :class:`~.base.Engine` interface (``make_engine("torch", ..., cuda_graphs=True)``).
    ``max_rows``: rows the cache holds (the most goals decoded together; more grow it).
    Prefix encoding is the backbone's own (eager): it runs once per frame.
    """

    name = "torch"

    def __init__(
        self,
        model: torch.nn.Module,
        backbone: Any,
        capture: bool = True,
        max_rows: int = 8,
        batch_sizes: Sequence[int] = BATCH_BUCKETS,
        block_sizes: Sequence[int] = BLOCK_BUCKETS,
        length_step: int = LENGTH_STEP,
    ) -> None:
        self.model, self.backbone = model, backbone
        self.max_rows = max_rows
        self.kv: StaticKV | None = None
        self.step = StaticStep(
            model, backbone.mrope, capture, batch_sizes, block_sizes, length_step, backbone.name
        )

    @property
    def device(self) -> torch.device:
        """Where the model's parameters (and the decoder's inputs) live."""
        return self.step.device

    @property
    def cuda_graphs(self) -> bool:
        """True while decoder calls are captured and replayed (False: eager, static cache)."""
        return self.step.capture

    def encode_prefix(
        self,
        processor: Any,
        image: np.ndarray,
        system: str | None = None,
        question: str | None = None,
    ) -> Prefix:
        """Vision tower + projector + prompt prefix through the language model (batch 1)."""
        return self.backbone.encode_prefix(self.model, processor, image, system, question)

    def encode_prefixes(
        self, processor: Any, image: np.ndarray, system: str | None, questions: Sequence[str]
    ) -> Prefix:
        """Question first: the goals' prefixes of one frame in one pass, stacked."""
        return self.backbone.encode_prefixes(self.model, processor, image, system, questions)

    def cache(self, prefix: Prefix, batch: int) -> StaticKV:
        """The engine's static cache holding ``prefix`` in its first ``batch`` rows (the same
        buffers every frame, so captured graphs stay valid)."""
        prefix.check_batch(batch)
        need = prefix.length + EXTRA_SLOTS
        if self.kv is None or not self.kv.fits(batch, need):
            layers, heads, dim = kv_shape(self.model)
            rows = max(batch, self.max_rows, 0 if self.kv is None else self.kv.max_rows)
            capacity = max(need, 0 if self.kv is None else self.kv.capacity)
            dtype = prefix.keys[0].dtype
            self.kv = StaticKV(layers, rows, heads, capacity, dim, dtype, self.device)
        return self.kv.load(prefix.keys, prefix.values, batch)

    def make_step(self, prefix: Prefix) -> StaticStep:
        """The static step, set for continuations of ``prefix``."""
        self.step.set_prefix(prefix.rope_delta)
        return self.step


def make_engine(
    model: torch.nn.Module, backbone: Any, cuda_graphs: bool = True, **options: Any
) -> StaticTorchEngine:
    """The CUDA-graph engine where the model sits on a CUDA device; elsewhere the eager path
    (a :class:`StaticTorchEngine` with ``capture=False``), with one log line saying why."""
    device = model.get_input_embeddings().weight.device
    capture = bool(cuda_graphs)
    if capture and device.type != "cuda":
        LOG.warning(
            "CUDA graphs need the model on a CUDA device (it is on %s): decoding eagerly", device
        )
        capture = False
    return StaticTorchEngine(model, backbone, capture=capture, **options)
