"""The training recipe: every hyper-parameter in one dataclass, defaults = SPEC.md section 8.

Launch scripts pass only paths and machine-dependent sizes (per-device batch); everything else
comes from here. ``python -m training.train --help`` lists every field with its help string.
Tiny CPU runs override sizes on the command line (``--lora_r 8 --max_steps 20 ...``).

Memory: activation checkpointing is on by default. At the 8-GPU default (16 samples of about
900 tokens per device, LLaVA-1.5-7B, bf16) a device holds about 31 GB with it and over 150 GiB of
activations alone without it; docs/gpu.md gives the arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Parts --freeze can hold fixed in full tuning (training/lora.py freeze_parts).
FREEZABLE: tuple[str, ...] = ("vision", "projector", "embeddings")
# Learning rate per backbone (paper, Table 7): InternVL2 was tuned at half the rate.
BACKBONE_LR: dict[str, float] = {"internvl": 1e-4}
DEFAULT_LR = 2e-4


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class Recipe:
    """LoRA + DeepSpeed ZeRO-2 fine-tuning recipe (Text4Seg, Table 7)."""

    model: str = field(metadata=_help("base model: a local Hugging Face directory"))
    data: list[str] = field(metadata=_help("JSONL sample files (training.data builders)"))
    output_dir: str = field(metadata=_help("checkpoints, adapter, logs"))
    # LoRA on the language model's linear layers and the projector; vision tower frozen.
    tune: str = field(
        default="lora",
        metadata={
            "help": "lora (the paper) or full (every weight; tiny models from random init)",
            "choices": ["lora", "full"],
        },
    )
    lora_r: int = field(default=64, metadata=_help("LoRA rank"))
    lora_alpha: int = field(default=128, metadata=_help("LoRA alpha (scale = alpha / r)"))
    lora_dropout: float = field(default=0.05, metadata=_help("LoRA dropout"))
    # AdamW with linear decay after warm-up.
    lr: float | None = field(
        default=None, metadata=_help("peak learning rate; default 2e-4 (1e-4 for InternVL)")
    )
    adam_beta1: float = field(default=0.9, metadata=_help("AdamW beta1"))
    adam_beta2: float = field(default=0.95, metadata=_help("AdamW beta2"))
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay"))
    warmup_ratio: float = field(default=0.03, metadata=_help("fraction of steps in warm-up"))
    grad_clip: float = field(default=1.0, metadata=_help("gradient norm clip"))
    # Batch: global = world size x per-device batch x accumulation, accumulation derived.
    global_batch: int = field(default=128, metadata=_help("samples per optimizer step"))
    per_device_batch: int = field(default=16, metadata=_help("micro-batch per rank"))
    epochs: float = field(default=5.0, metadata=_help("passes over the data"))
    max_steps: int = field(default=-1, metadata=_help("stop after this many steps (>0)"))
    precision: str = field(
        default="auto", metadata=_help("auto (bf16 if the GPU has it, else fp16; fp32 on CPU)")
    )
    deepspeed: str = field(
        default="training/configs/zero2.json", metadata=_help("DeepSpeed config (ZeRO-2)")
    )
    gradient_checkpointing: bool = field(
        default=True, metadata=_help("recompute activations in backward (7B needs it)")
    )
    max_length: int = field(
        default=2048, metadata=_help("longer tokenised samples are dropped (counted, logged)")
    )
    max_tiles: int = field(
        default=1, metadata=_help("InternVL image tiles (1: one 448 x 448 tile, 256 tokens)")
    )
    loss_on: str = field(
        default="answer",
        metadata={
            "help": "answer (every answer token) or free (only where the descriptor grammar "
            "allows more than one token; training/dataset.py)",
            "choices": ["answer", "free"],
        },
    )
    fg_weight: float = field(
        default=1.0,
        metadata=_help(
            "loss weight of the answer tokens in descriptor rows holding a target (1: plain "
            "mean; training/dataset.py)"
        ),
    )
    freeze: str = field(
        default="",
        metadata=_help(
            "with --tune full: comma list of parts that stay fixed, of vision (the vision "
            "tower), projector, embeddings (word embeddings, and the output head when tied); "
            "e.g. after training.align"
        ),
    )
    group_by_length: bool = field(
        default=False,
        metadata=_help(
            "micro-batches of similar token length (less padding; training/sampling.py), "
            "the transformers Trainer's option of the same name"
        ),
    )
    num_workers: int = field(default=4, metadata=_help("data loader workers per rank"))
    seed: int = field(default=42, metadata=_help("data order, dropout, LoRA init"))
    log_steps: int = field(default=10, metadata=_help("log every N optimizer steps"))
    save_steps: int = field(default=500, metadata=_help("checkpoint every N steps (0: end only)"))
    save_total_limit: int = field(
        default=2, metadata=_help("keep the newest N checkpoints (0: keep all)")
    )
    resume: bool = field(default=True, metadata=_help("resume from output_dir's latest ckpt"))
    shared_output: bool = field(
        default=True,
        metadata=_help("false when nodes do not share output_dir: each keeps its own checkpoints"),
    )
    local_rank: int = field(default=-1, metadata=_help("set by the deepspeed launcher"))

    def __post_init__(self) -> None:
        if self.tune not in ("lora", "full"):
            raise ValueError(f"tune must be 'lora' or 'full', got {self.tune!r}")
        if isinstance(self.data, str):
            self.data = [self.data]
        unknown = set(self.freeze_parts()) - set(FREEZABLE)
        if unknown:
            raise ValueError(f"unknown --freeze parts {sorted(unknown)}; known: {FREEZABLE}")
        if self.freeze_parts() and self.tune != "full":
            raise ValueError("--freeze needs --tune full (LoRA already freezes the base)")
        if self.max_tiles < 1:
            raise ValueError(f"max_tiles must be >= 1, got {self.max_tiles}")

    def freeze_parts(self) -> list[str]:
        """``freeze`` as a list (empty: nothing frozen)."""
        return [p.strip() for p in self.freeze.split(",") if p.strip()]

    def peak_lr(self, backbone: str) -> float:
        """The learning rate for ``backbone`` unless ``lr`` overrides it."""
        return self.lr if self.lr is not None else BACKBONE_LR.get(backbone, DEFAULT_LR)

    def accumulation(self, world_size: int) -> int:
        """Gradient accumulation steps so that ``global_batch = world x micro x accumulation``."""
        per_step = world_size * self.per_device_batch
        if self.global_batch % per_step:
            raise ValueError(
                f"global_batch {self.global_batch} is not a multiple of world size {world_size} "
                f"x per_device_batch {self.per_device_batch}"
            )
        return self.global_batch // per_step
