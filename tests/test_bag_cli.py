"""``text4seg-bag eval`` exit status: 1 when pairs failed or none was answered."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from text4seg_ros.bag import evaluate
from text4seg_ros.bag.cli import main
from text4seg_ros.bag.record import make_goals, record_images
from text4seg_ros.model.types import GoalResult


class FakeSegmenter:
    """Answers every goal with an all-false mask, or raises on every frame (``fail``)."""

    def __init__(self, fail: bool) -> None:
        self.fail, self.shape = fail, None

    def set_image(self, rgb: np.ndarray) -> None:
        if self.fail:
            raise RuntimeError("model broke")
        self.shape = rgb.shape[:2]

    def segment(self, goals):
        mask = np.zeros(self.shape, bool)
        return [GoalResult(g, mask, None, 1.0, "", ["others"], 1) for g in goals]


@pytest.fixture
def bag(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        Image.fromarray(np.full((8, 12, 3), 40 * i, np.uint8)).save(images / f"{i}.png")
    record_images(images, tmp_path / "bag", goals=make_goals(["a cup"]), start_ns=10**18)
    return tmp_path / "bag"


@pytest.mark.parametrize("fail, status", [(False, 0), (True, 1)])
def test_eval_exits_1_when_the_model_fails_on_every_frame(
    bag: Path, tmp_path: Path, monkeypatch, capsys, fail: bool, status: int
) -> None:
    monkeypatch.setattr(evaluate, "load_segmenter", lambda *a, **k: FakeSegmenter(fail))
    argv = ["eval", str(bag), "--model", "unused", "--out", str(tmp_path / "r"), "--no-progress"]
    assert main(argv) == status
    assert (tmp_path / "r" / "report.json").is_file()  # the report is written either way
    if fail:
        assert "2 pairs with status error, 0 of 2 answered" in capsys.readouterr().err
