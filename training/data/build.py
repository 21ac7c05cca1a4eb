"""Command line of the data builders: ``python -m training.data.build SOURCE ... --out x.jsonl``.

Sources::

    refer       RefCOCO / RefCOCO+ / RefCOCOg / RefCLEF / gRefCOCO (refs + COCO instances JSON)
    coco        class-name goals per (image, category) from a COCO instances JSON
    instances   box-wise (B-SD) samples per (image, category)
    semantic    open vocabulary from label-map PNGs (ADE20K / COCO-Stuff layout)
    labelmaps   write COCO instances as ADE-style label-map PNGs (0 = others) + class list
    synthetic   coloured-shape scenes (images written next to the JSONL)
    tabletop    tabletop scenes with every goal kind (training.data.tabletop; seeds = split)

Every source takes ``--grid`` (G) and ``--method`` (``center`` = the official sampling,
``area`` = majority vote per cell) and ``--seed`` (question templates, crops, distractors).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from .coco import CocoInstances, build_class_queries
from .instances import build_instances
from .refer import REFER_DATASETS, build_refer, load_refs
from .sample import write_jsonl
from .semantic import PRESETS, build_open_vocab, pair_folders
from .synthetic import build_synthetic
from .tabletop import GOAL_KINDS
from .tabletop_samples import build_tabletop


def _common(p: argparse.ArgumentParser, grid: int) -> None:
    p.add_argument("--out", required=True, type=Path, help="output JSONL file")
    p.add_argument("--grid", type=int, default=grid, help="grid size G (cells per side)")
    p.add_argument("--method", choices=("center", "area"), default="center")
    p.add_argument("--seed", type=int, default=0)


def _coco_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--instances", required=True, type=Path, help="COCO instances JSON")
    p.add_argument("--images", required=True, type=Path, help="folder of the images")


def parser() -> argparse.ArgumentParser:
    """The argument parser (one sub-command per source)."""
    ap = argparse.ArgumentParser(prog="python -m training.data.build", description=__doc__)
    sub = ap.add_subparsers(dest="source", required=True)
    p = sub.add_parser("refer", help="REFER refs (+ gRefCOCO) with COCO instances")
    _coco_args(p)
    p.add_argument("--refs", required=True, type=Path, help="refs(unc).p / grefs(unc).json")
    p.add_argument("--dataset", choices=REFER_DATASETS, default="refcoco")
    p.add_argument("--splits", default="train", help="comma list, or 'all'")
    _common(p, 16)
    p = sub.add_parser("coco", help="class-name RES/GRES goals from COCO instances")
    _coco_args(p)
    _common(p, 16)
    p = sub.add_parser("instances", help="B-SD instance samples from COCO instances")
    _coco_args(p)
    p.add_argument("--bricks", action="store_true", help="semantic-brick bodies (even G)")
    _common(p, 16)
    p = sub.add_parser("semantic", help="open vocabulary from label-map PNGs")
    p.add_argument("--images", required=True, type=Path)
    p.add_argument("--labels", required=True, type=Path, help="folder of NAME.png label maps")
    p.add_argument(
        "--classes",
        required=True,
        help="JSON list (value -> name|null), or a preset: " + ", ".join(PRESETS),
    )
    p.add_argument("--ignore", default=None, help="comma list of ignored values, e.g. 255")
    p.add_argument("--dataset", default="ade20k")
    p.add_argument("--image-ext", default=".jpg")
    p.add_argument("--samples-per-image", type=int, default=1)
    p.add_argument("--no-crop", action="store_true", help="keep whole images (no square crop)")
    _common(p, 32)
    p = sub.add_parser("labelmaps", help="COCO instances -> label-map PNGs + classes JSON")
    _coco_args(p)
    p.add_argument("--out-dir", required=True, type=Path)
    p = sub.add_parser("synthetic", help="coloured-shape scenes")
    p.add_argument("--n-images", type=int, default=100)
    p.add_argument("--size", type=int, default=64, help="square image side in pixels")
    _common(p, 16)
    p = sub.add_parser("tabletop", help="tabletop scenes, every goal kind (the demo model)")
    p.add_argument("--split", choices=("train", "heldout"), default="train")
    p.add_argument("--first", type=int, default=0, help="index of the first scene")
    p.add_argument("--n-images", type=int, default=100)
    p.add_argument("--size", type=int, default=128, help="square image side in pixels")
    p.add_argument("--objects", default="2,6", help="min,max objects per scene")
    p.add_argument("--goals-per-scene", type=int, default=None, help="draw at most N goals")
    p.add_argument("--scale", type=float, default=1.0, help="object footprint factor")
    p.add_argument(
        "--hard-absent",
        type=float,
        default=0.0,
        help="chance (0-1) that an absent-target goal is a hard one (its colour in the scene, "
        "or a kind's plural), so that only its kind says 'not there' (default 0: as held out)",
    )
    p.add_argument(
        "--weights",
        default="",
        help=f"kind=weight,... for the goal draw (kinds: {','.join(GOAL_KINDS)}; 0 drops one)",
    )
    _common(p, 16)
    return ap


def _weights(text: str) -> dict[str, float]:
    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        kind, _, value = item.partition("=")
        if kind not in GOAL_KINDS or not value:
            raise SystemExit(f"--weights: bad item {item!r} (kinds: {', '.join(GOAL_KINDS)})")
        out[kind] = float(value)
    return out


def write_label_maps(coco: CocoInstances, out_dir: Path) -> Path:
    """COCO instances as ADE-style PNGs (``0`` = others) + ``classes.json``; returns its path."""
    names = [None] + [coco.categories[c] for c in sorted(coco.categories)]
    if len(names) > 256:
        raise ValueError(f"{len(names)} classes do not fit an 8-bit label map")
    out_dir.mkdir(parents=True, exist_ok=True)
    for image_id, im in coco.images.items():
        label_map = coco.label_map(image_id, names)
        Image.fromarray(label_map).save(out_dir / (Path(im["file_name"]).stem + ".png"))
    classes = out_dir / "classes.json"
    classes.write_text(json.dumps(names), encoding="utf-8")
    return classes


def main(argv: Sequence[str] | None = None) -> int:
    """Run one builder; prints how many samples were written."""
    args = parser().parse_args(argv)
    if args.source == "labelmaps":
        classes = write_label_maps(CocoInstances.load(args.instances, args.images), args.out_dir)
        print(f"label maps written to {args.out_dir} (classes: {classes})")
        return 0
    rng = random.Random(args.seed)
    kw = {"grid": args.grid, "method": args.method}
    if args.source == "tabletop":
        lo, hi = (int(v) for v in args.objects.split(","))
        if not 0.0 <= args.hard_absent <= 1.0:
            raise SystemExit(f"--hard-absent must be in 0..1, got {args.hard_absent}")
        weights = _weights(args.weights)
        samples = build_tabletop(
            args.out.parent,
            args.n_images,
            args.first,
            args.split,
            (args.size, args.size),
            n_objects=(lo, hi),
            goals_per_scene=args.goals_per_scene,
            kinds=[k for k in GOAL_KINDS if weights.get(k, 1.0) > 0],
            weights=weights,
            scale=args.scale,
            hard_absent=args.hard_absent,
            **kw,
        )
    elif args.source == "synthetic":
        samples = build_synthetic(
            args.out.parent, args.n_images, args.seed, (args.size, args.size), **kw
        )
    elif args.source == "semantic":
        if args.classes in PRESETS:
            names, ignore = PRESETS[args.classes]
        else:
            names, ignore = json.loads(Path(args.classes).read_text(encoding="utf-8")), ()
        if args.ignore is not None:
            ignore = [int(v) for v in args.ignore.split(",") if v.strip()]
        pairs = pair_folders(args.images, args.labels, args.image_ext)
        samples = build_open_vocab(
            pairs,
            names,
            args.dataset,
            ignore=ignore,
            crop=not args.no_crop,
            samples_per_image=args.samples_per_image,
            rng=rng,
            **kw,
        )
    else:
        coco = CocoInstances.load(args.instances, args.images)
        if args.source == "refer":
            splits = None if args.splits == "all" else args.splits.split(",")
            refs = load_refs(args.refs)
            samples = build_refer(refs, coco, args.dataset, splits, rng=rng, **kw)
        elif args.source == "coco":
            samples = build_class_queries(coco, rng=rng, **kw)
        else:
            samples = build_instances(coco, bricks=args.bricks, rng=rng, **kw)
    n = write_jsonl(samples, args.out)
    print(f"{n} samples written to {args.out}")
    return 0 if n else 1


if __name__ == "__main__":
    sys.exit(main())
