"""LoRA adapter -> merged checkpoint: a plain Hugging Face directory the Segmenter loads.

    python -m training.merge --adapter OUT/adapter --out merged/ [--base BASE] [--dtype bf16]

The merged directory has the base model's layout (``config.json``, ``model.safetensors``, the
processor and tokenizer files, ``text4seg_processor.json`` for the processor subclasses of
:mod:`text4seg_ros.model.processors`, and the base's ``text4seg.json``), so
``Segmenter.from_pretrained(merged)`` loads it like any base model; no peft at inference.
``text4seg_training.json`` records where it came from. The second training stage (gRefCOCO)
starts from this directory.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from peft import PeftConfig

from text4seg_ros.model.meta import copy_meta
from text4seg_ros.model.processors import save_processor

from .lora import load_base

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def merge_adapter(
    adapter: str | Path,
    out: str | Path,
    base: str | Path | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Fold the LoRA factors of ``adapter`` into ``base`` and save the result in ``out``.

    ``base`` defaults to the base recorded in the adapter config (the ``--model`` of training).
    The base is loaded and the LoRA product added in float32, then the sum is cast to ``dtype``
    once: merging in bf16 would round the base weights and the delta separately (and the delta
    ``B @ A * scale`` itself in bf16), a second rounding on every merged weight. A 7B model needs
    about 28 GB of host memory for this. Returns ``out``.
    """
    adapter, out = Path(adapter), Path(out)
    if not (adapter / "adapter_config.json").exists():
        raise ValueError(f"{adapter} is not a peft adapter directory (no adapter_config.json)")
    config = PeftConfig.from_pretrained(str(adapter))
    base = Path(base or config.base_model_name_or_path)
    if not (base / "config.json").exists():
        raise ValueError(
            f"base model {base} not found: pass --base (the directory training started from)"
        )
    merged, processor, backbone = load_base(base, torch.float32, adapter=adapter)
    merged = merged.to(dtype)
    merged.config.dtype = dtype
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(out))
    save_processor(processor, out, backbone.name)
    copy_meta(base, out)  # the base's grid and prompt layout hold for the merged model too
    provenance = {
        "base": str(base.resolve()),
        "adapter": str(adapter.resolve()),
        "backbone": backbone.name,
    }
    recipe = adapter.parent / "recipe.json"
    if recipe.exists():
        provenance["recipe"] = json.loads(recipe.read_text(encoding="utf-8"))
    (out / "text4seg_training.json").write_text(json.dumps(provenance, indent=2))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: merge one adapter."""
    ap = argparse.ArgumentParser(prog="python -m training.merge", description=__doc__)
    ap.add_argument("--adapter", required=True, type=Path, help="training output_dir/adapter")
    ap.add_argument("--out", required=True, type=Path, help="merged model directory")
    ap.add_argument("--base", type=Path, default=None, help="base model (default: recorded)")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    args = ap.parse_args(argv)
    out = merge_adapter(args.adapter, args.out, args.base, DTYPES[args.dtype])
    print(f"merged model written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
