"""The demo model's random starting point: a tiny LLaVA sized for tabletop scenes.

    python -m training.demo_base --out build/demo_model/base [--grid 8]

LLaVA because its CLIP vision tower has learned absolute position embeddings (location is
learned fast from random init; Qwen2-VL's tower has none and collapsed to "all others" in
earlier tests, ../shared/DEMO_MODEL_FACTS.md). The vision tower is grid-aligned: a 64 x 64
input cut into 8 x 8 patches gives 8 x 8 visual tokens, one per descriptor cell at G = 8 (the
demo's grid; models/demo/README.md says why not 16).
The tokenizer is trained with the tabletop vocabulary (kinds, plurals, colours, sizes,
relations) so a goal text is a few tokens and every label repeated in an answer stays short.
The default prompt layout is image-first, as in every published checkpoint; ``--prompt
question_first`` (what ``make demo-model`` passes) writes ``"prompt": "question_first"`` to
``text4seg.json`` (and a matching chat template): the question before the image, so the visual
tokens can attend to the goal's words. Trained with the loss on every answer token, a model of
this size learned to read the words that way where the image-first layout did not
(models/demo/README.md, runs R to X).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from text4seg_ros.model.meta import PROMPT_LAYOUTS, write_meta
from text4seg_ros.model.tiny import build_tiny_model
from text4seg_ros.model.tokenizer import LLAVA_QUESTION_FIRST_CHAT_TEMPLATE

from .data.synthetic import COLOURS
from .data.tabletop import KINDS, PLURALS, RELATIONS, SIZES

DEMO_GRID = 8
DEMO_PROMPT = "image_first"  # text4seg.json "prompt" (text4seg_ros.model.meta)
# Model sizes (see text4seg_ros.model.tiny.build_tiny_model): about 1.0M parameters. Five
# language layers: on the same recipe they reached a training loss of 0.6-0.7 where three
# plateaued at 0.8-0.9, and better target answers (models/demo/README.md, "Training history").
DEMO_SIZES: dict[str, int] = {
    "hidden": 128,
    "layers": 5,
    "heads": 4,
    "kv_heads": 2,
    "intermediate": 256,
    "vision_hidden": 64,
    "vision_layers": 2,
    "vision_heads": 4,
    "image_size": 64,
    "patch": 8,
    "vocab_size": 512,
}


def vocabulary_texts() -> list[str]:
    """Lines of the tabletop vocabulary for the tokenizer's BPE training."""
    lines = []
    for kind in KINDS:
        for colour in COLOURS:
            for size in SIZES:
                lines.append(f"{size} {colour} {kind} {PLURALS[kind]} {colour} objects")
            for rel in RELATIONS:
                lines.append(f"{kind} {rel} the {colour} {kind}")
    return lines * 3  # weight: merges for these words win over the generic corpus


def build_demo_base(
    out_dir: str | Path,
    grid: int = DEMO_GRID,
    seed: int = 0,
    prompt: str = DEMO_PROMPT,
    **sizes: int,
) -> Path:
    """Save the random demo base model (``DEMO_SIZES`` updated by ``sizes``) in ``out_dir``,
    with ``text4seg.json`` holding its grid and prompt layout; returns ``out_dir``."""
    out = build_tiny_model(
        "llava", Path(out_dir), grid, seed, vocabulary_texts(), **{**DEMO_SIZES, **sizes}
    )
    write_meta(out, grid=grid, prompt=prompt)
    if prompt == "question_first":  # what transformers' apply_chat_template writes, too
        (out / "chat_template.jinja").write_text(LLAVA_QUESTION_FIRST_CHAT_TEMPLATE)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: build the base model."""
    ap = argparse.ArgumentParser(prog="python -m training.demo_base", description=__doc__)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--grid", type=int, default=DEMO_GRID)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prompt", choices=PROMPT_LAYOUTS, default=DEMO_PROMPT)
    for key, value in DEMO_SIZES.items():
        ap.add_argument(f"--{key.replace('_', '-')}", type=int, default=value, dest=key)
    args = ap.parse_args(argv)
    sizes = {k: getattr(args, k) for k in DEMO_SIZES}
    out = build_demo_base(args.out, args.grid, args.seed, args.prompt, **sizes)
    print(f"demo base model written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
