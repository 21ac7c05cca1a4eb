"""Decoding at full depth on a GPU: token-by-token ``generate`` vs our decoder, eager and with
CUDA graphs, on real-size architectures with random weights.

Random weights answer nonsense, so an oracle decides every token: the true R-RLE descriptor
(G = 16) of a real mask from ../shared/data (COCO tiny instances, labelled with their class
names). The model still runs every forward pass at full size; only its choice is replaced (the
logits are overwritten with the oracle's one-hot after each call), so all three paths produce
the same tokens and the timings are what a model answering correctly would take:

* ``generate``: ``model.generate`` over the batch of goal prompts (image and prompt per goal),
  one token per forward call, the oracle forced through a logits processor;
* ``eager``: :meth:`Segmenter.set_image` once per frame, then :func:`constrained_generate`
  (jump-forward + verified drafts, shrinking batch) on the backbone's dynamic-cache step;
* ``cuda_graphs``: the same on :mod:`text4seg_ros.engines.cuda_graphs` (static cache, graphs).

Per architecture and goals per frame (1, 4, 8): ms per goal (frame time / goals; the prefix
encode included; ``generate`` encodes the image once per goal), decode ms per goal (after the
prefix; for ``generate`` the same as its frame time), ms per step (decode time / sequential
forward calls), and the floor a step cannot beat: the decoder's weight bytes over the measured
device-to-device copy bandwidth.

Usage: python bench/gpu_decode.py --out FILE [--archs qwen2_vl_2b llava_1_5_7b] [--goals 1 4 8]
       [--frames 2] [--device cuda] [--dtype bfloat16]; ``--dry-run``: tiny architectures on CPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from text4seg_ros.decoding import constrained_generate
from text4seg_ros.decoding.step import select_cache
from text4seg_ros.descriptors import encode_mask
from text4seg_ros.descriptors.rrle import SEG_CLOSE
from text4seg_ros.engines import make_engine
from text4seg_ros.model.segmenter import Segmenter
from text4seg_ros.model.types import Goal

from common import real_masks
from gpu_archs import build, param_bytes

GRID = 16


class ForcedStep:
    """Wraps a decoder step: runs it, then overwrites its logits with the oracle's one-hot.

    ``targets[g]``: goal ``g``'s answer tokens; ``starts[g]``: logical position of its first
    answer token. Tracks which goal each batch row holds through ``select_cache``.
    """

    def __init__(self, inner: Any, targets: list[list[int]], starts: list[int], eos: int) -> None:
        self.inner, self.eos = inner, eos
        self.selects = bool(getattr(inner, "selects", False))
        width = max(map(len, targets)) + 1
        self.truth = torch.full((len(targets), width), eos, dtype=torch.long)
        for g, t in enumerate(targets):
            self.truth[g, : len(t)] = torch.tensor(t, dtype=torch.long)
        self.starts = torch.tensor(starts, dtype=torch.long)
        self.rows = torch.arange(len(targets))
        self.calls = 0

    @property
    def device(self) -> torch.device:
        return self.inner.device if hasattr(self.inner, "device") else torch.device("cpu")

    def __call__(self, ids, pos, mask, cache, select=None):  # noqa: ANN001, ANN204
        self.calls += 1
        if select is not None:
            logits, cache = self.inner(ids, pos, mask, cache, select=select)
        else:
            logits, cache = self.inner(ids, pos, mask, cache)
        k = pos.cpu() + 1 - self.starts[self.rows][:, None]  # (B, T) index into the answer
        k = k.clamp(0, self.truth.shape[1] - 1)
        truth = self.truth[self.rows].gather(1, k)
        if select is not None:
            truth = truth.reshape(-1)[select.cpu()]
        logits.zero_()
        logits.scatter_(-1, truth.to(logits.device)[..., None], 1.0)
        return logits, cache

    def select_cache(self, cache, rows, columns):  # noqa: ANN001, ANN201
        inner = getattr(self.inner, "select_cache", None) or select_cache
        cache = inner(cache, rows, columns)  # may raise NotImplementedError: rows then stay
        if rows is not None:
            self.rows = self.rows[rows.cpu()]
        return cache


class ForceTokens(LogitsProcessor):
    """``generate``'s oracle: row ``r`` gets ``targets[r]``, then EOS."""

    def __init__(self, truth: torch.Tensor, prompt_len: int) -> None:
        self.truth, self.prompt_len = truth, prompt_len

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        k = min(input_ids.shape[1] - self.prompt_len, self.truth.shape[1] - 1)
        forced = torch.full_like(scores, float("-inf"))
        forced.scatter_(1, self.truth[:, k : k + 1].to(scores.device), 0.0)
        return forced


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def copy_bandwidth(device: torch.device, gib: float = 1.0, repeats: int = 10) -> float | None:
    """Device-to-device copy bandwidth in bytes/s, read + write counted (None on CPU)."""
    if device.type != "cuda":
        return None
    n = int(gib * 2**30)
    a = torch.empty(n, dtype=torch.uint8, device=device)
    b = torch.empty_like(a)
    b.copy_(a)
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        b.copy_(a)
    sync(device)
    return 2 * n * repeats / (time.perf_counter() - start)


def goal_cases(seg: Segmenter, masks: list, n: int) -> tuple[list, list, list, list]:
    """``n`` RES goals from real masks: (goals, grammars, suffixes, target tokens)."""
    goals, grammars, suffixes, targets = [], [], [], []
    for _, label, mask in masks[:n]:
        goal = Goal(label)
        (plan,) = seg.plan([goal])
        grammar = seg.grammar(plan)
        answer = plan.head + encode_mask(mask, label, GRID) + SEG_CLOSE
        tokens = list(seg.codec.encode_piece(answer))
        if not grammar.accepts(tokens):
            raise AssertionError(f"the grammar refuses the true answer of {label!r}")
        goals.append(goal)
        grammars.append(grammar)
        suffixes.append(seg.suffix_ids(plan))
        targets.append(tokens)
    return goals, grammars, suffixes, targets


def run_ours(seg: Segmenter, frame: np.ndarray, cases: tuple, engine: Any) -> dict:
    """One frame through our decoder; ``engine`` None: the eager dynamic-cache step."""
    _, grammars, suffixes, targets = cases
    device = seg.model.device
    sync(device)
    t0 = time.perf_counter()
    seg.set_image(frame)
    prefix = seg._prefix
    if engine is None:
        step, cache = seg._step, prefix.cache(len(grammars))
    else:
        step, cache = engine.make_step(prefix), engine.cache(prefix, len(grammars))
    sync(device)
    t1 = time.perf_counter()
    starts = [prefix.length + len(s) for s in suffixes]
    forced = ForcedStep(step, targets, starts, seg.pad_token_id)
    results = constrained_generate(forced, grammars, suffixes, cache, prefix.length,
                                   pad_token_id=seg.pad_token_id, device=device)  # fmt: skip
    sync(device)
    t2 = time.perf_counter()
    return {
        "frame_s": t2 - t0,
        "decode_s": t2 - t1,
        "steps": forced.calls,
        "tokens": [r.tokens for r in results],
    }


def run_generate(seg: Segmenter, frame: np.ndarray, cases: tuple) -> dict:
    """One frame with ``model.generate``: every goal's full prompt, one token per call."""
    from PIL import Image

    _, _, suffixes, targets = cases
    tok, backbone, device = seg.tokenizer, seg.backbone, seg.model.device
    prefix_text = backbone.prompt_prefix()
    # The prompt is re-tokenized whole, as generate users do; the oracle forces the answer.
    texts = [prefix_text + tok.decode(s) for s in suffixes]
    image = Image.fromarray(frame)
    sync(device)
    t0 = time.perf_counter()
    inputs = seg.processor(images=[image] * len(texts), text=texts, return_tensors="pt",
                           padding=True, padding_side="left")  # fmt: skip
    inputs = {k: (v.to(device, seg.model.dtype) if v.is_floating_point() else v.to(device))
              for k, v in inputs.items() if isinstance(v, torch.Tensor)}  # fmt: skip
    eos = seg.pad_token_id
    width = max(map(len, targets)) + 1
    truth = torch.full((len(targets), width), eos, dtype=torch.long)
    for g, t in enumerate(targets):
        truth[g, : len(t)] = torch.tensor(t, dtype=torch.long)
    prompt_len = inputs["input_ids"].shape[1]
    out = seg.model.generate(
        **inputs,
        max_new_tokens=width,
        do_sample=False,
        logits_processor=LogitsProcessorList([ForceTokens(truth.to(device), prompt_len)]),
        eos_token_id=eos,
        pad_token_id=eos,
    )
    sync(device)
    elapsed = time.perf_counter() - t0
    new = out[:, prompt_len:].cpu()
    tokens = [row[: len(t)].tolist() for row, t in zip(new, targets)]
    return {"frame_s": elapsed, "decode_s": elapsed, "steps": int(new.shape[1]), "tokens": tokens}


def bench_arch(name: str, device: torch.device, dtype: torch.dtype, goal_counts: list[int],
               frames: int, masks: list, bandwidth: float | None) -> dict:  # fmt: skip
    """Every method and goal count on one architecture."""
    t0 = time.perf_counter()
    model, processor, backbone = build(name, device, dtype, GRID)
    seg = Segmenter(model, processor, backbone, grid=GRID)
    build_s = time.perf_counter() - t0
    decoder = model.model.language_model
    head, embed = model.get_output_embeddings(), model.get_input_embeddings()
    weights = param_bytes(decoder)
    if head.weight.data_ptr() != embed.weight.data_ptr():  # tied: counted with the decoder
        weights += param_bytes(head)
    floor_ms = None if bandwidth is None else 1000 * weights / bandwidth
    engine = make_engine("torch", model, seg.backbone, cuda_graphs=True, max_rows=max(goal_counts))
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {
        "build_s": round(build_s, 1),
        "decoder_weight_bytes": weights,
        "floor_ms_per_step": None if floor_ms is None else round(floor_ms, 3),
        "cuda_graphs_captured": engine.step.capture,
        "per_goals": {},
    }
    for n in goal_counts:
        cases = goal_cases(seg, masks, n)
        methods = {
            "generate": lambda f, c=cases: run_generate(seg, f, c),
            "eager": lambda f, c=cases: run_ours(seg, f, c, None),
            "cuda_graphs": lambda f, c=cases: run_ours(seg, f, c, engine),
        }
        row: dict[str, Any] = {"answer_tokens_per_goal": float(np.mean([len(t) for t in cases[3]]))}
        tokens = {}
        for method, run in methods.items():
            warm = time.perf_counter()
            run(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))  # warm-up (graph capture)
            warm_s = time.perf_counter() - warm
            runs = [run(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)) for _ in range(frames)]
            best = min(runs, key=lambda r: r["frame_s"])
            tokens[method] = best["tokens"]
            ms_step = 1000 * best["decode_s"] / best["steps"]
            row[method] = {
                "ms_per_goal": round(1000 * best["frame_s"] / n, 2),
                "decode_ms_per_goal": round(1000 * best["decode_s"] / n, 2),
                "ms_per_step": round(ms_step, 3),
                "steps": best["steps"],
                "warmup_s": round(warm_s, 2),
                "step_over_floor": None if floor_ms is None else round(ms_step / floor_ms, 2),
            }
        row["identical_tokens"] = tokens["generate"] == tokens["eager"] == tokens["cuda_graphs"]
        row["generate_over_cuda_graphs"] = round(
            row["generate"]["ms_per_goal"] / row["cuda_graphs"]["ms_per_goal"], 2
        )
        row["eager_over_cuda_graphs"] = round(
            row["eager"]["ms_per_goal"] / row["cuda_graphs"]["ms_per_goal"], 2
        )
        row["eager_over_cuda_graphs_decode"] = round(
            row["eager"]["decode_ms_per_goal"] / row["cuda_graphs"]["decode_ms_per_goal"], 2
        )
        out["per_goals"][str(n)] = row
    out["graph_captures"] = engine.step.captures
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--archs", nargs="+", default=["qwen2_vl_2b", "llava_1_5_7b"])
    p.add_argument("--goals", nargs="+", type=int, default=[1, 4, 8])
    p.add_argument("--frames", type=int, default=2, help="timed frames per setting (best kept)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--dry-run", action="store_true", help="tiny architectures on CPU")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    if args.dry_run:
        args.archs = [a.replace("_2b", "_tiny").replace("_1_5_7b", "_tiny") for a in args.archs]
        args.device, args.dtype, args.goals, args.frames = "cpu", "float32", [1, 2], 1
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    masks = [m for m in real_masks()["coco_tiny16"] if m[2].any()]
    bandwidth = copy_bandwidth(device)
    payload: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": args.dtype,
        "grid": GRID,
        "copy_bandwidth_GBps": None if bandwidth is None else round(bandwidth / 1e9, 1),
        "oracle": "true R-RLE answers of real COCO masks; logits overwritten after each call",
        "archs": {},
    }
    for name in args.archs:
        payload["archs"][name] = bench_arch(
            name, device, dtype, args.goals, args.frames, masks, bandwidth
        )
        args.out.write_text(json.dumps(payload, indent=2) + "\n")  # partial results survive
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the architecture's model is gone with bench_arch
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
