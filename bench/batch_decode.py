"""Batched decoding bench: a shrinking batch against the batch that keeps finished goals.

One fixed mixed batch per scenario, decoded three ways on the same model in the same run:

* ``kept``: ``constrained_generate(..., shrink=False)``, the previous behaviour: finished goals
  stay in the batch (fed pads, masked) and every row's cache grows by the widest block per call;
* ``shrink``: the default: finished goals leave the batch, dead cache slots are cut;
* ``singles``: one ``constrained_generate`` call per goal, one after the other.

Scenarios (random weights, so B-SD goals list instances up to ``max_instances``, the long tail
that made a batch run as long as its longest goal):

* ``llama``: a tiny Llama (``HFCausalLMStep``), general BPE, G = 16, six R-RLE goals and two
  B-SD goals (``max_instances`` 8);
* ``segmenter_<backbone>_seed<N>``: the Segmenter's own step and prefix cache (tiny random VLM from
  :mod:`text4seg_ros.model.tiny`, 64 x 48 frame, G = 16) with a batch of goals of all five
  kinds (RES, GRES, REC, open vocabulary, B-SD).

Reported per mode: wall seconds (best of ``--repeats``), sequential forward calls, rows fed
(the sum of the batch width over calls), the cache length of the last call; then the ratios
``kept / shrink`` and ``singles / shrink`` and whether every mode produced the same tokens.
Ratios, not absolute times, are the result: this machine's 2 cores are shared.

Usage: python bench/batch_decode.py [--repeats 1] [--goals 16] [--backbone llava] [--seeds 3,5]
(about 6 minutes on 2 cores, most of it the ``kept`` baseline of the long-tail batches)
Writes bench/results/batch_decode.json.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from text4seg_ros.decoding import HFCausalLMStep, constrained_generate, prefill
from text4seg_ros.decoding.general_bpe import train_general_bpe
from text4seg_ros.descriptors.grammar import TokenCodec, bsd_grammar, rrle_grammar
from text4seg_ros.model.segmenter import Segmenter
from text4seg_ros.model.tiny import build_tiny_model, random_llama
from text4seg_ros.model.types import Goal
from text4seg_ros.prompts import Task

from common import write_json

GRID = 16
MAX_INSTANCES = 8


class Recorder:
    """Wraps a DecodeStep; records rows fed and the attention mask length of every call."""

    def __init__(self, inner: Callable) -> None:
        self.inner = inner
        self.widths: list[int] = []
        self.lengths: list[int] = []
        if hasattr(inner, "select_cache"):
            self.select_cache = inner.select_cache

    def __call__(self, ids, pos, mask, cache):
        self.widths.append(int(ids.shape[0]))
        self.lengths.append(int(mask.shape[1]))
        return self.inner(ids, pos, mask, cache)


def _measure(job: Callable[[bool, Recorder], list], step: Callable, repeats: int) -> dict:
    """Run ``job`` in the three modes; returns numbers per mode and the ratios."""
    out: dict[str, Any] = {}
    tokens = {}
    for mode in ("kept", "shrink", "singles"):
        best, rec, results = float("inf"), None, None
        for _ in range(repeats):
            rec = Recorder(step)
            start = time.perf_counter()
            results = job(mode, rec)
            best = min(best, time.perf_counter() - start)
        tokens[mode] = [r.tokens for r in results]
        out[mode] = {
            "seconds": round(best, 3),
            "forward_calls": len(rec.widths),
            "rows_fed": sum(rec.widths),
            "last_cache_length": rec.lengths[-1],
            "max_cache_length": max(rec.lengths),
        }
    out["goal_forward_calls"] = [r.forward_calls for r in results]
    out["goal_tokens"] = [len(t) for t in tokens["shrink"]]
    out["goal_bsd_instances"] = [r.text.count("<ref>") for r in results]  # 0 for R-RLE goals
    out["identical_tokens"] = tokens["kept"] == tokens["shrink"] == tokens["singles"]
    out["kept_over_shrink_time"] = round(out["kept"]["seconds"] / out["shrink"]["seconds"], 2)
    out["singles_over_shrink_time"] = round(out["singles"]["seconds"] / out["shrink"]["seconds"], 2)
    out["kept_over_shrink_rows_fed"] = round(out["kept"]["rows_fed"] / out["shrink"]["rows_fed"], 2)
    return out


def llama_scenario(repeats: int) -> dict:
    codec = TokenCodec(train_general_bpe(1024, 200_000))
    model = random_llama(
        codec.tokenizer.get_vocab_size(), 0, hidden=128, layers=4, max_positions=16384
    )
    step = HFCausalLMStep(model)
    labels = [["cup"], ["the black swan"], ["dining table", "cat"], ["chair"], ["red mug"]]
    grammars: list = [rrle_grammar(codec, labels[i % 5], GRID) for i in range(6)]
    grammars += [bsd_grammar(codec, [lab], 0, GRID, max_instances=MAX_INSTANCES)
                 for lab in ("cup", "chair")]  # fmt: skip
    questions = [f"goal {i}: segment it.\n<seg>" for i in range(6)] + ["cups:\n", "chairs:\n"]
    suffixes = [list(codec.encode(q)) for q in questions]
    prefix = list(codec.encode("You are the eyes of a robot. Answer with a mask.\n"))

    def job(mode: str, rec: Recorder) -> list:
        if mode == "singles":
            out = []
            for g, s in zip(grammars, suffixes):
                cache, n = prefill(step, prefix, 1)
                out += constrained_generate(rec, [g], [s], cache, n)
            return out
        cache, n = prefill(step, prefix, len(grammars))
        return constrained_generate(rec, grammars, suffixes, cache, n, shrink=mode == "shrink")

    result = _measure(job, step, repeats)
    result["batch"] = "6 R-RLE + 2 B-SD goals (max_instances 8), G = 16"
    result["model"] = "Llama, hidden 128, 4 layers, float32, random weights"
    return result


def segmenter_scenario(backbone: str, goals: int, repeats: int, out_dir: str, seed: int) -> dict:
    path = build_tiny_model(backbone, out_dir, seed=seed)
    seg = Segmenter.from_pretrained(path, grid=GRID, max_instances=MAX_INSTANCES)
    frame = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    seg.set_image(frame)
    kinds = [
        lambda i: Goal(f"red cup {i}"),
        lambda i: Goal(f"chair {i}", Task.GRES),
        lambda i: Goal(f"mug {i}", Task.REC),
        lambda i: Goal("", Task.OPEN_VOCAB, classes=("cup", f"table {i}")),
        lambda i: Goal(f"box {i}", Task.INSTANCES),
    ]
    plans = seg.plan([kinds[i % 5](i) for i in range(goals)])
    grammars = [seg.grammar(p) for p in plans]
    suffixes = [seg.suffix_ids(p) for p in plans]
    prefix = seg._prefix
    step = seg._step
    options = dict(pad_token_id=seg.pad_token_id, device=seg.model.device)

    def job(mode: str, rec: Recorder) -> list:
        if mode == "singles":
            out = []
            for g, s in zip(grammars, suffixes):
                out += constrained_generate(
                    rec, [g], [s], prefix.cache(1), prefix.length, **options
                )
            return out
        return constrained_generate(
            rec, grammars, suffixes, prefix.cache(len(grammars)), prefix.length,
            shrink=mode == "shrink", **options,
        )  # fmt: skip

    result = _measure(job, step, repeats)
    result["batch"] = f"{goals} goals, RES/GRES/REC/open-vocab/B-SD in turn, G = 16"
    result["model"] = (
        f"tiny random {backbone} (model/tiny.py, seed {seed}), float32, prefix {prefix.length}"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--goals", type=int, default=16)
    parser.add_argument("--backbone", default="llava")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--seeds",
        default="3,5",
        help="tiny VLM seeds, one scenario each (llava 3: B-SD goals list 8 instances; 5: none)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import tempfile

    scenarios = {"llama": llama_scenario(args.repeats)}
    for seed in (int(v) for v in args.seeds.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            scenarios[f"segmenter_{args.backbone}_seed{seed}"] = segmenter_scenario(
                args.backbone, args.goals, args.repeats, tmp, seed
            )
    for name, res in scenarios.items():
        print(
            f"{name}: kept {res['kept']['seconds']} s, shrink {res['shrink']['seconds']} s, "
            f"singles {res['singles']['seconds']} s; kept/shrink {res['kept_over_shrink_time']}x,"
            f" singles/shrink {res['singles_over_shrink_time']}x; rows fed "
            f"{res['kept']['rows_fed']} -> {res['shrink']['rows_fed']}; identical "
            f"{res['identical_tokens']}"
        )
    payload = {"threads": args.threads, "grid": GRID, "scenarios": scenarios}
    print(write_json("batch_decode.json", payload))


if __name__ == "__main__":
    main()
