"""Length-grouped data order: micro-batches of samples of similar token length.

The collator pads every micro-batch to its longest sample, so with lengths that vary (a
descriptor answer for a spatial goal quotes a long label in every run) a random batch spends a
quarter of its tokens on padding; on the demo's tabletop mix, batches of 8 drawn at random were
77 % real tokens, 97 % when grouped as here. This is the transformers Trainer's
``group_by_length``, made distributed-aware: every optimizer micro-step takes ``world x batch``
consecutive samples of one sorted megabatch, so all ranks of a step get similar lengths and none
waits on a longer batch of another rank.

Grouping changes what a batch-mean loss weighs: a micro-batch's mean over its own tokens gives
every batch the same total weight, so a batch of short answers weighs each of its tokens several
times more than a batch of long ones, and goal kinds with long answers (relations quoting their
label in every run, label maps) lose weight against short ones (absent targets: `others` rows).
Trained that way, the demo model's relations fell from cIoU 0.45 to 0.22 and its label maps
from 0.35 to 0.14 while absent targets rose (models/demo/README.md, run AH). Under grouping the
trainer therefore divides by :class:`RunningTokenMean` instead, which keeps a token's weight the
same whichever batch it lands in, as the batch mean of a random order does on average.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

MEGABATCH = 50  # micro-steps per sorted block, the transformers LengthGroupedSampler's default


def length_grouped_order(
    lengths: Sequence[int],
    seed: int,
    epoch: int,
    rank: int,
    world: int,
    batch: int,
    megabatch: int = MEGABATCH,
) -> list[int]:
    """This rank's sample indices for one epoch, in micro-batches of similar length.

    ``lengths[i]``: token count of sample ``i``. The epoch's permutation (``seed + epoch``, the
    same on every rank) is cut to whole micro-steps of ``world * batch`` samples (a remainder
    is left out, as ``DistributedSampler(drop_last=True)`` does); blocks of ``megabatch``
    micro-steps are sorted by length, longest first, and cut into micro-steps; the micro-steps
    are then shuffled (same generator), so the order of lengths over the epoch stays random.
    Rank ``r`` takes slice ``[r * batch, (r + 1) * batch)`` of each micro-step. Returns
    ``len(lengths) // (world * batch) * batch`` indices.
    """
    if batch < 1 or world < 1 or not 0 <= rank < world or megabatch < 1:
        raise ValueError(f"bad rank {rank} / world {world} / batch {batch} / megabatch {megabatch}")
    g = torch.Generator().manual_seed(seed + epoch)
    span = world * batch
    perm = torch.randperm(len(lengths), generator=g).tolist()
    perm = perm[: len(perm) // span * span]
    steps: list[list[int]] = []
    for start in range(0, len(perm), megabatch * span):
        block = sorted(perm[start : start + megabatch * span], key=lambda i: -lengths[i])
        steps += [block[i : i + span] for i in range(0, len(block), span)]
    shuffled = torch.randperm(len(steps), generator=g).tolist()
    return [i for s in shuffled for i in steps[s][rank * batch : (rank + 1) * batch]]


class RunningTokenMean:
    """The loss denominator under length-grouped batches: the running mean of the micro-batch
    loss-weight sums seen so far (the current one included), not the batch's own sum.

    ``update(s)`` takes this micro-step's weight sum (mean over ranks) and returns the
    denominator. After a few steps it is nearly constant, so every token weighs about the same
    wherever it lands; the first steps (warm-up, small learning rate) see a noisier mean. It
    restarts on resume.
    """

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0

    def update(self, batch_sum: float) -> float:
        if not batch_sum >= 0:
            raise ValueError(f"a weight sum must be >= 0, got {batch_sum!r}")
        self.total += float(batch_sum)
        self.count += 1
        return max(self.total / self.count, 1e-8)
