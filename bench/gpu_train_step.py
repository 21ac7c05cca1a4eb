"""One DeepSpeed ZeRO-2 LoRA training step at full size: peak memory, samples/s, checkpoint size.

The LLaVA-1.5-7B architecture with random weights (:mod:`gpu_archs`), world size 1, the recipe's
per-device batch (16) with activation checkpointing, precision ``auto`` (bf16 on the H200),
LoRA r64 on the language model and projector, through the trainer's own pieces
(:func:`training.train.prepare_model`, :func:`~training.train.deepspeed_config`,
:func:`~training.train.init_distributed`, :mod:`training.checkpoints`, the dataset encoder and
collator). Samples: real COCO masks as G = 16 R-RLE answers to class-name questions, on a
640 x 480 frame (the processor pads it to 336 x 336; image content does not change the cost).

Reported: peak GPU memory of the steps, samples per second over the timed optimizer steps (the
first is a warm-up), mean tokens per sample, and the size on disk of one checkpoint (LoRA
weights and optimizer state only, :mod:`training.checkpoints`).

Usage: python bench/gpu_train_step.py --out FILE [--steps 3]; ``--dry-run``: tiny LLaVA on CPU
with a per-device batch of 2.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import get_peft_model
from PIL import Image

from text4seg_ros.model.registry import get_backbone
from text4seg_ros.prompts import Task, format_answer, question
from training import checkpoints
from training.data.sample import ChatSample, mask_body
from training.dataset import Collator, encode_sample
from training.lora import lora_config
from training.recipe import Recipe
from training.train import deepspeed_config, init_distributed, prepare_model, resolve_precision

from common import real_masks
from gpu_archs import build

GRID = 16


def samples(folder: Path, n: int) -> list[ChatSample]:
    """``n`` samples: real COCO masks (cycled) answered on one 640 x 480 frame."""
    frame = folder / "frame.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(frame)
    masks = [m for m in real_masks()["coco_tiny16"] if m[2].any()]
    out = []
    for i in range(n):
        _, label, mask = masks[i % len(masks)]
        out.append(ChatSample(
            id=f"s{i}", image=str(frame), question=question(Task.RES, label),
            answer=format_answer(Task.RES, mask_body(mask, label, GRID), label),
            task=Task.RES.value, grid=GRID,
        ))  # fmt: skip
    return out


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--arch", default="llava_1_5_7b")
    p.add_argument("--steps", type=int, default=3, help="optimizer steps (the first: warm-up)")
    p.add_argument("--dry-run", action="store_true", help="tiny LLaVA on CPU, batch 2")
    p.add_argument("--precision", default=None, help="override the recipe's (auto)")
    args = p.parse_args()
    recipe = Recipe(model="random", data=["-"], output_dir="-")
    if args.precision:
        recipe.precision = args.precision
    batch = recipe.per_device_batch
    arch = args.arch
    if args.dry_run:
        arch, batch = "llava_tiny", 2
    os.environ.setdefault("MASTER_PORT", "29571")
    rank, world, device = init_distributed()
    precision = resolve_precision(recipe.precision)
    if args.precision and device.type == "cpu":
        precision = args.precision  # CPU checks of the bf16 path (resolve says fp32 on CPU)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
    recipe.per_device_batch, recipe.global_batch = batch, batch * world  # one micro-batch/step
    import deepspeed  # after init_distributed (CPU: the shm op patch)

    t0 = time.perf_counter()
    model, processor, backbone = build(arch, device, dtype, GRID)
    prepare_model(model, recipe.gradient_checkpointing)
    model = get_peft_model(model, lora_config(backbone, recipe.lora_r, recipe.lora_alpha,
                                              recipe.lora_dropout))  # fmt: skip
    build_s = time.perf_counter() - t0
    trainable = [q for q in model.parameters() if q.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=recipe.peak_lr(backbone),
                                  betas=(recipe.adam_beta1, recipe.adam_beta2),
                                  weight_decay=recipe.weight_decay,
                                  fused=device.type == "cuda")  # fmt: skip
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, config=deepspeed_config(recipe, world, precision)
    )
    spec = get_backbone(backbone)
    with tempfile.TemporaryDirectory() as tmp:
        items = [encode_sample(s, spec, processor, recipe.max_length)
                 for s in samples(Path(tmp), batch)]  # fmt: skip
        data = Collator(processor.tokenizer.pad_token_id)(items)
        data = {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device))
                for k, v in data.items()}  # fmt: skip
        engine.train()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times, losses = [], []
        for _ in range(args.steps):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            loss = engine(**data).loss
            engine.backward(loss)
            engine.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
            losses.append(float(loss.detach()))
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
        ckpt = Path(tmp) / "checkpoints"
        checkpoints.save(engine, ckpt, 1, recipe.save_total_limit, True)
        ckpt_bytes = folder_bytes(ckpt)
    timed = times[1:] or times
    result: dict[str, Any] = {
        "arch": arch,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "precision": precision,
        "world_size": world,
        "per_device_batch": batch,
        "gradient_checkpointing": recipe.gradient_checkpointing,
        "lora_r": recipe.lora_r,
        "trainable_params": sum(q.numel() for q in trainable),
        "total_params": sum(q.numel() for q in model.parameters()),
        "tokens_per_sample": float(data["attention_mask"].sum(1).float().mean()),
        "build_s": round(build_s, 1),
        "step_s": [round(t, 3) for t in times],
        "samples_per_s": round(batch / float(np.mean(timed)), 2),
        "peak_memory_GiB": None if peak is None else round(peak / 2**30, 2),
        "checkpoint_MB": round(ckpt_bytes / 1e6, 1),
        "losses": [round(x, 4) for x in losses],
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
