"""Answer tokens counted from a descriptor equal the tokens the constrained decoder wrote."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from text4seg_ros.bag.tokens import load_token_counter  # noqa: E402
from text4seg_ros.model import segmenter as segmenter_module  # noqa: E402
from text4seg_ros.model.types import Goal  # noqa: E402
from text4seg_ros.prompts import Task  # noqa: E402


@pytest.mark.parametrize("backbone", ["llava", "qwen2_vl"])
def test_counted_tokens_are_the_decoders_tokens(tmp_path: Path, monkeypatch, backbone) -> None:
    from text4seg_ros.model.segmenter import Segmenter
    from text4seg_ros.model.tiny import build_tiny_model

    model = build_tiny_model(backbone, tmp_path / backbone, grid=4)
    outputs = []
    real = segmenter_module.constrained_generate

    def spy(*args, **kwargs):
        outputs.extend(real(*args, **kwargs))
        return outputs[-len(args[1]) :]

    monkeypatch.setattr(segmenter_module, "constrained_generate", spy)
    seg = Segmenter.from_pretrained(model, grid=4, max_instances=2)
    seg.set_image(np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8))
    goals = [
        Goal("red mug", Task.RES), Goal("blue objects", Task.GRES), Goal("ball", Task.REC),
        Goal("", Task.OPEN_VOCAB, classes=("mug", "ball")), Goal("mug", Task.INSTANCES),
    ]  # fmt: skip
    results = seg.segment(goals)
    count = load_token_counter(model)
    for goal, result, out in zip(goals, results, outputs):
        assert count(goal, result.descriptor) == len(out.tokens), goal
        assert result.model_steps == out.forward_calls <= len(out.tokens)
