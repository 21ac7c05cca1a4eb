"""The decoder step every engine implements, and the default one for Hugging Face causal LMs.

A step runs the language model on a block of new tokens against a KV cache::

    step(input_ids, position_ids, attention_mask, cache) -> (logits, cache)

* ``input_ids``: ``LongTensor (B, T)``, right-padded (pads are masked, their logits unused).
* ``position_ids``: ``LongTensor (B, T)``: logical positions, counting the shared prefix, so a
  row's positions stay contiguous even where pad or rejected slots sit in the cache. Backbones
  with multimodal RoPE (Qwen2-VL) map them to their own position layout inside their step.
* ``attention_mask``: ``LongTensor (B, past + T)``: 1 for every cache slot and new token a row
  may attend to, 0 for pads and rejected draft tokens (its length is the cache's length plus T).
* ``cache``: the engine's KV cache (``transformers`` ``Cache``, or any object the engine keeps);
  None before the first call. Returned updated; the loop never looks inside it.
* ``logits``: ``FloatTensor (B, T, V)``: next-token logits at every input position.

Selected logits: a step with a true attribute ``selects`` also takes ``select``, a
``LongTensor (N,)`` of flat indices ``row * T + column`` into the block, and returns logits
``(N, V)`` at those positions only (in that order), so the output head (a ``V x hidden`` matrix,
the largest single layer of a small model) never runs over a whole block of drafts. The
decoder asks only where the grammar leaves a choice. Without ``selects`` the decoder gathers
them from the full ``(B, T, V)`` logits itself (same values).

Optionally a step also has ``select_cache(cache, rows, columns) -> cache`` for caches that are
not ``transformers`` ``Cache`` objects (an engine's own buffers): keep only the batch ``rows``
and the cache ``columns`` (sequence slots), both ``LongTensor`` indices in increasing order or
None for all. The loop uses it to drop finished goals from the batch and to compact slots no
row attends to any more; without it, :func:`select_cache` (transformers caches) is used, and a
cache neither can slice raises ``NotImplementedError``, after which the loop keeps the rows or
slots (masked, the slower behaviour: results are the same either way).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from transformers.cache_utils import Cache, DynamicLayer


def selects(step: Any) -> bool:
    """True when ``step`` takes ``select=`` and returns logits at those positions only."""
    return bool(getattr(step, "selects", False))


def gather_positions(hidden: torch.Tensor, select: torch.Tensor | None) -> torch.Tensor:
    """``hidden (B, T, H)`` at flat positions ``select (N,)`` as ``(N, H)``; all ``(B, T, H)``
    when ``select`` is None."""
    if select is None:
        return hidden
    return hidden.reshape(-1, hidden.shape[-1]).index_select(0, select.to(hidden.device))


class DecodeStep(Protocol):
    """One forward call of a decoder over new tokens with a KV cache (see module docs)."""

    def __call__(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        cache: Any,
    ) -> tuple[torch.Tensor, Any]:
        """Return ``(logits (B, T, V), cache)``."""
        ...


class HFCausalLMStep:
    """:class:`DecodeStep` of a plain ``transformers`` causal LM (Llama, Qwen2, ...).

    Calls the model's body, then its output head at the ``select`` positions only (see the
    module doc), under ``torch.inference_mode``. ``device`` is where inputs are built.
    """

    selects = True

    def __init__(self, model: torch.nn.Module) -> None:
        if not callable(model):
            raise TypeError(f"model must be a callable torch module, got {type(model).__name__}")
        self.model = model
        self.calls = 0

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return next(self.model.parameters()).device

    def __call__(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        cache: Any,
        select: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, Any]:
        self.calls += 1
        with torch.inference_mode():
            out = self.model.base_model(
                input_ids=input_ids,
                position_ids=position_ids,
                attention_mask=attention_mask,
                past_key_values=cache,
                use_cache=True,
            )
            hidden = gather_positions(out.last_hidden_state, select)
            logits = self.model.get_output_embeddings()(hidden).float()
        return logits, out.past_key_values


def select_cache(cache: Any, rows: torch.Tensor | None, columns: torch.Tensor | None) -> Any:
    """Keep batch ``rows`` and sequence ``columns`` of a ``transformers`` KV cache, in place.

    ``rows``: ``LongTensor (B',)`` increasing batch indices, or None for all. ``columns``: None
    for all, ``LongTensor (L',)`` slots kept in every row, or ``LongTensor (B', L')``: per row,
    the slots that make up its new cache, in order (rows may keep different slots: each row's
    live slots packed to the front). Slot order inside a cache does not matter to attention here:
    keys carry their rotary positions and the loop's attention mask is gathered the same way.
    Rows are cut by each layer's ``batch_select_indices`` (dynamic layers, sliding-window ones
    included, on the layer's own device), before columns. Columns only for caches whose
    layers are all plain ``DynamicLayer`` (``[B, heads, seq, head_dim]`` tensors): sliding-window
    layers keep positional bookkeeping that dropping slots would break, so they raise
    ``NotImplementedError``, as do static layers and any cache that is not a ``Cache``.
    ``None`` (no cache yet) stays None. Returns the cache.
    """
    if cache is None:
        return None
    if not isinstance(cache, Cache):
        raise NotImplementedError(f"cannot slice a {type(cache).__name__} cache")
    layers = list(getattr(cache, "layers", []))
    if not all(isinstance(layer, DynamicLayer) for layer in layers):
        raise NotImplementedError("only dynamic (growing) cache layers can be sliced")
    if columns is not None and not all(type(layer) is DynamicLayer for layer in layers):
        raise NotImplementedError("only plain DynamicLayer caches can drop sequence slots")
    for layer in layers:  # per layer: a model split over devices keeps layers on several
        if not layer.is_initialized or layer.keys is None or not layer.keys.numel():
            continue
        if rows is not None:
            layer.batch_select_indices(rows.to(layer.keys.device))
        if columns is not None:
            layer.keys, layer.values = (
                gather_slots(layer.keys, columns),
                gather_slots(layer.values, columns),
            )
    return cache


def gather_slots(states: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """``states (B, heads, L, head_dim)`` at slots ``columns`` ``(L',)`` or ``(B, L')`` (per
    row one ``index_select``: B is small, and a gather with a broadcast 4-D index is many times
    slower). Shared by every cache layout's ``select`` (:mod:`text4seg_ros.engines`)."""
    cols = columns.to(states.device)
    if cols.ndim == 1:
        return states.index_select(2, cols)
    return torch.stack([states[b].index_select(1, cols[b]) for b in range(states.shape[0])])


def prefill(
    step: DecodeStep, prefix_ids: list[int], batch: int, device: torch.device | str = "cpu"
) -> tuple[Any, int]:
    """Run a shared text prefix once and expand its cache to ``batch`` rows.

    For plain LMs and tests; VLM Segmenters build their own prefix cache (image + prompt).
    Returns ``(cache, prefix_len)``. The cache must support ``batch_repeat_interleave`` (all
    ``transformers`` dynamic caches do).
    """
    if not prefix_ids:
        return None, 0
    ids = torch.tensor([prefix_ids], dtype=torch.long, device=device)
    pos = torch.arange(len(prefix_ids), device=device)[None]
    _, cache = step(ids, pos, torch.ones_like(ids), None)
    if batch > 1:
        cache.batch_repeat_interleave(batch)
    return cache, len(prefix_ids)
