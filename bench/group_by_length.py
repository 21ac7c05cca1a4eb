"""Training throughput with length-grouped micro-batches against the plain random order.

The demo recipe's workload, run both ways in the same process tree: the demo's random base model
(``training.demo_base``, question first, G = 8), stage 2's data mix (tabletop scenes of 2 to 6
objects, every goal kind; seeds 100,000 ..), ``training.train`` under DeepSpeed ZeRO-2 on 2 gloo
ranks with ``train_demo.sh``'s options, ``--group_by_length false`` then ``true``, the same
steps. Reported per mode: samples per second over the logged windows after the first (warm-up),
padded and real tokens per micro-batch of the epoch's order (``ChatDataset.lengths``); then the
ratio ``grouped / random``. Ratios, not absolute times, are the result: the 2 cores are shared.

Usage: python bench/group_by_length.py [--steps 60] [--scenes 300]   (about 3 minutes)
Writes bench/results/group_by_length.json.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from pathlib import Path

from common import REPO, demo_base, run_python, training_env, write_speedup

MIX = (
    "res_attr=3,res_size=2,res_spatial=2,gres_multi=1.5,gres_single=1,gres_absent=1.5,"
    "rec=1,openvocab=0.5,instances=0.5"
)  # train_demo.sh's ALL_KINDS
TRAIN = [
    "-m", "training.train", "--tune", "full", "--freeze", "vision,projector,embeddings",
    "--global_batch", "16", "--per_device_batch", "8", "--num_workers", "0",
    "--log_steps", "10", "--max_length", "2048", "--loss_on", "answer",
    "--gradient_checkpointing", "false", "--lr", "3e-3", "--fg_weight", "4", "--save_steps", "0",
]  # fmt: skip


def sample_lengths(data: Path, model: Path) -> list[int]:
    """Token count of every sample of ``data`` as ``training.train`` encodes it for ``model``."""
    import torch

    from training.dataset import ChatDataset
    from training.lora import load_base

    _, processor, backbone = load_base(model, torch.float32)
    return ChatDataset([str(data)], backbone, processor).lengths


def padding(lengths: list[int], grouped: bool) -> dict[str, float]:
    """Padded and real tokens per micro-batch of 8 over rank 0's epoch order."""
    from training.sampling import length_grouped_order

    if grouped:
        order = length_grouped_order(lengths, 42, 0, 0, 2, 8)
    else:
        order = list(range(len(lengths)))
        random.Random(42).shuffle(order)
    batches = [order[i : i + 8] for i in range(0, len(order) - 7, 8)]
    padded = sum(8 * max(lengths[i] for i in b) for b in batches) / len(batches)
    real = sum(sum(lengths[i] for i in b) for b in batches) / len(batches)
    return {"padded_tokens_per_batch": padded, "real_tokens_per_batch": real}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--scenes", type=int, default=300)
    ap.add_argument("--work", type=Path, default=REPO / "build" / "bench_group_by_length")
    args = ap.parse_args()
    start = time.perf_counter()
    env = training_env()
    data = args.work / "data" / "train.jsonl"
    if not data.exists():
        run_python(["-m", "training.data.build", "tabletop", "--first", "100000", "--n-images",
              str(args.scenes), "--objects", "2,6", "--size", "128", "--grid", "8",
              "--goals-per-scene", "6", "--weights", MIX, "--out", str(data)], env)  # fmt: skip
    base = demo_base(args.work / "base", env)
    lengths = sample_lengths(data, base)
    modes: dict[str, dict[str, float]] = {}
    for name, grouped in (("random", False), ("grouped", True)):
        out = args.work / name
        shutil.rmtree(out, ignore_errors=True)
        flag = str(grouped).lower()
        run_python(["-m", "torch.distributed.run", "--nproc_per_node=2",
                    "--master_port=29659", *TRAIN, "--model", str(base), "--data", str(data),
                    "--output_dir", str(out), "--max_steps", str(args.steps),
                    "--group_by_length", flag], env)  # fmt: skip
        log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
        later = log[1:]  # the first window holds start-up
        modes[name] = {
            "samples_per_s": sum(r["samples_s"] for r in later) / len(later),
            "final_loss": log[-1]["loss"],
            **padding(lengths, grouped),
        }
        print(name, modes[name], flush=True)
    write_speedup(
        "group_by_length.json",
        "training.train samples/s, --group_by_length true vs false, 2 gloo ranks",
        modes, "samples_per_s", "random", "grouped", start,
        steps=args.steps, scenes=args.scenes,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
