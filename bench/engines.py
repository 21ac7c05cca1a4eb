"""Engines bench: ms per goal per engine, the official token-by-token way as baseline, real
widths, and the decode loop's own cost per step; all in one run on the same frames and goals.

Sections (one JSON, bench/results/engines.json, and a Markdown table printed for docs/engines.md):

* ``engines``: the demo model (``models/demo``, at its own grid; without it, a tiny random LLaVA
  of the demo's shape: hidden 128, 5 language + 2 vision layers, 64 px input) on two sets of
  frames: real COCO frames (../shared/data/coco_tiny16/images) with the frame's class names as
  goals, and, with the demo model, held-out tabletop scenes (``text4seg_ros.demo.scenes``: the
  scenes and goals ``make demo`` evaluates, where the demo model writes real masks, not
  ``others`` everywhere); 1, 4 and 8 goals per frame, per engine (``torch``, ``onnxruntime``;
  ``tensorrt`` where it runs): ms per goal (``Segmenter.segment``: decode and reading the answer
  at image size; the decode alone; and with the frame's encoding), sequential forward calls per
  goal, answer tokens per second, and whether every engine wrote the same descriptors as torch.
  With a question-first model (the demo model: one prefix per goal) at 4 and 8 goals, also the
  same goals decoded goal after goal (``Segmenter(batch_prefixes=False)``) against one batch
  over the stacked prefixes (the default): ms per goal, sequential decoder calls per frame, and
  whether both wrote the same descriptors.
  Baseline, the official way: ``model.generate`` one goal at a time (image and prompt encoded
  per goal), greedy, no grammar, token by token, for as many tokens as our answer to that goal.
* ``real_width``: the Qwen2-VL-2B and LLaVA-1.5-7B language models at their real widths and
  vocabularies (random weights, ``--layers`` layers: time per layer scales), a prefix as long as
  the image + prompt; the tokens are decided by the teacher-forced oracle on real COCO masks
  (R-RLE, G = 16) while the real network runs every forward (output head at the asked positions).
  Wall time per goal of ours (jump-forward; + drafts) against token-by-token decoding (one
  forward per token), same answers.
* ``loop``: the loop's own cost per sequential step and per goal and step (wall time minus the
  time inside the step; the best of 3 passes) with a zero-cost step (the oracle, logits only at
  the asked positions), for answers of growing length (G = 8, 16, 32; R-RLE and B-SD), 1 and 8
  goals per batch.

Usage: python bench/engines.py [--frames 6] [--layers 2] [--engines torch onnxruntime]
On an NVIDIA GPU with tensorrt installed (TensorRT vs torch at full depth):
    python bench/engines.py --device cuda --engines torch onnxruntime tensorrt --layers 0
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from text4seg_ros.decoding import HFCausalLMStep, OracleStep, constrained_generate, greedy_generate
from text4seg_ros.decoding.general_bpe import train_general_bpe
from text4seg_ros.descriptors import encode_mask
from text4seg_ros.descriptors.bsd import encode_instance
from text4seg_ros.descriptors.grammar import TokenCodec, bsd_grammar, rrle_grammar
from text4seg_ros.descriptors.rrle import SEG_CLOSE, SEG_OPEN
from text4seg_ros.engines import EngineUnavailable
from text4seg_ros.model.segmenter import Segmenter
from text4seg_ros.model.tiny import build_tiny
from text4seg_ros.model.types import Goal

from common import REPO, real_masks, require_data, write_json

GOALS_PER_FRAME = (1, 4, 8)
LOOP_REPEATS = 3  # steady-state passes of the loop-cost section; the best one is reported
REAL_WIDTHS = {  # language models of the published backbones (config.json of the HF releases)
    "qwen2_vl_2b": {
        "family": "qwen2",
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "tie_word_embeddings": True,
        "full_layers": 28,
        "prefix": 330,  # 448 x 448 frame: 256 image tokens + chat prefix
    },
    "llava_1.5_7b": {
        "family": "llama",
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "vocab_size": 32064,
        "tie_word_embeddings": False,
        "full_layers": 32,
        "prefix": 620,  # 576 image tokens + vicuna prefix
    },
}


# -- section 1: engines on the demo model -------------------------------------------------------
def coco_frames(n: int) -> list[tuple[np.ndarray, list[str]]]:
    """``n`` real COCO frames with their class names (most instances first)."""
    root = require_data("coco_tiny16")
    queries = json.loads((root / "category_queries_derived.json").read_text())
    by_image: dict[str, list[tuple[int, str]]] = {}
    for q in queries:
        by_image.setdefault(q["image"], []).append((-q["n_instances"], q["category"]))
    out = []
    for image in sorted(by_image)[:n]:
        rgb = np.asarray(Image.open(root / image).convert("RGB"))
        out.append((rgb, [c for _, c in sorted(by_image[image])]))
    return out


def coco_workload(n: int) -> list[tuple[np.ndarray, list[Goal]]]:
    """``n`` real COCO frames, each with its class names as goals."""
    return [(rgb, [Goal(c.replace("_", " ")) for c in names]) for rgb, names in coco_frames(n)]


def tabletop_workload(n: int) -> list[tuple[np.ndarray, list[Goal]]]:
    """The first ``n`` held-out tabletop scenes ``make demo`` evaluates, with their goals (up to
    8 per frame, every goal kind in turn: :func:`text4seg_ros.demo.scenes.select_goals`)."""
    from text4seg_ros.demo.scenes import select_goals
    from training.data.tabletop import GOAL_KINDS, draw_tabletop, scene_seed, tabletop_goals

    out = []
    for i in range(n):
        seed = scene_seed("heldout", i)
        scene = draw_tabletop(seed, size=(128, 128))
        picked = select_goals(tabletop_goals(scene, seed), i, 8, GOAL_KINDS)
        out.append((scene.image, [Goal(g.text, g.task, classes=tuple(g.classes)) for g in picked]))
    return out


def goals_for(goals: list[Goal], k: int) -> list[Goal]:
    """``k`` of a frame's goals (cycled when it has fewer)."""
    return [goals[i % len(goals)] for i in range(k)]


def demo_model(device: str) -> tuple[Any, Any, Any, str, int]:
    """The demo model at its own grid and prompt layout (its Backbone), or a tiny random LLaVA
    of its shape (grid 16, the image-first layout)."""
    path = REPO / "models" / "demo"
    if (path / "config.json").is_file():
        seg = Segmenter.from_pretrained(path, device=device)
        return seg.model, seg.processor, seg.backbone, "models/demo", seg.grid
    model, processor = build_tiny(
        "llava", seed=0, hidden=128, layers=5, vision_hidden=64, vision_layers=2, image_size=64
    )
    what = "tiny random LLaVA of the demo's shape (hidden 128, 5+2 layers, 64 px)"
    return model.to(device), processor, "llava", what, 16


def official_generate(seg: Segmenter, image: np.ndarray, goal: Goal, tokens: int) -> float:
    """Seconds for the official way: full prompt per goal, greedy ``generate``, no grammar."""
    from text4seg_ros.model.answers import plan_goal

    plan = plan_goal(goal, 0, seg.descriptor)
    text = seg.backbone.prompt_prefix(seg.system, plan.question) + seg.backbone.prompt_suffix(
        plan.question, plan.prompt_answer
    )
    inputs = seg.processor(images=[Image.fromarray(image)], text=[text], return_tensors="pt")
    inputs = {k: v.to(seg.model.device) for k, v in inputs.items() if torch.is_tensor(v)}
    start = time.perf_counter()
    with torch.inference_mode():
        seg.model.generate(
            **inputs,
            max_new_tokens=tokens,
            min_new_tokens=tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=seg.pad_token_id,
        )
    return time.perf_counter() - start


def bench_engines(args: argparse.Namespace, folder: Path) -> dict:
    model, processor, backbone, what, grid = demo_model(args.device)
    workloads = {"coco": ("real COCO frames, their class names as goals", coco_workload)}
    if what == "models/demo":
        workloads["tabletop"] = (
            "held-out tabletop scenes (make demo's), their goals",
            tabletop_workload,
        )
    segmenters: dict[str, Segmenter] = {}
    skipped = {}
    for name in args.engines:
        options = {"folder": folder} if name != "torch" else None
        try:
            segmenters[name] = Segmenter(
                model, processor, backbone, grid=grid, engine=name, engine_options=options
            )
        except EngineUnavailable as err:
            skipped[name] = str(err)
    out: dict = {"model": what, "grid": grid, "skipped": skipped, "workloads": {}}
    if what == "models/demo":  # which weights: a retrained demo model makes this run stale
        weights = REPO / "models" / "demo" / "model.safetensors"
        out["model_md5"] = hashlib.md5(weights.read_bytes()).hexdigest()
    for key, (description, load) in workloads.items():
        frames = load(args.frames)
        out["workloads"][key] = {
            "frames": len(frames),
            "what": description,
            "per_goals": _bench_frames(segmenters, frames, key),
        }
    return out


def _bench_frames(segmenters: dict[str, Segmenter], frames: list, label: str) -> dict:
    """Every engine on ``frames`` at 1, 4 and 8 goals per frame (drafts on), then one goal per
    frame with drafts off; per row the measures of the module doc."""
    ref = segmenters["torch"]
    out: dict = {}
    # (goals per frame, draft tokens): the decoder's default, then one goal per frame with
    # drafts off (blocks of a few tokens: the engines' per-call overhead shows)
    for k, drafts in [(k, 64) for k in GOALS_PER_FRAME] + [(1, 0)]:
        for seg in segmenters.values():
            seg.max_draft_tokens = drafts
        # engines take turns on every frame, so a burst of load on the shared machine hits
        # each engine alike; each frame is encoded once untimed first (warm-up of its size)
        acc = {
            name: {"encode": 0.0, "decode": 0.0, "generate": 0.0, "calls": [], "tokens": 0,
                   "answers": [], "one_by_one": 0.0, "one_by_one_answers": [],
                   "frame_calls": [], "one_by_one_frame_calls": []}
            for name in segmenters
        }  # fmt: skip
        # question first, several goals: the same goals decoded goal after goal as baseline
        one_by_one = k > 1 and drafts and ref.backbone.per_goal_prefix
        tokens_ref: list[int] = []
        for image, goals in frames:  # untimed: the goals' grammar states are built once
            for seg in segmenters.values():
                seg.set_image(image)
                seg.segment(goals_for(goals, k))
        for image, goals in frames:
            for name, seg in segmenters.items():
                a = acc[name]
                seg.set_image(image)
                start = time.perf_counter()
                seg.set_image(image)
                mid = time.perf_counter()
                results = seg.segment(goals_for(goals, k))
                end = time.perf_counter()
                a["encode"] += mid - start
                a["decode"] += end - mid
                a["generate"] += results[0].timings.decode_s
                # sequential decoder calls of the frame: a goal counts every call it was in,
                # so one batch takes its longest goal's (goal after goal: the sum, below)
                a["frame_calls"].append(max(r.model_steps for r in results))
                for r in results:
                    a["calls"].append(r.model_steps)
                    n = len(seg.codec.encode_piece(r.descriptor))
                    a["tokens"] += n
                    a["answers"].append(r.descriptor)
                    if name == "torch":
                        tokens_ref.append(n)
                if one_by_one:
                    seg.batch_prefixes = False
                    start = time.perf_counter()
                    alone = seg.segment(goals_for(goals, k))
                    a["one_by_one"] += time.perf_counter() - start
                    seg.batch_prefixes = True
                    a["one_by_one_answers"] += [r.descriptor for r in alone]
                    a["one_by_one_frame_calls"].append(sum(r.model_steps for r in alone))
        row: dict = {}
        n_goals = len(frames) * k
        for name, a in acc.items():
            row[name] = {
                "ms_per_goal": 1000 * a["decode"] / n_goals,
                "ms_decode_only_per_goal": 1000 * a["generate"] / n_goals,
                "ms_per_goal_with_encode": 1000 * (a["decode"] + a["encode"]) / n_goals,
                "ms_encode_per_frame": 1000 * a["encode"] / len(frames),
                "calls_per_goal": float(np.mean(a["calls"])),
                "tokens_per_goal": a["tokens"] / n_goals,
                "tokens_per_s": a["tokens"] / a["decode"],
                "same_descriptors_as_torch": a["answers"] == acc["torch"]["answers"],
            }
            if one_by_one:
                row[name]["decoder_calls_per_frame"] = float(np.mean(a["frame_calls"]))
                row[name]["decoder_calls_per_frame_goal_after_goal"] = float(
                    np.mean(a["one_by_one_frame_calls"])
                )
                row[name]["ms_per_goal_goal_after_goal"] = 1000 * a["one_by_one"] / n_goals
                row[name]["batched_speedup_vs_goal_after_goal"] = a["one_by_one"] / a["decode"]
                row[name]["goal_after_goal_same_descriptors"] = (
                    a["one_by_one_answers"] == a["answers"]
                )
        if k == 1 and drafts:  # the official way, one goal at a time (its cost does not batch)
            total = 0.0
            for (image, goals), n in zip(frames, tokens_ref):
                total += official_generate(ref, image, goals_for(goals, 1)[0], max(1, n))
            row["official_generate"] = {
                "ms_per_goal": 1000 * total / len(frames),
                "calls_per_goal": float(np.mean(tokens_ref)),
                "tokens_per_s": sum(tokens_ref) / total,
            }
            for name in segmenters:
                row[name]["speedup_vs_official"] = (
                    row["official_generate"]["ms_per_goal"] / row[name]["ms_per_goal"]
                )
        for name in segmenters:
            if name != "torch":
                row[name]["speedup_vs_torch"] = (
                    row["torch"]["ms_per_goal"] / row[name]["ms_per_goal"]
                )
                row[name]["decode_only_speedup_vs_torch"] = (
                    row["torch"]["ms_decode_only_per_goal"] / row[name]["ms_decode_only_per_goal"]
                )
        key = str(k) if drafts else f"{k}, drafts off"
        out[key] = row
        print(
            f"engines {label} {key}: "
            + ", ".join(f"{n} {v['ms_per_goal']:.1f} ms" for n, v in row.items())
        )
    return out


# -- section 2: real widths with the oracle deciding --------------------------------------------
class RealNetworkOracle:
    """A decode step that runs the real network on every block (its cost) and returns the
    teacher-forced oracle's logits at the asked positions (its decisions)."""

    selects = True

    def __init__(self, net: HFCausalLMStep, oracle: OracleStep) -> None:
        self.net, self.oracle = net, oracle
        self.calls = 0

    def __call__(self, ids, pos, mask, cache, select=None):
        self.calls += 1
        net_cache, rows = cache
        _, net_cache = self.net(ids, pos, mask, net_cache, select=select)
        logits, rows = self.oracle(ids, pos, mask, rows, select=select)
        return logits, (net_cache, rows)

    def select_cache(self, cache, rows, columns):
        from text4seg_ros.decoding import select_cache

        net_cache, oracle_rows = cache
        return (
            select_cache(net_cache, rows, columns),
            self.oracle.select_cache(oracle_rows, rows, columns),
        )


def real_width_model(spec: dict, layers: int) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    kw = {k: spec[k] for k in spec if k not in ("family", "full_layers", "prefix")}
    kw["num_hidden_layers"] = layers or spec["full_layers"]
    torch.manual_seed(0)
    if spec["family"] == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**kw, max_position_embeddings=32768))
    else:
        model = LlamaForCausalLM(LlamaConfig(**kw, max_position_embeddings=4096))
    return model.eval()


def bench_real_width(args: argparse.Namespace, codec: TokenCodec) -> dict:
    masks = real_masks()["coco_tiny16"]
    picks = [masks[i] for i in np.linspace(0, len(masks) - 1, args.real_goals).astype(int)]
    goals = []
    for _, label, mask in picks:
        target = list(codec.encode_piece(SEG_OPEN + encode_mask(mask, label, 16) + SEG_CLOSE))
        goals.append((rrle_grammar(codec, [label], 16, head=SEG_OPEN), target))
    out: dict = {"layers": args.layers, "goals": len(goals), "grid": 16, "models": {}}
    for name, spec in REAL_WIDTHS.items():
        model = real_width_model(spec, args.layers).to(args.device)
        net = HFCausalLMStep(model)
        prefix_len = spec["prefix"]
        prefix_ids = torch.randint(100, 1000, (1, prefix_len), device=args.device)
        with torch.inference_mode():
            base = model(input_ids=prefix_ids, use_cache=True).past_key_values
        suffix = [101, 102, 103, 104, 105, 106, 107, 108]
        modes = {
            "token_by_token": None,
            "jump_forward": 0,
            "jump_forward+drafts": 64,
            "jump_forward+drafts16": 16,
        }
        row: dict = {m: {"seconds": 0.0, "calls": 0, "tokens": 0, "same": True} for m in modes}
        for grammar, target in goals:
            start_pos = prefix_len + len(suffix)
            for mode, drafts in modes.items():
                oracle = OracleStep([target], [start_pos], codec.tokenizer.get_vocab_size())
                step = RealNetworkOracle(net, oracle)
                cache = (_copy_cache(base), None)
                t0 = time.perf_counter()
                if drafts is None:
                    res = greedy_generate(
                        step, [suffix], len(target), prefix_cache=cache, prefix_len=prefix_len,
                        device=args.device,
                    )[0]  # fmt: skip
                else:
                    res = constrained_generate(
                        step, [grammar], [suffix], prefix_cache=cache, prefix_len=prefix_len,
                        max_draft_tokens=drafts, device=args.device,
                    )[0]  # fmt: skip
                row[mode]["seconds"] += time.perf_counter() - t0
                row[mode]["calls"] += step.calls
                row[mode]["tokens"] += len(res.tokens)
                row[mode]["same"] &= res.tokens == target
        for mode in modes:
            row[mode]["ms_per_goal"] = 1000 * row[mode]["seconds"] / len(goals)
            row[mode]["calls_per_goal"] = row[mode]["calls"] / len(goals)
        for mode in ("jump_forward", "jump_forward+drafts", "jump_forward+drafts16"):
            row[mode]["speedup_vs_token_by_token"] = (
                row["token_by_token"]["seconds"] / row[mode]["seconds"]
            )
        out["models"][name] = row
        print(
            f"real width {name}: token-by-token {row['token_by_token']['ms_per_goal']:.0f} ms, "
            f"ours {row['jump_forward+drafts']['ms_per_goal']:.0f} ms "
            f"({row['jump_forward+drafts']['speedup_vs_token_by_token']:.1f}x)"
        )
        del model, net, base
    return out


def _copy_cache(cache: Any) -> Any:
    from transformers import DynamicCache

    data = [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]
    return DynamicCache(ddp_cache_data=data)


# -- section 3: the loop's own cost --------------------------------------------------------------
class TimedStep:
    """Wraps a step and adds up the wall and CPU seconds spent inside it."""

    selects = True

    def __init__(self, step: OracleStep) -> None:
        self.step, self.wall, self.cpu, self.calls = step, 0.0, 0.0, 0

    def __call__(self, *args, **kwargs):
        wall, cpu = time.perf_counter(), time.process_time()
        out = self.step(*args, **kwargs)
        self.wall += time.perf_counter() - wall
        self.cpu += time.process_time() - cpu
        self.calls += 1
        return out

    def select_cache(self, cache, rows, columns):
        return self.step.select_cache(cache, rows, columns)


def _loop_pass(goals: list, batch: int, vocab: int) -> dict:
    """One pass over ``goals`` in batches: loop seconds (wall and CPU) outside the step."""
    wall = cpu = steps = goal_steps = 0.0
    for i in range(0, len(goals), batch):
        chunk = goals[i : i + batch]
        step = TimedStep(OracleStep([t for _, t in chunk], [3] * len(chunk), vocab))
        w0, c0 = time.perf_counter(), time.process_time()
        res = constrained_generate(step, [g for g, _ in chunk], [[1, 2, 3]] * len(chunk))
        wall += time.perf_counter() - w0 - step.wall
        cpu += time.process_time() - c0 - step.cpu
        steps += step.calls
        goal_steps += sum(r.forward_calls for r in res)
        assert all(r.tokens == t for r, (_, t) in zip(res, chunk))
    return {"steps": steps, "goal_steps": goal_steps, "wall": wall, "cpu": cpu}


def bench_loop(codec: TokenCodec, n_masks: int) -> dict:
    """The loop's own cost per sequential step, and per goal and step (a step of a batch of 8
    does the loop's work for every goal in it). The first pass over a new label set also
    builds its automaton states (once per label set: a standing goal reuses them every frame);
    the steady state is the best of ``LOOP_REPEATS`` further passes (by CPU time: on shared
    cores a pass can lose its core mid-way). CPU time is reported beside wall time because
    this machine's cores are shared: wall time includes waiting for a core."""
    masks = real_masks()["coco_tiny16"][:n_masks]
    vocab = codec.tokenizer.get_vocab_size()
    out: dict = {}
    for kind in ("rrle", "bsd"):
        for grid in (8, 16, 32):
            goals = []
            for _, label, mask in masks:
                if kind == "rrle":
                    text = SEG_OPEN + encode_mask(mask, label, grid) + SEG_CLOSE
                    grammar = rrle_grammar(codec, [label], grid, head=SEG_OPEN)
                    target = list(codec.encode_piece(text))
                else:
                    grammar = bsd_grammar(codec, [label], 0, grid)
                    target = list(codec.encode_piece(encode_instance(mask, label, grid))) + [0]
                goals.append((grammar, target))
            tokens = sum(len(t) for _, t in goals) / len(goals)
            for batch in (1, 8):
                cold = _loop_pass(goals, batch, vocab)
                passes = [_loop_pass(goals, batch, vocab) for _ in range(LOOP_REPEATS)]
                warm = min(passes, key=lambda p: p["cpu"])
                out[f"{kind}_g{grid}_b{batch}"] = {
                    "tokens_per_goal": tokens,
                    "sequential_steps": warm["steps"],
                    "goal_steps": warm["goal_steps"],
                    "loop_ms_per_step": 1000 * warm["wall"] / warm["steps"],
                    "loop_cpu_ms_per_step": 1000 * warm["cpu"] / warm["steps"],
                    "loop_cpu_ms_per_goal_step": 1000 * warm["cpu"] / warm["goal_steps"],
                    "first_pass_loop_ms_per_step": 1000 * cold["wall"] / cold["steps"],
                }
    return out


def table(result: dict) -> str:
    lines = [
        "| goals/frame | engine | ms/goal | calls/goal | tokens/s | same as torch | vs torch |",
        "|---|---|---|---|---|---|---|",
    ]
    for frames, workload in result["engines"]["workloads"].items():
        for k, row in workload["per_goals"].items():
            for name, v in row.items():
                same = v.get("same_descriptors_as_torch", "")
                speed = v.get("speedup_vs_torch", "")
                lines.append(
                    f"| {frames} {k} | {name} | {v['ms_per_goal']:.1f} | "
                    f"{v['calls_per_goal']:.1f} | {v['tokens_per_s']:.0f} | {same} | "
                    + (f"{speed:.2f}x" if speed != "" else "")
                    + " |"
                )
    lines += [
        "",
        "| real width | mode | ms/goal | calls/goal | vs token-by-token |",
        "|---|---|---|---|---|",
    ]
    for name, row in result["real_width"]["models"].items():
        for mode, v in row.items():
            sp = v.get("speedup_vs_token_by_token")
            lines.append(
                f"| {name} | {mode} | {v['ms_per_goal']:.0f} | {v['calls_per_goal']:.1f} | "
                + (f"{sp:.1f}x" if sp else "1.0x")
                + " |"
            )
    lines += ["", "| loop cost | tokens/goal | wall ms/step | CPU ms/step |", "|---|---|---|---|"]
    for key, v in result["loop"].items():
        lines.append(
            f"| {key} | {v['tokens_per_goal']:.0f} | {v['loop_ms_per_step']:.3f} | "
            f"{v['loop_cpu_ms_per_step']:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=6, help="COCO frames per engine and batch size")
    p.add_argument("--layers", type=int, default=2, help="real-width layers (0: full depth)")
    p.add_argument("--real-goals", type=int, default=3, help="real masks for the real widths")
    p.add_argument("--loop-masks", type=int, default=48, help="real masks for the loop cost")
    p.add_argument("--device", default="cpu")
    p.add_argument("--engines", nargs="+", default=["torch", "onnxruntime"])
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="intra-op threads of torch and onnxruntime (1: the cores are shared; a pool of 2 "
        "threads on 2 busy cores stalls for seconds)",
    )
    p.add_argument("--skip", nargs="*", default=[], choices=["engines", "real_width", "loop"])
    p.add_argument(
        "--load-note",
        default="2 shared cores; other jobs (tests, a training run) ran at the same time: "
        "compare ratios within this run, not absolute times",
        help="what else ran on the machine (recorded in the JSON; say so when it was quiet)",
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    start = time.perf_counter()
    codec = TokenCodec(train_general_bpe(1024, 200_000))
    result: dict = {
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "load_note": args.load_note,
        "tokenizer": "byte-level BPE (Qwen2 regex, digits split), vocab 1024, general text",
    }
    with tempfile.TemporaryDirectory() as tmp:
        if "engines" not in args.skip:
            result["engines"] = bench_engines(args, Path(tmp))
    if "loop" not in args.skip:
        result["loop"] = bench_loop(codec, args.loop_masks)
        print(
            "loop ms/step: "
            + ", ".join(f"{k} {v['loop_ms_per_step']:.3f}" for k, v in result["loop"].items())
        )
    if "real_width" not in args.skip:
        result["real_width"] = bench_real_width(args, codec)
    result["seconds"] = time.perf_counter() - start
    suffix = "" if args.device == "cpu" else f"_{args.device.split(':')[0]}"
    path = write_json(f"engines{suffix}.json", result)
    if not args.skip:
        print(table(result))
    print(f"wrote {path} in {result['seconds']:.0f} s")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
