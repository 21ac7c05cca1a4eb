"""A teacher-forced stand-in for a model: its greedy choice is always the true next token.

Used to count the sequential forward calls the decoder needs for a known answer (bench, tests)
without a model: drafts are accepted exactly as far as they agree with the true text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


class OracleStep:
    """:class:`~.step.DecodeStep` whose logits at logical position p favour ``target[p + 1 - s]``.

    ``targets[b]`` are goal ``b``'s answer tokens; ``starts[b]`` the logical position of its
    first answer token (prefix length + suffix length). Logits are 1.0 at the true next token
    and 0.0 elsewhere (after the target ends: token 0). ``calls`` counts forward calls.
    """

    def __init__(self, targets: Sequence[Sequence[int]], starts: Sequence[int], vocab: int) -> None:
        if len(targets) != len(starts):
            raise ValueError(f"{len(targets)} targets but {len(starts)} start positions")
        self.targets = [list(t) for t in targets]
        self.starts = list(starts)
        self.vocab = vocab
        self.calls = 0

    def __call__(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        cache: Any,
    ) -> tuple[torch.Tensor, Any]:
        self.calls += 1
        b, t = input_ids.shape
        logits = torch.zeros(b, t, self.vocab)
        for r in range(b):
            target, start = self.targets[r], self.starts[r]
            for c in range(t):
                k = int(position_ids[r, c]) + 1 - start
                logits[r, c, target[k] if 0 <= k < len(target) else 0] = 1.0
        return logits, cache
