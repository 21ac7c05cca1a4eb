"""A teacher-forced stand-in for a model: its greedy choice is always the true next token.

Used to count the sequential forward calls the decoder needs for a known answer (bench, tests)
without a model: drafts are accepted exactly as far as they agree with the true text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


class OracleStep:
    """:class:`~.step.DecodeStep` whose logits at logical position p favour ``target[p + 1 - s]``.

    ``targets[b]`` are goal ``b``'s answer tokens; ``starts[b]`` the logical position of its
    first answer token (prefix length + suffix length). Logits are 1.0 at the true next token
    and 0.0 elsewhere (after the target ends: token 0). ``calls`` counts forward calls.

    Its "cache" is an :class:`OracleRows` naming the goal of every batch row, so the decoder can
    drop finished goals from the batch (:meth:`select_cache`) as with a real model. It
    ``selects`` (:mod:`.step`): with ``select`` it builds logits at those positions only, so its
    own cost is a few microseconds (benches use it as a zero-cost model).
    """

    selects = True

    def __init__(self, targets: Sequence[Sequence[int]], starts: Sequence[int], vocab: int) -> None:
        if len(targets) != len(starts):
            raise ValueError(f"{len(targets)} targets but {len(starts)} start positions")
        self.targets = [list(t) for t in targets]
        self.starts = list(starts)
        self.vocab = vocab
        self.calls = 0
        width = max([1, *map(len, self.targets)])
        self._truth = torch.zeros(len(self.targets), width, dtype=torch.long)  # (B, L) padded
        for r, target in enumerate(self.targets):
            self._truth[r, : len(target)] = torch.tensor(target, dtype=torch.long)
        self._lengths = torch.tensor([len(x) for x in self.targets], dtype=torch.long)[:, None]
        self._starts = torch.tensor(self.starts, dtype=torch.long)[:, None]

    def __call__(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        cache: Any,
        select: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, Any]:
        self.calls += 1
        b, t = input_ids.shape
        rows = cache.rows if isinstance(cache, OracleRows) else torch.arange(b)
        if len(rows) != b:
            raise ValueError(f"batch of {b} rows but the cache names {len(rows)} goals")
        k = position_ids.cpu() + 1 - self._starts[rows]  # (B, T) index of the true next token
        inside = (k >= 0) & (k < self._lengths[rows])
        width = self._truth.shape[1]
        truth = torch.where(inside, self._truth[rows].gather(1, k.clamp(0, width - 1)), 0)
        if select is not None:
            picked = truth.reshape(-1)[select.cpu()]
            return torch.zeros(len(picked), self.vocab).scatter_(
                1, picked[:, None], 1.0
            ), OracleRows(rows)
        logits = torch.zeros(b, t, self.vocab).scatter_(2, truth[..., None], 1.0)
        return logits, OracleRows(rows)

    def select_cache(self, cache: Any, rows: torch.Tensor | None, columns: Any) -> OracleRows:
        """Keep batch ``rows`` (``LongTensor``); the oracle has no slots to cut."""
        if rows is None:
            return cache
        current = cache.rows if isinstance(cache, OracleRows) else torch.arange(len(self.targets))
        return OracleRows(current[rows.cpu()])


@dataclass(frozen=True)
class OracleRows:
    """The oracle's stand-in for a KV cache: ``rows`` ``(B,)`` goal index of each batch row."""

    rows: torch.Tensor
