"""A static KV cache: preallocated per-layer buffers a CUDA graph can be captured on.

:class:`StaticKV` holds, per decoder layer, key and value buffers ``(max_rows, kv_heads,
capacity, head_dim)`` allocated once; a decoder call uses the leading ``rows`` rows and the
leading ``length`` slots (views of the same storage, so their addresses never change between
calls, which graph replay needs). ``used`` counts the slots the decoder's attention mask
covers; a block is written at slots ``used .. used + T - 1``.

:class:`SlotView` is what the ``transformers`` language model sees as ``past_key_values`` during
one call: ``update`` writes the block's keys and values at the call's slots (a device tensor, so
the write position is data, not a captured constant) and returns the bucket's views.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch

from ..decoding.step import gather_slots

_GENERATIONS = itertools.count()


class StaticKV:
    """Preallocated KV buffers (see the module doc). ``used`` and ``rows`` are Python ints."""

    def __init__(
        self,
        layers: int,
        max_rows: int,
        kv_heads: int,
        capacity: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device | str,
    ) -> None:
        if min(layers, max_rows, kv_heads, capacity, head_dim) < 1:
            raise ValueError("every StaticKV size must be >= 1")
        self.max_rows, self.rows, self.used = max_rows, 0, 0
        self._alloc(layers, kv_heads, capacity, head_dim, dtype, device)

    def _alloc(self, layers, kv_heads, capacity, head_dim, dtype, device) -> None:  # noqa: ANN001
        shape = (self.max_rows, kv_heads, capacity, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.capacity = capacity
        # Graphs captured on these buffers are valid for this generation only.
        self.generation = next(_GENERATIONS)

    def grow(self, capacity: int) -> None:
        """Reallocate with ``capacity`` slots, keeping the live rows and slots (new generation:
        graphs captured on the old buffers must not be replayed)."""
        if capacity <= self.capacity:
            return
        old_keys, old_values = self.keys, self.values
        _, heads, _, dim = old_keys[0].shape
        self._alloc(len(old_keys), heads, capacity, dim, old_keys[0].dtype, old_keys[0].device)
        for new, old in zip(self.keys + self.values, old_keys + old_values):
            new[: self.rows, :, : self.used].copy_(old[: self.rows, :, : self.used])

    @property
    def length(self) -> int:
        """Slots the decoder's attention mask covers (its ``past`` length)."""
        return self.used

    def fits(self, rows: int, length: int) -> bool:
        """True when ``rows`` rows of ``length`` slots fit the buffers."""
        return rows <= self.max_rows and length <= self.capacity

    def load(self, keys: list[torch.Tensor], values: list[torch.Tensor], rows: int) -> StaticKV:
        """Fill the first ``rows`` rows with a prefix ``(1 or rows, kv_heads, P, head_dim)`` per
        layer (``rows`` rows: a stacked prefix, one row each)."""
        length = int(keys[0].shape[2])
        if not self.fits(rows, length):
            raise ValueError(
                f"prefix of {length} slots x {rows} rows exceeds the static cache "
                f"({self.capacity} slots x {self.max_rows} rows)"
            )
        for buf, src in zip(self.keys, keys):
            buf[:rows, :, :length].copy_(src.expand(rows, -1, -1, -1))
        for buf, src in zip(self.values, values):
            buf[:rows, :, :length].copy_(src.expand(rows, -1, -1, -1))
        self.rows, self.used = rows, length
        return self

    def select(self, rows: torch.Tensor | None, columns: torch.Tensor | None) -> StaticKV:
        """Keep batch ``rows`` and slots ``columns`` (the decoder's ``select_cache``), moved to
        the front of the buffers in place. ``columns``: ``(L',)`` for every row or ``(B', L')``
        per row (see :func:`text4seg_ros.decoding.step.select_cache`)."""
        if rows is None and columns is None:
            return self
        for bufs in (self.keys, self.values):
            for buf in bufs:
                live = buf[: self.rows, :, : self.used]
                if rows is not None:
                    live = live.index_select(0, rows.to(buf.device))
                if columns is not None:
                    live = gather_slots(live, columns)
                # live is a copy now (index_select / stack), so writing it back is safe
                buf[: live.shape[0], :, : live.shape[2]].copy_(live)
        if rows is not None:
            self.rows = int(rows.numel())
        if columns is not None:
            self.used = int(columns.shape[-1])
        return self


class SlotView:
    """``past_key_values`` for one call on a bucket of ``rows`` x ``length`` (module doc).

    ``slots``: ``LongTensor (T,)`` on the cache's device, where the block's keys go.
    """

    def __init__(self, kv: StaticKV, rows: int, length: int, slots: torch.Tensor) -> None:
        self.kv, self.rows, self.length, self.slots = kv, rows, length, slots
        self.is_sliding = [False] * len(kv.keys)

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``(rows, kv_heads, T, head_dim)`` states at ``slots``; return the views."""
        keys = self.kv.keys[layer_idx][: self.rows, :, : self.length]
        values = self.kv.values[layer_idx][: self.rows, :, : self.length]
        keys.index_copy_(2, self.slots, key_states.to(keys.dtype))
        values.index_copy_(2, self.slots, value_states.to(values.dtype))
        return keys, values

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Slots in use before this call (only read when positions are not given)."""
        return self.kv.used

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> tuple[int, int]:
        """``(kv_length, kv_offset)``; unused with the 4-D masks this mode passes."""
        return self.length, 0

    def get_query_offset(self, layer_idx: int = 0) -> int:
        """Query offset; unused with the 4-D masks this mode passes."""
        return self.kv.used
