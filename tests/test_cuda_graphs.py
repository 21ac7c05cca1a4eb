"""CUDA-graph mode of the torch engine: buckets, the static KV cache, the fallback to eager.

On CPU the static-cache step runs the same code as under graph capture, eagerly; its tokens
must equal the dynamic-cache step's on every backbone. The GPU tests capture and replay.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from text4seg_ros.decoding import constrained_generate
from text4seg_ros.engines import make_engine
from text4seg_ros.engines.buckets import Bucket, check_sizes, choose_bucket, round_up
from text4seg_ros.engines.cuda_graphs import StaticTorchEngine
from text4seg_ros.engines.static_cache import StaticKV
from text4seg_ros.model.segmenter import Segmenter
from text4seg_ros.model.tiny import build_tiny_model
from text4seg_ros.model.types import Goal
from text4seg_ros.prompts import Task

torch.set_num_threads(1)
GOALS = [
    Goal("red cup"),
    Goal("chair", Task.GRES),
    Goal("mug", Task.REC),
    Goal("", Task.OPEN_VOCAB, classes=("cup", "table")),
    Goal("box", Task.INSTANCES),
]


def test_buckets_round_shapes_up_and_refuse_what_does_not_fit() -> None:
    assert round_up(3, (1, 2, 4, 8)) == 4 and round_up(8, (1, 2, 4, 8)) == 8
    assert round_up(9, (1, 2, 4, 8)) is None
    assert choose_bucket(3, 5, 600, 2048) == Bucket(4, 8, 768)  # 608 slots -> 768
    assert choose_bucket(1, 1, 255, 2048) == Bucket(1, 1, 256)
    assert choose_bucket(8, 64, 1980, 2048) == Bucket(8, 64, 2048)  # capped at capacity
    assert choose_bucket(8, 64, 1990, 2048) is None  # the padded block would not fit
    assert choose_bucket(17, 1, 0, 2048) is None and choose_bucket(1, 129, 0, 4096) is None
    with pytest.raises(ValueError, match="increasing"):
        check_sizes((1, 4, 2), "block_sizes")
    with pytest.raises(ValueError, match=">= 1"):
        round_up(0, (1, 2))


def test_static_kv_loads_selects_and_grows_in_place() -> None:
    kv = StaticKV(2, 4, 1, 16, 2, torch.float32, "cpu")
    prefix = [torch.arange(6, dtype=torch.float32).reshape(1, 1, 3, 2)] * 2
    kv.load(prefix, prefix, rows=3)
    assert (kv.rows, kv.used) == (3, 3)
    kv.keys[0][:3, :, 3] = torch.tensor([[10.0, 10.0], [20.0, 20.0], [30.0, 30.0]])[:, None]
    kv.used = 4
    before = kv.generation
    kv.select(torch.tensor([0, 2]), torch.tensor([[0, 3], [1, 3]]))  # per-row slots
    assert (kv.rows, kv.used) == (2, 2)
    assert kv.keys[0][0, 0, :2].tolist() == [[0.0, 1.0], [10.0, 10.0]]
    assert kv.keys[0][1, 0, :2].tolist() == [[2.0, 3.0], [30.0, 30.0]]
    kv.grow(32)
    assert kv.capacity == 32 and kv.generation != before
    assert kv.keys[0][1, 0, :2].tolist() == [[2.0, 3.0], [30.0, 30.0]]
    with pytest.raises(ValueError, match="exceeds the static cache"):
        kv.load([torch.zeros(1, 1, 40, 2)] * 2, [torch.zeros(1, 1, 40, 2)] * 2, rows=1)


def _segmenter(backbone: str, root: Path) -> Segmenter:
    path = build_tiny_model(backbone, root / backbone, seed=3)
    seg = Segmenter.from_pretrained(path, grid=16, max_instances=4)
    seg.set_image(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    return seg


def _decode(seg: Segmenter, step, cache) -> list[list[int]]:
    plans = seg.plan(GOALS)
    grammars = [seg.grammar(p) for p in plans]
    suffixes = [seg.suffix_ids(p) for p in plans]
    results = constrained_generate(step, grammars, suffixes, cache, seg._prefix.length,
                                   pad_token_id=seg.pad_token_id)  # fmt: skip
    return [r.tokens for r in results]


@pytest.mark.parametrize("backbone", ["llava", "qwen2_vl", "internvl"])
def test_static_cache_step_gives_the_eager_tokens(backbone: str, tmp_path: Path) -> None:
    seg = _segmenter(backbone, tmp_path)
    prefix = seg._prefix
    reference = _decode(seg, seg._step, prefix.cache(len(GOALS)))
    engine = StaticTorchEngine(seg.model, seg.backbone, capture=False, block_sizes=(1, 4, 16))
    for _ in range(2):  # the second frame reuses the engine's buffers
        tokens = _decode(seg, engine.make_step(prefix), engine.cache(prefix, len(GOALS)))
        assert tokens == reference
    assert all(len(t) > 50 for t in reference)
    # Blocks longer than the largest bucket (16 here) ran with exact shapes, never kept.
    assert engine.step.runners and all(b.block <= 16 for b in engine.step.runners)


def test_only_bucket_shapes_are_captured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seg = _segmenter("llava", tmp_path)
    prefix = seg._prefix
    engine = StaticTorchEngine(seg.model, seg.backbone, capture=False, block_sizes=(1, 4, 16))
    engine.step.capture = True  # as on a GPU; record what would be captured
    tried: list = []
    monkeypatch.setattr(engine.step, "_capture", lambda r, kv: tried.append(r.bucket))
    _decode(seg, engine.make_step(prefix), engine.cache(prefix, len(GOALS)))
    assert tried and all(b.block in (1, 4, 16) and b.rows in (1, 2, 4, 8) for b in tried)
    assert all(b.length % 256 == 0 or b.length == engine.kv.capacity for b in tried)
    assert engine.step.calls > len(set(tried))  # buckets were reused


def test_a_grown_cache_drops_the_graphs_and_their_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A pool whose graphs are gone cannot take a new capture (PyTorch asserts use_count > 0),
    # so a grow must forget the pool with the graphs; the GPU test below captures across grows.
    monkeypatch.setattr("text4seg_ros.engines.cuda_graphs.EXTRA_SLOTS", 8)
    seg = _segmenter("llava", tmp_path)
    prefix = seg._prefix
    reference = _decode(seg, seg._step, prefix.cache(len(GOALS)))
    engine = StaticTorchEngine(seg.model, seg.backbone, capture=False, block_sizes=(1, 4, 16))
    step = engine.step
    pools: list = []

    def capture(r, kv) -> None:  # as on a GPU, recording which pool each capture would use
        if step.pool is None:
            step.pool = object()
        pools.append(step.pool)

    step.capture = True
    monkeypatch.setattr(step, "_capture", capture)
    cache = engine.cache(prefix, len(GOALS))
    first = cache.generation
    assert _decode(seg, engine.make_step(prefix), cache) == reference
    assert engine.kv.generation != first  # 8 spare slots: the cache grew while decoding
    assert len(set(map(id, pools))) > 1  # a fresh pool after a grow, never the old one
    assert step.pool in (None, pools[-1]) and step.kv_id == engine.kv.generation


def test_without_cuda_the_engine_says_so_and_decodes_eagerly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = build_tiny_model("llava", tmp_path / "llava", seed=3)
    frame = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    with caplog.at_level(logging.WARNING, logger="text4seg_ros.engines.cuda_graphs"):
        seg = Segmenter.from_pretrained(path, grid=16, engine_options={"cuda_graphs": True})
    assert isinstance(seg.engine, StaticTorchEngine) and seg.engine.name == "torch"
    assert seg.engine.cuda_graphs is False  # no CUDA here
    assert "CUDA graphs need the model on a CUDA device" in caplog.text
    plain = Segmenter.from_pretrained(path, grid=16)
    for s in (seg, plain):
        s.set_image(frame)
    got, want = seg.segment(GOALS), plain.segment(GOALS)
    assert [r.descriptor for r in got] == [r.descriptor for r in want]
    assert not isinstance(make_engine("torch", seg.model, seg.backbone), StaticTorchEngine)


def test_a_backbone_that_cannot_be_captured_falls_back_with_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    seg = _segmenter("qwen2_vl", tmp_path)
    prefix = seg._prefix
    reference = _decode(seg, seg._step, prefix.cache(len(GOALS)))
    engine = StaticTorchEngine(seg.model, seg.backbone, capture=False)
    engine.step.capture = True  # as on a GPU; the capture itself fails

    def refuse(runner, kv) -> None:
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(engine.step, "_capture", refuse)
    with caplog.at_level(logging.WARNING, logger="text4seg_ros.engines.cuda_graphs"):
        tokens = _decode(seg, engine.make_step(prefix), engine.cache(prefix, len(GOALS)))
    assert tokens == reference
    assert caplog.text.count("cannot be captured") == 1  # logged once, then eager
    assert "qwen2_vl" in caplog.text and engine.step.replays == 0


def _on_cuda(backbone: str, tmp_path: Path) -> tuple:
    """A tiny model on CUDA with a frame set (skips without a device), its prefix, the eager
    tokens of GOALS over it and a CUDA-graph engine."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    path = build_tiny_model(backbone, tmp_path / backbone, seed=3)
    seg = Segmenter.from_pretrained(path, grid=16, max_instances=4, device="cuda")
    seg.set_image(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    prefix = seg._prefix
    reference = _decode(seg, seg._step, prefix.cache(len(GOALS)))
    return seg, prefix, reference, make_engine("torch", seg.model, seg.backbone, cuda_graphs=True)


@pytest.mark.gpu
@pytest.mark.parametrize("backbone", ["llava", "qwen2_vl", "internvl"])
def test_cuda_graphs_replay_with_identical_tokens(backbone: str, tmp_path: Path) -> None:
    seg, prefix, reference, engine = _on_cuda(backbone, tmp_path)
    for _ in range(2):
        tokens = _decode(seg, engine.make_step(prefix), engine.cache(prefix, len(GOALS)))
        assert tokens == reference
    assert engine.step.capture and engine.step.captures > 0
    assert engine.step.replays > engine.step.captures  # the second frame replayed


@pytest.mark.gpu
@pytest.mark.parametrize("backbone", ["llava", "qwen2_vl"])
def test_cuda_graphs_capture_again_after_the_cache_grows(
    backbone: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("text4seg_ros.engines.cuda_graphs.EXTRA_SLOTS", 8)
    seg, prefix, reference, engine = _on_cuda(backbone, tmp_path)
    cache = engine.cache(prefix, len(GOALS))
    first, held = cache.generation, []
    step = engine.make_step(prefix)
    original = step._run

    def run_and_hold(r, kv):  # callers may keep a view of the last hidden across a grow
        out = original(r, kv)
        held.append(out[:1])
        return out

    monkeypatch.setattr(step, "_run", run_and_hold)
    assert _decode(seg, step, cache) == reference
    assert engine.kv.generation != first  # grew while decoding
    assert step.capture, "a capture after a grow was refused"
    assert step.captures > len(step.runners)  # captured again on the grown buffers
