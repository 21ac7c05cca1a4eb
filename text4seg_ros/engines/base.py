"""The engine interface: what the constrained decoder needs from a model, and nothing more.

An :class:`Engine` does four things (DESIGN.md, "Engines"):

1. :meth:`Engine.encode_prefix`: run a frame's vision tower, projector and shared prompt prefix
   into a KV cache (a :class:`~text4seg_ros.model.registry.Prefix`, batch 1);
2. :meth:`Engine.cache`: that prefix as the cache of a batch of ``B`` goals;
3. :meth:`Engine.make_step`: the decoder step (:mod:`text4seg_ros.decoding.step`): a block of
   tokens per batch row against the cache, logits only at the positions asked for (``select``,
   so the output head never runs over a whole block of drafts);
4. ``step.select_cache(cache, rows, columns)``: keep batch rows and cache slots (finished goals
   leave, dead draft slots are packed away).

The grammar, the drafts and the loop stay in Python above the engine and never change per engine.
Engines here: ``torch`` (:mod:`.torch_engine`, the reference), ``onnxruntime``
(:mod:`.onnxruntime_engine`) and ``tensorrt`` (:mod:`.tensorrt_engine`), the last two running
graphs exported once to ONNX (:mod:`.export`).

Graph engines keep their cache as :class:`ListCache`: per layer a key and a value tensor
``(B, kv_heads, L, head_dim)`` (torch tensors on the engine's device, so the runtimes read and
write them in place through their buffer pointers, never through host copies).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from transformers import DynamicCache

from ..decoding.step import gather_slots

# A text4seg_ros.model.registry.Backbone (name, mrope, preprocess, encode_prefix, make_step);
# not imported: engines sit below model in the layering (model.Segmenter picks an engine).
Backbone = Any


@dataclass
class Prefix:
    """The encoded shared prefix of one frame (system, user turn start, image tokens).

    ``keys``/``values``: per decoder layer, ``(1, kv_heads, P, head_dim)`` tensors of the
    prefix's KV cache. ``input_ids``: ``(1, P)``. ``rope_delta``: added to logical text
    positions after the prefix (Qwen2-VL mrope; 0 for 1-D rope backbones). ``image_size``:
    ``(H, W)`` of the frame in pixels.

    A stacked prefix (one prefix per goal of a question-first frame: :func:`stack_prefixes`,
    or an engine's ``encode_prefixes`` in one padded pass) has ``B`` rows instead of 1 and
    ``lengths``: row ``i`` holds its own prefix in its first ``lengths[i]`` of the ``P``
    slots, then padding (zeros, or what the padded pass wrote there) that the decoder masks.
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    input_ids: torch.Tensor
    image_size: tuple[int, int]
    rope_delta: int = 0
    n_image_tokens: int = 0
    lengths: tuple[int, ...] = ()

    @property
    def length(self) -> int:
        """Number of prefix slots P (the longest row's prefix for a stacked prefix)."""
        return int(self.input_ids.shape[1])

    @property
    def row_lengths(self) -> int | list[int]:
        """What the decoder takes as ``prefix_len``: ``P``, or per row ``lengths`` when
        stacked."""
        return list(self.lengths) if self.lengths else self.length

    def check_batch(self, batch: int) -> None:
        """ValueError unless ``batch`` rows can hold this prefix (any number for a one-row
        prefix, exactly its rows for a stacked one)."""
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        if self.lengths and batch != len(self.lengths):
            raise ValueError(
                f"a stacked prefix of {len(self.lengths)} rows cannot fill a batch of {batch}"
            )

    def cache(self, batch: int = 1) -> DynamicCache:
        """A fresh ``DynamicCache`` holding the prefix for ``batch`` rows (prefix left intact)."""
        self.check_batch(batch)
        # expand() is a view; the cache's first update concatenates into new tensors, so the
        # stored prefix is never written and can serve every later segment() call.
        data = [
            (k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1))
            for k, v in zip(self.keys, self.values)
        ]
        return DynamicCache(ddp_cache_data=data)


def image_token_id(model: Any) -> int:
    """The id of the image placeholder token in ``model``'s vocabulary."""
    config = model.config
    for key in ("image_token_id", "image_token_index"):
        value = getattr(config, key, None)
        if value is not None:
            return int(value)
    raise ValueError(f"{type(config).__name__} names no image token id")


def right_pad(rows: Sequence[torch.Tensor], value: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``(P_i, ...)`` as one ``(N, max P_i, ...)`` tensor, each padded at its end with
    ``value``, and the ``(N, max P_i)`` int64 mask of the real entries (1) and the padding
    (0), on the rows' device."""
    width = max(int(r.shape[0]) for r in rows)
    first = rows[0]
    out = first.new_full((len(rows), width, *first.shape[1:]), value)
    mask = torch.zeros(len(rows), width, dtype=torch.long, device=first.device)
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r
        mask[i, : r.shape[0]] = 1
    return out, mask


def stack_prefixes(prefixes: Sequence[Prefix]) -> Prefix:
    """One-row prefixes of the same frame (one per goal, question first) as one ``B``-row
    prefix, so that their goals decode in one batch: row ``i`` holds ``prefixes[i]`` in its
    first ``P_i`` slots and zeros up to ``P = max P_i`` (``lengths``; the decoder masks them
    and places row ``i``'s next token at position ``P_i``). Keys carry their rotary positions,
    so a slot's index never matters to attention. ValueError for an empty list, stacked
    inputs, or prefixes of different frames or rope deltas (one decoder step serves the
    batch)."""
    if not prefixes:
        raise ValueError("no prefixes to stack")
    first = prefixes[0]
    for p in prefixes:
        if p.lengths or p.input_ids.shape[0] != 1:
            raise ValueError("stack_prefixes takes one-row prefixes")
        if (p.rope_delta, p.image_size, p.n_image_tokens) != (
            first.rope_delta, first.image_size, first.n_image_tokens
        ):  # fmt: skip
            raise ValueError(
                "prefixes differ in rope delta, image size or image tokens: not one frame"
            )
    lengths = tuple(p.length for p in prefixes)
    width = max(lengths)

    def pad(t: torch.Tensor) -> torch.Tensor:  # (1, kv_heads, P_i, head_dim): zeros after
        extra = width - t.shape[2]
        if not extra:
            return t
        return torch.cat([t, t.new_zeros(t.shape[0], t.shape[1], extra, t.shape[3])], 2)

    layers = range(len(first.keys))
    return Prefix(
        keys=[torch.cat([pad(p.keys[i]) for p in prefixes]) for i in layers],
        values=[torch.cat([pad(p.values[i]) for p in prefixes]) for i in layers],
        input_ids=right_pad([p.input_ids[0] for p in prefixes], 0)[0],
        image_size=first.image_size,
        rope_delta=first.rope_delta,
        n_image_tokens=first.n_image_tokens,
        lengths=lengths,
    )


class EngineUnavailable(RuntimeError):
    """The engine cannot run here (a missing package, no GPU) or refuses this model; the message
    is one line saying why and what to do."""


class Engine(Protocol):
    """A decode engine (see the module doc)."""

    name: str

    def encode_prefix(
        self, processor: Any, image: np.ndarray, system: str | None, question: str | None = None
    ) -> Prefix:
        """Vision tower + projector + prompt prefix of one ``(H, W, 3)`` uint8 RGB frame: shared
        by the frame's goals, or one goal's (``question``) for a question-first backbone."""
        ...

    def encode_prefixes(
        self, processor: Any, image: np.ndarray, system: str | None, questions: Sequence[str]
    ) -> Prefix:
        """Question first: one prefix per question of the same frame, as one stacked prefix
        (:func:`stack_prefixes`' layout), in as few model calls as the engine allows."""
        ...

    def cache(self, prefix: Prefix, batch: int) -> Any:
        """The prefix's KV cache for ``batch`` rows (the prefix itself left intact)."""
        ...

    def make_step(self, prefix: Prefix) -> Any:
        """The :class:`~text4seg_ros.decoding.step.DecodeStep` (with ``selects`` and
        ``select_cache``) for continuations of ``prefix``."""
        ...


@dataclass
class ListCache:
    """A graph engine's KV cache: ``keys[i]``/``values[i]`` of layer ``i``, each
    ``(B, kv_heads, L, head_dim)``; ``length`` is L (the slots, live or masked)."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    @property
    def length(self) -> int:
        """Cache slots L."""
        return int(self.keys[0].shape[2]) if self.keys else 0

    @property
    def batch(self) -> int:
        """Batch rows B."""
        return int(self.keys[0].shape[0]) if self.keys else 0

    @classmethod
    def from_prefix(cls, prefix: Prefix, batch: int) -> ListCache:
        """``batch`` contiguous copies of the prefix's rows (the runtimes need dense buffers)."""
        prefix.check_batch(batch)
        return cls(
            [k.expand(batch, -1, -1, -1).contiguous() for k in prefix.keys],
            [v.expand(batch, -1, -1, -1).contiguous() for v in prefix.values],
        )


def select_list_cache(
    cache: ListCache, rows: torch.Tensor | None, columns: torch.Tensor | None
) -> ListCache:
    """Keep batch ``rows`` and cache ``columns`` of a :class:`ListCache` (the contract of
    :func:`text4seg_ros.decoding.step.select_cache`: ``columns`` ``(L',)`` for every row or
    ``(B', L')`` per row). On the CPU the copies are numpy takes (single-threaded; torch's
    gather with a broadcast 4-D index is many times slower), elsewhere torch."""
    if cache.keys and cache.keys[0].device.type == "cpu":
        r = None if rows is None else rows.cpu().numpy()
        c = None if columns is None else columns.cpu().numpy()
        return ListCache(
            [_cut_host(k, r, c) for k in cache.keys], [_cut_host(v, r, c) for v in cache.values]
        )

    def cut(t: torch.Tensor) -> torch.Tensor:
        if rows is not None:
            t = t.index_select(0, rows.to(t.device))
        if columns is not None:
            t = gather_slots(t, columns)
        return t.contiguous()

    return ListCache([cut(k) for k in cache.keys], [cut(v) for v in cache.values])


def _cut_host(t: torch.Tensor, rows: np.ndarray | None, cols: np.ndarray | None) -> torch.Tensor:
    a = t.numpy()
    if rows is not None:
        a = a[rows]
    if cols is not None:
        if cols.ndim == 1:
            a = a[:, :, cols]
        else:
            a = np.stack([a[b][:, cols[b]] for b in range(a.shape[0])])
    return torch.from_numpy(np.ascontiguousarray(a))


__all__ = [
    "Engine",
    "EngineUnavailable",
    "ListCache",
    "Prefix",
    "image_token_id",
    "right_pad",
    "select_list_cache",
    "stack_prefixes",
]
