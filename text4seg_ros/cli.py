"""``text4seg-segment``: segment one image for one or more language goals, from the shell.

Usage::

    text4seg-segment IMAGE "goal" ["goal" ...] [--model DIR] [--backbone NAME]
        [--task res|gres|rec|open_vocab|instances|reason] [--classes a,b,...] [--grid G]
        [--max-image-pixels N] [--refiner auto|none|grabcut|PATH] [--refine-prompt points|box]
        [--out DIR] [--device cpu]
        [--dtype float32|bfloat16|float16] [--descriptor isd|bsd] [--adapter DIR]
        [--vision-tower DIR]

Without ``--model`` the shipped demo model (``models/demo`` of the package) answers; without
``--grid`` the model's own grid (its ``text4seg.json``, else 16). For goal ``i`` (0-based, in
the order given) it writes into ``--out`` (created):

* ``NN_<slug>.mask.png``: the mask, mono8, 0 = background, 255 = goal (image size);
* ``NN_<slug>.overlay.png``: the image with the mask tinted and the box drawn (RGB);
* ``NN_<slug>.json``: the result (goal, box, score, descriptor, labels, model_steps, timings,
  image size, ...); see :func:`result_to_json`;
* for open-vocabulary goals also ``NN_<slug>.labels.png``: mono8 class indices
  (0 = others, ``i`` = ``labels[i]``).

Goals, ``--grid`` and the image are checked as the perception node checks them, by the same
code (:mod:`text4seg_ros.goals`, :mod:`text4seg_ros.images`): goals of at most 256 characters
(the node's ``max_goal_chars`` default), without control characters or descriptor syntax; G in
2..64; 16-bit images scaled to 8 bits by their high byte, float images refused. ``--device``
is checked against this torch before anything is loaded.

Exit status: 0 on success, 2 on a user error (missing or unreadable file, bad model directory,
bad option or goal, a device this torch cannot use), printed as one line on stderr, never a
traceback.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .checks import DTYPE_NAMES
from .goals import GRID_RANGE, GoalError, check_grid, validate_goal
from .images import DEFAULT_MAX_PIXELS, ImageError, decode_image
from .model.answers import plan_goal
from .model.meta import resolve_model
from .model.types import Goal, GoalResult
from .overlay import render_overlay, result_layer
from .prompts import Task

PROG = "text4seg-segment"


class UserError(Exception):
    """A problem with the command line or its files: reported in one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``text4seg-segment``."""
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Segment an image for language goals with a Text4Seg model "
        "(masks as text: semantic descriptors), optionally refined by SAM or GrabCut.",
    )
    p.add_argument("image", type=Path, help="input image (any format Pillow reads)")
    p.add_argument("goals", nargs="+", help="one or more goals, e.g. 'the red mug'")
    p.add_argument(
        "--model",
        type=Path,
        default=None,
        help="model directory (Hugging Face, or a LoRA adapter whose base is a local directory); "
        "default: the shipped demo model (models/demo)",
    )
    p.add_argument("--backbone", default=None, help="backbone name (default: from config.json)")
    p.add_argument(
        "--task",
        default=Task.RES.value,
        choices=[t.value for t in Task],
        help="goal kind for every goal (default: res)",
    )
    p.add_argument("--classes", default="", help="comma-separated class list (open_vocab)")
    p.add_argument(
        "--grid",
        type=int,
        default=None,
        help=(
            f"descriptor grid size G, {GRID_RANGE[0]}..{GRID_RANGE[1]} (default: the model's, "
            "from its text4seg.json, else 16)"
        ),
    )
    p.add_argument(
        "--max-image-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help=f"largest image accepted, width x height (default {DEFAULT_MAX_PIXELS}: 4K, the "
        "node's max_image_pixels)",
    )
    p.add_argument(
        "--refiner",
        default="auto",
        help="mask refiner: 'auto' (the model's own, from its text4seg.json; else none), "
        "'none', 'grabcut' (OpenCV, no weights) or a SAM directory / sam_vit_*.pth",
    )
    p.add_argument(
        "--refine-prompt",
        default="points",
        choices=["points", "box"],
        help="SAM prompt: random points (paper) or the coarse mask's box",
    )
    p.add_argument("--out", type=Path, default=Path("text4seg_out"), help="output directory")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    p.add_argument(
        "--engine",
        default="torch",
        choices=["torch", "onnxruntime", "tensorrt"],
        help="decode engine: torch (reference) or the exported ONNX graphs on onnxruntime / "
        "tensorrt (exported on first use; text4seg-export prepares them)",
    )
    p.add_argument(
        "--cuda-graphs",
        action="store_true",
        help="torch engine: capture the decoder step in CUDA graphs (static KV cache, replayed "
        "per step; needs a CUDA --device, else it says so and decodes eagerly)",
    )
    p.add_argument(
        "--dtype",
        default="float32",
        choices=list(DTYPE_NAMES),
        help="weight dtype of the model and the refiner (half precision for GPUs)",
    )
    p.add_argument(
        "--descriptor",
        default="isd",
        choices=["isd", "bsd"],
        help="answer referring goals image-wise (isd) or box-wise (bsd)",
    )
    p.add_argument("--adapter", type=Path, default=None, help="LoRA adapter directory (peft)")
    p.add_argument(
        "--vision-tower", type=Path, default=None, help="vision tower (original LLaVA layout)"
    )
    return p


def parse_classes(text: str) -> tuple[str, ...]:
    """``"cup, table,,chair"`` -> ``("cup", "table", "chair")`` (stripped, empties dropped)."""
    return tuple(c.strip() for c in text.split(",") if c.strip())


def make_goals(
    texts: Sequence[str], task: str, classes: Sequence[str], descriptor: str = "isd"
) -> list[Goal]:
    """One :class:`Goal` per text (``id`` = its 0-based index), validated as the node validates
    goals (:func:`~text4seg_ros.goals.validate_goal`, default ``max_goal_chars``) and planned
    (:func:`~.model.answers.plan_goal`); UserError naming the goal otherwise, all before any
    model is loaded."""
    kind = Task.parse(task)
    if kind is Task.OPEN_VOCAB and not classes:
        raise UserError("--task open_vocab needs --classes a,b,...")
    if classes and kind is not Task.OPEN_VOCAB:
        raise UserError(f"--classes is only used with --task open_vocab, not {kind.value}")
    goals = []
    for i, text in enumerate(texts):
        try:
            goal = validate_goal(text, kind.value, str(i), classes)
            plan_goal(goal, i, descriptor)
        except GoalError as exc:
            raise UserError(f"goal {i} ({_preview(text)}): {exc}") from exc
        except (TypeError, ValueError) as exc:
            raise UserError(str(exc)) from exc
        goals.append(goal)
    return goals


def _preview(text: str, limit: int = 40) -> str:
    """``text`` quoted, cut to ``limit`` characters (a 10,000-character goal stays one line)."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def read_image(path: Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` ``uint8`` RGB (EXIF orientation applied), by the
    node's rules (:func:`~text4seg_ros.images.decode_image`): 16-bit grey scaled by its high
    byte, float images refused, at most ``max_pixels`` pixels; UserError otherwise."""
    if not path.is_file():
        raise UserError(f"image file not found: {path}")
    try:
        return decode_image(path, max_pixels, f"image {path}", exif=True)
    except ImageError as exc:
        raise UserError(str(exc)) from exc


def slug(text: str, limit: int = 40) -> str:
    """A file-name-safe form of a goal: lower-case ASCII letters, digits and ``-``."""
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s[:limit].rstrip("-") or "goal"


def mask_png(mask: np.ndarray) -> Image.Image:
    """An ``(H, W)`` bool mask as a mono8 (``L``) image, 0 / 255."""
    if not isinstance(mask, np.ndarray) or mask.ndim != 2:
        raise ValueError(f"mask must be a 2-D (H, W) array, got {getattr(mask, 'shape', mask)}")
    return Image.fromarray(np.where(mask != 0, 255, 0).astype(np.uint8))


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value


def result_to_json(
    result: GoalResult, image_size: tuple[int, int], refined: bool = False
) -> dict[str, Any]:
    """The JSON record of one goal's result (no masks: those go to PNG files).

    Keys: ``goal`` (text, task, id, classes), ``image_size`` ``[H, W]``, ``box`` ``[x1, y1, x2,
    y2]`` pixel edges or null, ``score``, ``empty``, ``area`` (mask pixels), ``descriptor``,
    ``labels``, ``model_steps``, ``timings`` (seconds), ``refined``, ``repairs`` (strings),
    ``instances`` (box, score, area, labels each).
    """
    t = result.timings
    return {
        "goal": {
            "text": result.goal.text,
            "task": Task.parse(result.goal.task).value,
            "id": result.goal.id,
            "classes": list(result.goal.classes),
        },
        "image_size": [int(image_size[0]), int(image_size[1])],
        "box": None if result.box is None else [int(v) for v in result.box],
        "score": float(result.score),
        "empty": bool(result.empty),
        "area": int(np.count_nonzero(result.mask)),
        "descriptor": result.descriptor,
        "labels": list(result.labels),
        "model_steps": int(result.model_steps),
        "timings": {
            "encode_s": float(t.encode_s),
            "decode_s": float(t.decode_s),
            "refine_s": float(t.refine_s),
            "total_s": float(t.total_s),
        },
        "refined": bool(refined),
        "repairs": [str(r) for r in result.repairs],
        "instances": [
            {
                "box": None if inst.box is None else [int(v) for v in inst.box],
                "score": float(inst.score),
                "area": int(np.count_nonzero(inst.mask)),
                "labels": _jsonable(list(inst.labels)),
            }
            for inst in result.instances
        ],
    }


def write_result(
    out_dir: Path,
    index: int,
    image: np.ndarray,
    result: GoalResult,
    refined: bool = False,
) -> dict[str, Path]:
    """Write the mask PNG, overlay PNG, JSON (and label-map PNG) of goal ``index``.

    Returns the written paths by kind (``mask``, ``overlay``, ``json``, maybe ``labels``).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{index:02d}_{slug(result.goal.text)}"
    paths = {
        "mask": out_dir / f"{stem}.mask.png",
        "overlay": out_dir / f"{stem}.overlay.png",
        "json": out_dir / f"{stem}.json",
    }
    mask_png(result.mask).save(paths["mask"])
    Image.fromarray(render_overlay(image, [result_layer(result, index)])).save(paths["overlay"])
    if result.label_map is not None:
        if result.label_map.max(initial=0) > 255:
            raise ValueError("label maps with more than 255 classes do not fit a mono8 PNG")
        paths["labels"] = out_dir / f"{stem}.labels.png"
        Image.fromarray(result.label_map.astype(np.uint8)).save(paths["labels"])
    record = result_to_json(result, image.shape[:2], refined)
    record["files"] = {k: p.name for k, p in paths.items() if k != "json"}
    paths["json"].write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    return paths


def _check_model_dir(path: Path) -> None:
    """A model directory (``config.json``) or a LoRA adapter directory (``adapter_config.json``,
    its base model named inside: :func:`~.model.loading.load_pretrained` loads both)."""
    from .model.loading import is_adapter_dir

    if not path.is_dir():
        raise UserError(f"model directory not found: {path}")
    if not (path / "config.json").is_file() and not is_adapter_dir(path):
        raise UserError(
            f"{path} is not a model directory: it has no config.json (nor adapter_config.json)"
        )


def _check_device(device: str) -> None:
    """UserError when this torch cannot use ``device`` (e.g. ``cuda`` on a CPU-only build)."""
    from .model.loading import check_device

    try:
        check_device(device)
    except ValueError as exc:
        raise UserError(f"--device: {exc}") from exc


def load_segmenter(args: argparse.Namespace, refiner: Any) -> Any:
    """The Segmenter for ``--model`` (helper A's ``Segmenter.from_pretrained``)."""
    from .engines import EngineUnavailable
    from .model.segmenter import Segmenter

    if getattr(args, "cuda_graphs", False) and getattr(args, "engine", "torch") != "torch":
        raise UserError("--cuda-graphs is a mode of the torch engine (--engine torch)")
    try:
        return Segmenter.from_pretrained(
            args.model,
            backbone=args.backbone,
            grid=args.grid,
            device=args.device,
            dtype=args.dtype,
            refiner=refiner,
            descriptor=args.descriptor,
            adapter=args.adapter,
            vision_tower=args.vision_tower,
            engine=getattr(args, "engine", "torch"),
            engine_options={"cuda_graphs": True} if getattr(args, "cuda_graphs", False) else None,
        )
    except EngineUnavailable as exc:
        raise UserError(str(exc)) from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"cannot load model from {args.model}: {exc}") from exc


def load_sam(args: argparse.Namespace) -> Any:
    """The refiner for ``--refiner``: ``"auto"``, ``"none"`` or ``"grabcut"`` (resolved by the
    Segmenter, which knows the model and its grid) or the SAM refiner loaded from the path."""
    if args.refiner in ("auto", "none", "grabcut"):
        return args.refiner
    from .refine import RefinerConfig, load_refiner

    try:
        config = RefinerConfig(prompt=args.refine_prompt)
        return load_refiner(args.refiner, args.device, config, dtype=args.dtype)
    except (OSError, ValueError, ImportError) as exc:
        raise UserError(f"cannot load SAM refiner {args.refiner}: {exc}") from exc


def run(args: argparse.Namespace) -> list[dict[str, Path]]:
    """Do the work of :func:`main` for parsed ``args``; raises UserError on user errors."""
    if args.grid is not None:
        try:
            check_grid(args.grid)
        except GoalError as exc:
            raise UserError(f"--grid: {exc}") from exc
    goals = make_goals(args.goals, args.task, parse_classes(args.classes), args.descriptor)
    image = read_image(args.image, args.max_image_pixels)
    _check_device(args.device)
    try:
        args.model = resolve_model(args.model)
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from None
    _check_model_dir(args.model)
    refiner = load_sam(args)
    segmenter = load_segmenter(args, refiner)
    segmenter.set_image(image)
    try:
        results = segmenter.segment(goals)
    except ValueError as exc:  # goals the model's label set rejects
        raise UserError(str(exc)) from exc
    written = []
    for i, result in enumerate(results):
        paths = write_result(args.out, i, image, result, refined=segmenter.refiner is not None)
        box = "none" if result.box is None else ",".join(str(v) for v in result.box)
        print(
            f"[{i}] {result.goal.text!r}: box={box} score={result.score:.3f} "
            f"steps={result.model_steps} -> {paths['mask']}"
        )
        written.append(paths)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``text4seg-segment``; returns the exit status (0 ok, 2 user error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed usage and the error
        return int(exc.code or 0)
    try:
        run(args)
    except UserError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
