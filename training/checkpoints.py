"""DeepSpeed checkpoints of a run: what is saved, which one resumes, how many are kept.

* Contents: only the trainable weights (LoRA factors) and their ZeRO-2 optimizer partitions;
  the frozen base (13.5 GB of bf16 weights for a 7B model) is excluded, since ``--model``
  already holds it. A 7B LoRA r64 checkpoint is then the adapter (160 M params, 0.3 GB in
  bf16) plus fp32 master weights and Adam moments (1.9 GB over all ranks), not about 28 GB.
* Resume: rank 0 alone reads ``checkpoints/latest`` and broadcasts the tag, so every rank
  resumes from the same step even where nodes do not share ``output_dir`` (each node then
  keeps its own copy, DeepSpeed's ``use_node_local_storage``). A rank that lacks its part of
  that checkpoint stops every rank with one clear error instead of training from step 0 while
  the others resume.
* Rotation: after each save, each node's local rank 0 deletes all but the newest
  ``keep`` ``step<N>`` folders (never the one ``latest`` names).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import torch.distributed as dist

_STEP = re.compile(r"^step(\d+)$")


def step_dirs(ckpt_dir: Path) -> list[Path]:
    """``step<N>`` folders of ``ckpt_dir`` sorted by N (oldest first)."""
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := _STEP.match(p.name))]
    return [p for _, p in sorted(found)]


def rotate(ckpt_dir: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` step folders (``keep <= 0``: keep all); returns the
    deleted ones. The folder ``latest`` names is always kept."""
    if keep <= 0:
        return []
    latest = ckpt_dir / "latest"
    current = latest.read_text().strip() if latest.is_file() else None
    old = [p for p in step_dirs(ckpt_dir)[:-keep] if p.name != current]
    for path in old:
        # Nodes sharing the folder may race to delete the same checkpoint: both are fine.
        shutil.rmtree(path, ignore_errors=True)
    return old


def has_rank_files(ckpt_dir: Path, tag: str, rank: int) -> bool:
    """True when ``ckpt_dir/tag`` holds what ``rank`` loads: the model states and its own
    ZeRO optimizer partition (named ``*zero_pp_rank_<rank>_mp_rank_00_optim_states.pt``)."""
    folder = ckpt_dir / tag
    if not (folder / "mp_rank_00_model_states.pt").is_file():
        return False
    return any(folder.glob(f"*zero_pp_rank_{rank}_mp_rank_*optim_states.pt"))


def decide_resume(ckpt_dir: Path, resume: bool) -> str | None:
    """The checkpoint tag every rank resumes from (None: start fresh), decided by rank 0.

    Collective: every rank calls it. Raises RuntimeError on every rank when some rank lacks
    its files for the chosen tag (naming those ranks), so no rank trains alone from step 0.
    """
    tag: str | None = None
    if dist.get_rank() == 0 and resume:
        latest = ckpt_dir / "latest"
        if latest.is_file():
            tag = latest.read_text().strip() or None
    box: list[Any] = [tag]
    dist.broadcast_object_list(box, src=0)
    tag = box[0]
    if tag is None:
        return None
    present = has_rank_files(ckpt_dir, tag, dist.get_rank())
    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, present)
    missing = [r for r, ok in enumerate(everyone) if not ok]
    if missing:
        raise RuntimeError(
            f"rank 0 resumes from {ckpt_dir / tag}, but ranks {missing} have no such checkpoint "
            "(nodes without a shared output_dir need --shared_output false from the first run; "
            "or pass --resume false to start over)"
        )
    return tag


def save(engine: Any, ckpt_dir: Path, step: int, keep: int, local_main: bool) -> None:
    """Save step ``step`` (trainable weights only) and rotate to the newest ``keep``."""
    engine.save_checkpoint(
        str(ckpt_dir),
        tag=f"step{step}",
        client_state={"step": step},
        exclude_frozen_parameters=True,
    )
    dist.barrier()  # every rank has written its partition before anything is deleted
    if local_main:
        rotate(ckpt_dir, keep)
    dist.barrier()


def load(engine: Any, ckpt_dir: Path, tag: str) -> int:
    """Load ``tag`` into ``engine`` (the frozen base comes from ``--model``); returns its step."""
    _, client = engine.load_checkpoint(str(ckpt_dir), tag=tag, load_module_strict=False)
    if client is None:
        raise RuntimeError(f"DeepSpeed could not load checkpoint {ckpt_dir / tag}")
    return int(client["step"])
