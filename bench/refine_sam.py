"""SAM refinement bench: how much SAM recovers from a 16 x 16 descriptor mask, and how fast.

For every real mask in ../shared/data (COCO tiny instances, DAVIS blackswan frames) the coarse
mask is the *perfect* G x G image-wise descriptor (encoded and decoded through the codec, as a
model that answers without error would give). It is refined with :class:`SamRefiner` (points
and/or box prompt) and scored against the real mask (cIoU, gIoU). Each image is encoded once
and all its goals are refined against the cached embedding (as the Segmenter does).

SAM weights come by path (``--sam``: a Hugging Face SAM directory or ``sam_vit_*.pth``). Without
one, ``--random vit_b|vit_l|vit_h`` (``tiny`` for dry runs) builds a random-weight SAM of that
size: its timings are real, its IoU numbers are meaningless (reported as such).

Usage: python bench/refine_sam.py (--sam PATH | --random vit_h) [--device cuda]
       [--dtype float32|bfloat16|float16] [--prompts points box] [--grid 16] [--limit N]
       [--out refine_sam.json]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np
import torch

from text4seg_ros.descriptors import decode_mask, encode_mask
from text4seg_ros.metrics import MaskMetrics
from text4seg_ros.refine import HfSamBackend, RefinerConfig, SamRefiner, load_refiner
from text4seg_ros.refine.backends import build_processor

from common import frame_name, image_of, real_masks, write_json

# Encoder sizes of the released SAM models (width, depth, heads, global attention blocks).
SAM_SIZES = {
    "tiny": (32, 2, 2, [1]),  # the GPU check's CPU dry run
    "vit_b": (768, 12, 12, [2, 5, 8, 11]),
    "vit_l": (1024, 24, 16, [5, 11, 17, 23]),
    "vit_h": (1280, 32, 16, [7, 15, 23, 31]),
}


def random_backend(kind: str, device: str) -> HfSamBackend:
    """A random-weight transformers SamModel of a released SAM's size (timing only)."""
    from transformers import SamConfig, SamModel

    hidden, layers, heads, global_idx = SAM_SIZES[kind]
    cfg = SamConfig(
        vision_config=dict(
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            global_attn_indexes=global_idx,
        )
    )
    torch.manual_seed(0)
    return HfSamBackend(SamModel(cfg), build_processor(1024), device)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--sam", help="HF SAM directory or sam_vit_*.pth")
    src.add_argument("--random", choices=sorted(SAM_SIZES), help="random weights (timing only)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--prompts", nargs="+", default=["points", "box"], choices=["points", "box"])
    p.add_argument("--grid", type=int, default=16)
    p.add_argument("--limit", type=int, default=0, help="at most N images per dataset (0: all)")
    p.add_argument("--out", default="refine_sam.json")
    args = p.parse_args()

    if args.sam:
        backend = load_refiner(args.sam, args.device).backend
    else:
        backend = random_backend(args.random, args.device)
    backend.model.to(getattr(torch, args.dtype))
    refiner = SamRefiner(backend)
    configs = {k: RefinerConfig(prompt=k) for k in args.prompts}

    by_image: dict[tuple[str, str], list[tuple[str, str, np.ndarray]]] = defaultdict(list)
    for dataset, items in real_masks().items():
        for name, label, mask in items:
            by_image[(dataset, frame_name(dataset, name))].append((name, label, mask))
    if args.limit:
        kept: dict[str, int] = defaultdict(int)
        selected = {}
        for key, goals in by_image.items():
            if kept[key[0]] < args.limit:
                kept[key[0]] += 1
                selected[key] = goals
        by_image = selected

    coarse_m: dict[str, MaskMetrics] = defaultdict(MaskMetrics)
    refined_m: dict[tuple[str, str], MaskMetrics] = defaultdict(MaskMetrics)
    encode_s: list[float] = []
    refine_s: dict[str, list[float]] = defaultdict(list)
    for (dataset, _), goals in by_image.items():
        image = image_of(dataset, goals[0][0])
        sync(args.device)
        t0 = time.perf_counter()
        refiner.set_image(image)
        sync(args.device)
        encode_s.append(time.perf_counter() - t0)
        for _name, label, mask in goals:
            coarse = decode_mask(encode_mask(mask, label, args.grid), label, mask.shape, args.grid)
            coarse_m[dataset].update(coarse, mask)
            for kind, cfg in configs.items():
                t0 = time.perf_counter()
                fine = refiner.refine_mask(coarse, config=cfg)
                sync(args.device)
                refine_s[kind].append(time.perf_counter() - t0)
                refined_m[(dataset, kind)].update(fine, mask)

    rows = {}
    for dataset, m in coarse_m.items():
        rows[dataset] = {"coarse": m.compute()}
        for kind in args.prompts:
            rows[dataset][f"refined_{kind}"] = refined_m[(dataset, kind)].compute()
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    payload = {
        "sam": args.sam or f"random {args.random} (timing only: IoU is meaningless)",
        "device": device_name,
        "dtype": args.dtype,
        "grid": args.grid,
        "images": len(by_image),
        "encode_ms_mean": 1000 * float(np.mean(encode_s[1:] or encode_s)),  # first is warm-up
        "refine_ms_mean": {
            k: 1000 * float(np.mean(v[1:] or v)) for k, v in refine_s.items()
        },  # three SAM passes per goal, embedding cached
        "metrics": rows,
    }
    path = write_json(args.out, payload)
    print(f"wrote {path}")
    print(f"encode {payload['encode_ms_mean']:.1f} ms/image; refine {payload['refine_ms_mean']}")
    for dataset, r in rows.items():
        line = ", ".join(f"{k} cIoU {v['cIoU']:.3f} gIoU {v['gIoU']:.3f}" for k, v in r.items())
        print(f"{dataset}: {line}")


if __name__ == "__main__":
    main()
