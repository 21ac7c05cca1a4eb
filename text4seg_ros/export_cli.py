"""``text4seg-export``: prepare a model's ONNX graphs ahead of a deployment.

Exports the decoder graph and the vision graph of each camera frame size into ``MODEL/onnx``
(or ``--out``), with the manifest the ``onnxruntime`` and ``tensorrt`` engines check
(:mod:`text4seg_ros.engines.export`); graphs that are already current are kept. Then the node
or ``text4seg-segment --engine onnxruntime`` start without exporting::

    text4seg-export models/demo --size 480x640
    ros2 launch text4seg_ros perception.launch.py model_path:=models/demo engine:=onnxruntime

Exit status 0 on success, 2 on a user error (one line on stderr).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _size(text: str) -> tuple[int, int]:
    h, sep, w = text.lower().partition("x")
    if not sep or not h.isdigit() or not w.isdigit() or int(h) < 1 or int(w) < 1:
        raise argparse.ArgumentTypeError(f"size must be HEIGHTxWIDTH in pixels, got {text!r}")
    return int(h), int(w)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``text4seg-export``."""
    p = argparse.ArgumentParser(prog="text4seg-export", description=__doc__.split("\n")[0])
    p.add_argument("model", type=Path, help="model directory (any layout Segmenter loads)")
    p.add_argument("--backbone", default=None, help="backbone name (default: from the model)")
    p.add_argument(
        "--size",
        type=_size,
        action="append",
        default=None,
        help="camera frame size HEIGHTxWIDTH to export a vision graph for (repeatable; "
        "default 480x640)",
    )
    p.add_argument("--out", type=Path, default=None, help="folder (default MODEL/onnx)")
    p.add_argument("--dtype", default="float32", help="weights dtype of the graphs (float32)")
    p.add_argument("--device", default="cpu", help="torch device used to export (cpu)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.model.is_dir():
        print(f"text4seg-export: model directory not found: {args.model}", file=sys.stderr)
        return 2
    from .engines.export import OnnxBundle, check_exportable, vision_inputs
    from .model.loading import as_dtype, load_pretrained

    try:
        loaded = load_pretrained(
            args.model, backbone=args.backbone, device=args.device, dtype=as_dtype(args.dtype)
        )
        check_exportable(loaded.model, loaded.backbone)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"text4seg-export: {exc}", file=sys.stderr)
        return 2
    out = args.out or args.model / "onnx"
    bundle = OnnxBundle(loaded.model, loaded.backbone, out)
    start = time.perf_counter()
    bundle.decoder()
    for h, w in args.size or [(480, 640)]:
        frame = np.zeros((h, w, 3), np.uint8)
        # only the image tensors are used: any question serves a question-first prompt
        question = "object" if loaded.backbone.per_goal_prefix else None
        inputs = loaded.backbone.preprocess(loaded.processor, frame, question=question)
        pixels, extra = vision_inputs(dict(inputs))
        param = next(loaded.model.parameters())
        pixels = pixels.to(param.device, param.dtype)
        extra = {k: v.to(param.device) for k, v in extra.items()}
        print(f"vision graph for {h}x{w}: {bundle.vision(pixels, extra).name}")
    print(f"ONNX graphs of {args.model} in {out} ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
