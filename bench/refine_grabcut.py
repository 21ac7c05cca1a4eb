"""GrabCut refinement bench: what the weight-free refiner recovers from a G x G descriptor mask.

For every real mask in ../shared/data (COCO tiny instances, DAVIS blackswan frames) the coarse
mask is the *perfect* G x G image-wise descriptor (encoded and decoded through the codec, as a
model that answers without error would give), the baseline of the same run. It is refined with
:class:`~text4seg_ros.refine.GrabCutRefiner` at each band and scored against the real mask
(cIoU, gIoU; ratios refined / coarse), with the refiner's time per mask on this machine.

It bounds what the refiner can add to a model's answer; the demo model's own answers, refined
and not, are scored by ``python -m training.demo_eval --refiner grabcut`` (models/demo/README.md).
``--tabletop N`` adds the RES and REC goals of N held-out synthetic tabletop scenes (the demo
model's domain, drawn from their seeds; not real data) as a third set.

Usage: python bench/refine_grabcut.py [--grids 8 16] [--bands 0.25 0.5 1] [--limit N]
       [--tabletop 150] [--out refine_grabcut.json]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from collections.abc import Callable
from functools import partial

import numpy as np

from text4seg_ros.descriptors import decode_mask, encode_mask
from text4seg_ros.metrics import MaskMetrics
from text4seg_ros.refine import GrabCutConfig, GrabCutRefiner

from common import frame_name, image_of, real_masks, write_json

Item = tuple[str, str, np.ndarray, Callable[[], np.ndarray]]  # frame, label, mask, frame loader


def real_items() -> dict[str, list[Item]]:
    """The real masks of ../shared/data with their frame's name and loader."""
    return {
        dataset: [
            (frame_name(dataset, n), lab, m, partial(image_of, dataset, n)) for n, lab, m in items
        ]
        for dataset, items in real_masks().items()
    }


def tabletop_items(scenes: int) -> list[Item]:
    """RES and REC goals with a target on held-out tabletop scenes 0 .. scenes - 1."""
    from training.data.tabletop import draw_tabletop, scene_seed, tabletop_goals

    out: list[Item] = []
    for i in range(scenes):
        seed = scene_seed("heldout", i)
        scene = draw_tabletop(seed, (128, 128))
        for g in tabletop_goals(scene, seed):
            if g.kind in ("res_attr", "res_size", "res_spatial", "rec") and g.mask.any():
                out.append((f"scene {i}", g.text, g.mask, lambda im=scene.image: im))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grids", type=int, nargs="+", default=[8, 16])
    p.add_argument("--bands", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    p.add_argument("--limit", type=int, default=0, help="at most N masks per dataset (0: all)")
    p.add_argument("--tabletop", type=int, default=150, help="held-out tabletop scenes (0: none)")
    p.add_argument("--out", default="refine_grabcut.json")
    args = p.parse_args()

    start = time.perf_counter()
    data = real_items()
    if args.tabletop:
        data["tabletop_heldout"] = tabletop_items(args.tabletop)
    images: dict[tuple[str, str], np.ndarray] = {}
    rows: dict[str, dict] = {}
    for grid in args.grids:
        refiners = {b: GrabCutRefiner(grid, GrabCutConfig(band=b)) for b in args.bands}
        for dataset, items in data.items():
            items = items[: args.limit] if args.limit else items
            coarse_m = MaskMetrics()
            fine_m: dict[float, MaskMetrics] = defaultdict(MaskMetrics)
            took: dict[float, list[float]] = defaultdict(list)
            for frame, label, mask, load in items:
                if (dataset, frame) not in images:  # each frame read once for all its masks
                    images[(dataset, frame)] = load()
                image = images[(dataset, frame)]
                coarse = decode_mask(encode_mask(mask, label, grid), label, mask.shape, grid)
                coarse_m.update(coarse, mask)
                for band, refiner in refiners.items():
                    t0 = time.perf_counter()
                    fine = refiner.refine(image, coarse)
                    took[band].append(time.perf_counter() - t0)
                    fine_m[band].update(fine, mask)
            base = coarse_m.compute()
            row: dict = {"masks": len(items), "coarse": base}
            for band in args.bands:
                m = fine_m[band].compute()
                row[f"band_{band:g}"] = {
                    **m,
                    "cIoU_ratio": m["cIoU"] / base["cIoU"],
                    "gIoU_ratio": m["gIoU"] / base["gIoU"],
                    "ms_per_mask": 1000 * float(np.mean(took[band])),
                }
            rows[f"{dataset} G={grid}"] = row
            line = ", ".join(
                f"band {b:g}: cIoU {row[f'band_{b:g}']['cIoU']:.3f} "
                f"({row[f'band_{b:g}']['cIoU_ratio']:.2f}x, "
                f"{row[f'band_{b:g}']['ms_per_mask']:.0f} ms)"
                for b in args.bands
            )
            print(f"{dataset} G={grid}: coarse cIoU {base['cIoU']:.3f}; {line}")
    payload = {
        "what": "perfect G x G descriptor masks of real images, refined by GrabCut",
        "defaults": GrabCutConfig().__dict__,
        "grids": args.grids,
        "bands": args.bands,
        "metrics": rows,
        "seconds": time.perf_counter() - start,
    }
    print(f"wrote {write_json(args.out, payload)}")


if __name__ == "__main__":
    main()
