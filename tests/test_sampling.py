"""Length-grouped data order (training.sampling): a partition of the epoch across ranks, less
padding than a random order, similar lengths on every rank of a step, batch order random."""

from __future__ import annotations

import random

import pytest
import torch

from training.dataset import ChatDataset, encode_sample
from training.sampling import length_grouped_order


def _lengths(n: int = 1000, seed: int = 0) -> list[int]:
    """Token counts like the tabletop mix: short answers and a long tail (spatial labels)."""
    rng = random.Random(seed)
    return [rng.choice([rng.randint(120, 260), rng.randint(300, 900)]) for _ in range(n)]


def _padded(order: list[int], lengths: list[int], batch: int) -> int:
    """Tokens a right-padding collator computes on for ``order`` in micro-batches."""
    chunks = [order[i : i + batch] for i in range(0, len(order), batch)]
    return sum(batch * max(lengths[i] for i in c) for c in chunks)


def test_ranks_partition_the_epoch_in_whole_micro_steps() -> None:
    lengths = _lengths(1003)
    orders = [length_grouped_order(lengths, 7, 0, r, world=2, batch=8) for r in range(2)]
    assert [len(o) for o in orders] == [1003 // 16 * 8] * 2
    assert not set(orders[0]) & set(orders[1])
    assert len(set(orders[0]) | set(orders[1])) == 1003 // 16 * 16
    assert orders[0] == length_grouped_order(lengths, 7, 0, 0, world=2, batch=8)  # resumable
    assert orders[0] != length_grouped_order(lengths, 7, 1, 0, world=2, batch=8)  # per epoch


def test_grouping_cuts_padding_and_keeps_ranks_of_a_step_together() -> None:
    lengths = _lengths()
    ranks = [length_grouped_order(lengths, 3, 0, r, world=2, batch=8) for r in range(2)]
    grouped = sum(_padded(o, lengths, 8) for o in ranks)
    shuffled = list(range(len(lengths)))
    random.Random(3).shuffle(shuffled)
    assert grouped < 0.8 * _padded(shuffled, lengths, 8)
    assert grouped < 1.1 * sum(lengths)  # little padding is left
    # Step k's two micro-batches are neighbours in one sorted block: rank 1 never waits on a
    # longer batch of rank 0's than the one just below it.
    for k in range(0, len(ranks[0]), 8):
        a, b = ranks[0][k : k + 8], ranks[1][k : k + 8]
        assert min(lengths[i] for i in a) >= max(lengths[i] for i in b)


def test_batch_order_over_the_epoch_stays_random() -> None:
    lengths = _lengths()
    order = length_grouped_order(lengths, 5, 0, 0, world=1, batch=8)
    longest = [max(lengths[i] for i in order[k : k + 8]) for k in range(0, len(order), 8)]
    first, second = longest[: len(longest) // 2], longest[len(longest) // 2 :]
    # not longest first: both halves of the epoch hold long and short batches
    assert max(first) > 600 and max(second) > 600
    assert min(first) < 300 and min(second) < 300


@pytest.mark.parametrize(("rank", "world", "batch"), [(2, 2, 8), (0, 1, 0), (-1, 2, 4)])
def test_bad_layout_is_rejected(rank: int, world: int, batch: int) -> None:
    with pytest.raises(ValueError, match="rank"):
        length_grouped_order([10] * 40, 0, 0, rank, world, batch)


def test_dataset_lengths_are_the_encoded_lengths(tmp_path) -> None:
    """``ChatDataset.lengths`` (what the grouping sorts by) is each sample's encoded length."""
    from text4seg_ros.model.registry import get_backbone
    from text4seg_ros.model.tiny import build_tiny
    from training.data.build import main as build_main

    out = tmp_path / "t.jsonl"
    build_main(["tabletop", "--first", "0", "--n-images", "3", "--size", "64", "--grid", "8",
                "--goals-per-scene", "3", "--out", str(out)])  # fmt: skip
    _, processor = build_tiny("llava")
    spec = get_backbone("llava")
    ds = ChatDataset([str(out)], spec, processor)
    assert len(ds.lengths) == len(ds) == 9
    assert len(set(ds.lengths)) > 1
    for i in range(len(ds)):
        assert ds.lengths[i] == encode_sample(ds.samples[i], spec, processor)["input_ids"].shape[0]
    assert torch.is_tensor(ds[0]["input_ids"])
