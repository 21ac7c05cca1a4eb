"""Oracle bench: the quality a *perfect* descriptor reaches, and how long it is.

For every real mask in ../shared/data (COCO tiny instances, DAVIS blackswan frames) and every
grid size G in 16, 24, 32, 64, the mask is encoded through the codec to text and decoded back at
image size, then scored against the original mask:

* ``isd_center``: image-wise R-RLE, centre sampling (the official data, default);
* ``isd_area``: image-wise R-RLE, area-vote sampling;
* ``bsd``: box-wise triples (box + G x G grid over the box), centre sampling;
* ``bsd_bricks``: the same with 2 x 2 semantic bricks (same masks, shorter text).

Reports cIoU, gIoU and the mean descriptor length in characters, plus ratios against the
``isd_center`` baseline of the same run. Writes bench/results/oracle.json and prints a Markdown
table (the one in README.md).

Usage: python bench/oracle.py [--grids 16 24 32 64]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from text4seg_ros.descriptors import decode_mask, encode_mask
from text4seg_ros.descriptors.bsd import decode_instances, encode_instance
from text4seg_ros.metrics import MaskMetrics

from common import real_masks, write_json

KINDS = ("isd_center", "isd_area", "bsd", "bsd_bricks")


def roundtrip(kind: str, mask: np.ndarray, label: str, grid: int) -> tuple[np.ndarray, int]:
    """Encode ``mask`` as text of ``kind`` and decode it; returns (decoded mask, text length)."""
    if kind.startswith("isd"):
        method = "area" if kind == "isd_area" else "center"
        body = encode_mask(mask, label, grid, method)
        text = f"<seg>{body}</seg>"
        return decode_mask(text, label, mask.shape, grid), len(text)
    text = encode_instance(mask, label, grid, bricks=kind == "bsd_bricks")
    out = np.zeros_like(mask)
    for inst in decode_instances(text, [label], mask.shape, grid):
        out |= inst.mask
    return out, len(text)


def run(grids: list[int]) -> dict:
    data = real_masks()
    results: dict = {}
    for dataset, items in data.items():
        results[dataset] = {"queries": len(items)}
        for grid in grids:
            row = {}
            for kind in KINDS:
                metrics, lengths = MaskMetrics(), []
                for _, label, mask in items:
                    decoded, length = roundtrip(kind, mask, label, grid)
                    metrics.update(decoded, mask)
                    lengths.append(length)
                row[kind] = {
                    "cIoU": metrics.ciou,
                    "gIoU": metrics.giou,
                    "chars": float(np.mean(lengths)),
                }
            base = row["isd_center"]
            for kind in KINDS[1:]:
                row[kind]["gIoU_vs_isd_center"] = row[kind]["gIoU"] / base["gIoU"]
                row[kind]["chars_vs_isd_center"] = row[kind]["chars"] / base["chars"]
            results[dataset][str(grid)] = row
    return results


def table(results: dict, grids: list[int]) -> str:
    lines = [
        "| data | G | I-SD centre cIoU / gIoU / chars | I-SD area cIoU / gIoU | "
        "B-SD cIoU / gIoU / chars | B-SD bricks chars |",
        "|---|---|---|---|---|---|",
    ]
    for dataset in results:
        for grid in grids:
            r = results[dataset][str(grid)]
            c, a, b, k = r["isd_center"], r["isd_area"], r["bsd"], r["bsd_bricks"]
            lines.append(
                f"| {dataset} | {grid} | {c['cIoU']:.3f} / {c['gIoU']:.3f} / {c['chars']:.0f} | "
                f"{a['cIoU']:.3f} / {a['gIoU']:.3f} | {b['cIoU']:.3f} / {b['gIoU']:.3f} / "
                f"{b['chars']:.0f} | {k['chars']:.0f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grids", type=int, nargs="+", default=[16, 24, 32, 64])
    args = parser.parse_args()
    start = time.perf_counter()
    results = run(args.grids)
    path = write_json(
        "oracle.json",
        {
            "grids": args.grids,
            "kinds": list(KINDS),
            "seconds": time.perf_counter() - start,
            "results": results,
        },
    )
    print(table(results, args.grids))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
