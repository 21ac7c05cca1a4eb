"""LoRA fine-tuning under DeepSpeed ZeRO-2: ``torchrun`` / ``deepspeed`` launchable.

    torchrun --nproc_per_node=8 -m training.train --model BASE --data a.jsonl --output_dir OUT
    deepspeed --hostfile HOSTS --module training.train --model BASE ...      # several nodes

Every hyper-parameter comes from :class:`training.recipe.Recipe` (defaults = SPEC section 8);
``training/configs/zero2.json`` holds the ZeRO-2 settings and its ``"auto"`` values are filled
from the recipe here (micro-batch, accumulation, clipping, precision), so nothing is written
twice. Gradient accumulation is derived once: ``global_batch / (world x per_device_batch)``.

Output layout (``output_dir``)::

    checkpoints/step<N>/   DeepSpeed checkpoint (trainable weights only, ZeRO-2 optimizer
                           partitions, scheduler, data position), the newest
                           ``save_total_limit`` kept: ``--resume`` continues from ``latest``
                           (decided by rank 0, see training.checkpoints)
    adapter/               the final peft adapter + processor (input of training.merge)
    model/                 instead of adapter/ with --tune full: the whole trained model, with
                           the input model's text4seg.json (grid, prompt layout)
    log.jsonl              one line per logged step: step, loss, lr, samples_s, tokens_s
    recipe.json            the resolved recipe of the run
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import deepspeed
import torch
import torch.distributed as dist
from peft import get_peft_model
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm
from transformers import HfArgumentParser, PreTrainedModel, get_linear_schedule_with_warmup

from text4seg_ros.model.meta import copy_meta
from text4seg_ros.model.processors import save_processor

from . import checkpoints
from .dataset import ChatDataset, Collator
from .lora import freeze_parts, load_base, lora_config
from .recipe import Recipe
from .sampling import length_grouped_order

REPO = Path(__file__).resolve().parents[1]


def epoch_indices(
    order: list[int], done_steps: int, steps_per_epoch: int, accum: int, batch: int
) -> list[int]:
    """This rank's sample indices still to run in an epoch, in sampler ``order``.

    An epoch is cut to whole optimizer steps (``steps_per_epoch * accum`` micro-batches of
    ``batch``): DeepSpeed counts accumulation boundaries on its own global micro-step counter,
    so a partial step left at an epoch's end would spill into the next epoch and shift every
    later boundary (and the resume arithmetic). ``done_steps`` steps of this epoch already ran
    (resuming mid-epoch): their samples are skipped.
    """
    per_step = accum * batch
    return order[done_steps * per_step : steps_per_epoch * per_step]


PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def choose_precision(precision: str, capability: tuple[int, int] | None) -> str:
    """The training precision for a device of CUDA compute ``capability`` (None: no GPU).

    ``fp32`` without a GPU. ``auto``: ``bf16`` from compute capability 8.0 (Ampere) on, else
    ``fp16``: V100 (7.0) and T4 (7.5) have no bf16 tensor cores, and recent torch reports bf16
    as supported there (``torch.cuda.is_bf16_supported`` emulates it), several times slower.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if capability is None:
        return "fp32"
    if precision == "auto":
        return "bf16" if tuple(capability) >= (8, 0) else "fp16"
    if precision == "bf16" and tuple(capability) < (8, 0):
        warnings.warn(
            f"bf16 on compute capability {capability[0]}.{capability[1]} is emulated (slow); "
            "--precision auto picks fp16 there",
            stacklevel=2,
        )
    return precision


def resolve_precision(precision: str) -> str:
    """:func:`choose_precision` for this process's GPU (``fp32`` on CPU)."""
    capability = torch.cuda.get_device_capability() if torch.cuda.is_available() else None
    return choose_precision(precision, capability)


def prepare_model(model: PreTrainedModel, gradient_checkpointing: bool) -> PreTrainedModel:
    """Switch the KV cache off everywhere and enable activation checkpointing (in place).

    The language model reads ``text_config.use_cache``, not the top-level flag, so both are
    cleared (else every training forward builds a KV cache it throws away). Checkpointing is
    non-reentrant: it needs no ``enable_input_require_grads`` hook with a frozen embedding.
    """
    model.config.use_cache = False
    model.config.get_text_config().use_cache = False
    if gradient_checkpointing:
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:  # the GPU image's transformers 5.17
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return model


def deepspeed_config(recipe: Recipe, world_size: int, precision: str) -> dict[str, Any]:
    """The DeepSpeed config file with its ``"auto"`` values filled from the recipe."""
    path = Path(recipe.deepspeed)
    if not path.is_absolute() and not path.exists():
        path = REPO / path
    config = json.loads(path.read_text(encoding="utf-8"))
    fill = {
        "train_micro_batch_size_per_gpu": recipe.per_device_batch,
        "gradient_accumulation_steps": recipe.accumulation(world_size),
        "gradient_clipping": recipe.grad_clip,
    }
    for key, value in fill.items():
        if config.get(key, "auto") == "auto":
            config[key] = value
    config["train_batch_size"] = recipe.global_batch
    for name in ("bf16", "fp16"):
        section = config.setdefault(name, {})
        if section.get("enabled", "auto") == "auto":
            section["enabled"] = precision == name
    if not recipe.shared_output:
        # Each node keeps its own checkpoint copy (model states written by every local rank 0).
        config.setdefault("checkpoint", {})["use_node_local_storage"] = True
    if config.get("zero_optimization", {}).get("stage") != 2:
        raise ValueError(f"{path}: the recipe uses ZeRO stage 2")
    return config


def init_distributed() -> tuple[int, int, torch.device]:
    """Start the process group (NCCL on GPU, gloo on CPU); returns (rank, world, device)."""
    for key, default in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1")):
        os.environ.setdefault(key, default)  # a plain single process: no MPI discovery
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29500")
    cuda = torch.cuda.is_available()
    if not cuda and os.environ.get("TEXT4SEG_DS_SHM", "0") != "1":
        # ZeRO-2 itself needs no compiled op on CPU, but DeepSpeed's CPU comm backend JIT-builds
        # a shared-memory all-reduce with g++ at start (about a minute on a fresh machine). gloo
        # gives the same sums, so skip the build unless TEXT4SEG_DS_SHM=1 asks for it.
        # (sys.modules: the attribute deepspeed.comm.torch is the torch package itself.)
        importlib.import_module("deepspeed.comm.torch")
        sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None
    deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo")
    local_rank = int(os.environ["LOCAL_RANK"])
    if cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    return dist.get_rank(), dist.get_world_size(), device


def _to_device(batch: dict[str, torch.Tensor], device: torch.device, dtype: torch.dtype) -> dict:
    return {
        k: v.to(device, dtype) if v.is_floating_point() else v.to(device) for k, v in batch.items()
    }


def weighted_loss(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Next-token cross-entropy, weighted per target token: ``logits (B, L, V)``, ``labels``
    and ``weights`` ``(B, L)`` aligned with the inputs (token ``t`` predicts ``labels[t + 1]``
    with weight ``weights[t + 1]``); ``-100`` labels count 0. Equals the model's own loss when
    every labelled token weighs 1."""
    target, w = labels[:, 1:], weights[:, 1:].float() * (labels[:, 1:] != -100)
    ce = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]),
        target.reshape(-1),
        ignore_index=-100,
        reduction="none",
    )
    return (ce * w.reshape(-1)).sum() / w.sum().clamp_min(1e-8)


def _all_mean(value: float, device: torch.device) -> float:
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


def _all_sum(value: float, device: torch.device) -> float:
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item())


def parse_recipe(argv: Sequence[str] | None = None) -> Recipe:
    """The recipe from the command line (``--help`` lists every field)."""
    parser = HfArgumentParser(Recipe)
    (recipe,) = parser.parse_args_into_dataclasses(args=argv)
    return recipe


def train(recipe: Recipe) -> Path:
    """Run the recipe; returns the adapter (or, with ``tune="full"``, the model) directory.

    Every rank calls this."""
    rank, world, device = init_distributed()
    main = rank == 0
    precision = resolve_precision(recipe.precision)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
    torch.manual_seed(recipe.seed)
    out = Path(recipe.output_dir)
    ckpt_dir = out / "checkpoints"

    model, processor, backbone = load_base(
        Path(recipe.model).resolve(), dtype, max_tiles=recipe.max_tiles
    )
    prepare_model(model, recipe.gradient_checkpointing)
    if recipe.tune == "lora":
        model = get_peft_model(
            model, lora_config(backbone.name, recipe.lora_r, recipe.lora_alpha, recipe.lora_dropout)
        )
    else:  # "full": every weight trains (small models from random init, e.g. the demo's)
        model.requires_grad_(True)
        freeze_parts(model, recipe.freeze_parts())  # e.g. keep training.align's alignment
    # On the GPU before the optimizer exists: torch's fused AdamW checks its params' device.
    model.to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in trainable)
    n_total = sum(p.numel() for p in model.parameters())

    dataset = ChatDataset(
        recipe.data, backbone, processor, recipe.max_length, recipe.loss_on, recipe.fg_weight
    )
    if main and dataset.dropped:
        # Dropped before the sampler sees them, identically on every rank and every resume.
        n_read = len(dataset.samples) + len(dataset.dropped)
        print(
            f"[train] dropped {len(dataset.dropped)} of {n_read} samples longer than "
            f"max_length {recipe.max_length} tokens (first: {', '.join(dataset.dropped[:5])})",
            flush=True,
        )
    accum = recipe.accumulation(world)
    sampler = DistributedSampler(
        dataset, num_replicas=world, rank=rank, shuffle=True, seed=recipe.seed, drop_last=True
    )
    steps_per_epoch = len(sampler) // (recipe.per_device_batch * accum)
    if steps_per_epoch < 1:
        raise ValueError(
            f"{len(dataset)} samples give no full optimizer step of global batch "
            f"{recipe.global_batch}; lower --global_batch or add data"
        )
    total = recipe.max_steps if recipe.max_steps > 0 else math.ceil(recipe.epochs * steps_per_epoch)
    warmup = math.ceil(recipe.warmup_ratio * total)
    lr = recipe.peak_lr(backbone.name)
    optimizer = torch.optim.AdamW(
        trainable,
        lr=lr,
        betas=(recipe.adam_beta1, recipe.adam_beta2),
        weight_decay=recipe.weight_decay,
        fused=device.type == "cuda",
    )
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total)
    engine, _, _, scheduler = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        config=deepspeed_config(recipe, world, precision),
    )

    step = 0
    tag = checkpoints.decide_resume(ckpt_dir, recipe.resume)
    if tag is not None:
        step = checkpoints.load(engine, ckpt_dir, tag)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        resolved = {
            **dataclasses.asdict(recipe),
            "lr": lr,
            "accumulation": accum,
            "world_size": world,
            "precision": precision,
            "total_steps": total,
            "warmup_steps": warmup,
            "backbone": backbone.name,
            "trainable_params": n_trainable,
            "total_params": n_total,
            "samples": len(dataset),
            "dropped_over_max_length": len(dataset.dropped),
        }
        (out / "recipe.json").write_text(json.dumps(resolved, indent=2))
        print(
            f"[train] {backbone.name}: {n_trainable:,} trainable of {n_total:,} params; "
            f"{len(dataset)} samples, world {world} x micro {recipe.per_device_batch} x accum "
            f"{accum} = {recipe.global_batch}/step; {total} steps (warm-up {warmup}), "
            f"lr {lr:g}, {precision}" + (f"; resumed at step {step}" if step else ""),
            flush=True,
        )

    collate = Collator(processor.tokenizer.pad_token_id)
    bar = tqdm(total=total, initial=step, disable=not main, desc="train", dynamic_ncols=True)
    window_loss, window_micro, window_tokens = 0.0, 0, 0
    window_start, window_steps = time.perf_counter(), 0
    engine.train()
    while step < total:
        epoch, done_in_epoch = divmod(step, steps_per_epoch)
        sampler.set_epoch(epoch)
        order = (
            length_grouped_order(
                dataset.lengths, recipe.seed, epoch, rank, world, recipe.per_device_batch
            )
            if recipe.group_by_length
            else list(sampler)
        )
        indices = epoch_indices(
            order, done_in_epoch, steps_per_epoch, accum, recipe.per_device_batch
        )
        loader = DataLoader(
            dataset,
            batch_size=recipe.per_device_batch,
            sampler=indices,
            collate_fn=collate,
            num_workers=recipe.num_workers,
            drop_last=True,
        )
        for batch in loader:
            window_tokens += int(batch["attention_mask"].sum())
            inputs = _to_device(batch, device, dtype)
            weights = inputs.pop("loss_weights", None)
            outputs = engine(**inputs)
            loss = (
                outputs.loss
                if weights is None
                else weighted_loss(outputs.logits, inputs["labels"], weights)
            )
            engine.backward(loss)
            boundary = engine.is_gradient_accumulation_boundary()
            engine.step()
            window_loss += float(loss.detach())
            window_micro += 1
            if not boundary:
                continue
            step += 1
            window_steps += 1
            bar.update(1)
            if step % recipe.log_steps == 0 or step == total:
                elapsed = time.perf_counter() - window_start
                record = {
                    "step": step,
                    "loss": _all_mean(window_loss / window_micro, device),
                    "lr": scheduler.get_last_lr()[0],
                    "samples_s": window_steps * recipe.global_batch / elapsed,
                    "tokens_s": _all_sum(window_tokens, device) / elapsed,
                }
                if main:
                    bar.set_postfix(
                        loss=f"{record['loss']:.4f}",
                        lr=f"{record['lr']:.2e}",
                        samples_s=f"{record['samples_s']:.1f}",
                        tokens_s=f"{record['tokens_s']:.0f}",
                    )
                    with (out / "log.jsonl").open("a") as f:
                        f.write(json.dumps(record) + "\n")
                    tqdm.write(
                        f"[train] step {step}/{total} loss {record['loss']:.4f} "
                        f"lr {record['lr']:.3e} {record['samples_s']:.2f} samples/s "
                        f"{record['tokens_s']:.0f} tokens/s"
                    )
                window_loss, window_micro, window_tokens = 0.0, 0, 0
                window_start, window_steps = time.perf_counter(), 0
            if (recipe.save_steps and step % recipe.save_steps == 0) or step == total:
                local_main = int(os.environ.get("LOCAL_RANK", "0")) == 0
                checkpoints.save(engine, ckpt_dir, step, recipe.save_total_limit, local_main)
            if step >= total:
                break
    bar.close()
    # LoRA: the peft adapter (merge with training.merge); full: a complete model directory.
    result = out / ("adapter" if recipe.tune == "lora" else "model")
    if main:
        engine.module.save_pretrained(str(result))
        save_processor(processor, result, backbone.name)
        if recipe.tune != "lora":  # an adapter gets them back from its base at merge
            copy_meta(recipe.model, result)  # the grid and prompt layout go with the model
        print(f"[train] {result.name} saved to {result}", flush=True)
    dist.barrier()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse the recipe, train, tear the process group down."""
    try:
        train(parse_recipe(argv))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
