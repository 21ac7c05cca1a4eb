"""text4seg-segment checks goals, grid, images and device as the node does (shared code)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import text4seg_ros.cli as cli
from text4seg_ros import goals as core_goals
from text4seg_ros.cli import UserError, main, make_goals, read_image
from text4seg_ros.model.loading import check_device

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def no_loading(monkeypatch):
    """Fail the test if the CLI gets as far as loading a model or SAM."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded although the input is invalid")

    monkeypatch.setattr(cli, "load_segmenter", refuse)
    monkeypatch.setattr(cli, "load_sam", refuse)


@pytest.fixture()
def files(tmp_path: Path) -> tuple[Path, Path]:
    image = tmp_path / "frame.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llava"}')
    return image, model


def _one_line_exit_2(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    "goal, message",
    [
        ("x" * 10_000, "goal text has 10000 characters; max_goal_chars is 256"),
        ("the cup\nand more", "control characters"),
        ("others", "background label"),
        ("bad \ufffd bytes", "not valid UTF-8"),
        ("   ", "goal text is empty"),
    ],
)
def test_goals_the_node_rejects_exit_2_in_one_line(files, capsys, no_loading, goal, message):
    image, model = files
    err = _one_line_exit_2(capsys, [str(image), "cup", goal, "--model", str(model)])
    assert "goal 1" in err and message in err
    assert len(err) < 400  # the 10,000-character goal is not echoed back whole


def test_cli_and_node_accept_exactly_the_same_goals():
    """make_goals is validate_goal (the node's) plus planning, on the same inputs."""
    from text4seg_ros.ros import goals as node_goals

    assert node_goals.validate_goal is core_goals.validate_goal
    assert node_goals.GoalError is core_goals.GoalError
    samples = ["cup", "x" * 256, "x" * 257, "a\tb", "others", " ", "a|b", "the red mug", "é"]
    for text in samples:
        try:
            core_goals.validate_goal(text, "res", "0")
            node_ok = True
        except core_goals.GoalError:
            node_ok = False
        try:
            make_goals([text], "res", ())
            cli_ok = True
        except UserError:
            cli_ok = False
        assert cli_ok == node_ok, text


@pytest.mark.parametrize("grid", ["1", "0", "65", "-3"])
def test_grid_outside_the_nodes_range_exits_2(files, capsys, no_loading, grid):
    image, model = files
    err = _one_line_exit_2(capsys, [str(image), "cup", "--model", str(model), "--grid", grid])
    assert f"--grid: grid must be an int in 2..64, got {grid}" in err


def test_grid_range_is_the_nodes():
    pytest.importorskip("rcl_interfaces")
    from text4seg_ros.ros.params import SPECS

    assert SPECS["grid"].int_range == (0, core_goals.GRID_RANGE[1])  # 0: the model's grid
    assert core_goals.GRID_RANGE == (2, 64)
    assert SPECS["grid"].check(1) == "grid must be 0 (the model's grid) or 2..64, got 1"
    assert SPECS["grid"].check(0) is None and SPECS["grid"].check(64) is None
    assert core_goals.check_grid(2) == 2 and core_goals.check_grid(64) == 64
    for bad in (1, 65, 16.0, True, "16"):
        with pytest.raises(core_goals.GoalError):
            core_goals.check_grid(bad)


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "depthlike.png"
    values = np.array([[0x1000, 0x8000], [0xC000, 0xFFFF]], np.uint16)
    Image.fromarray(values).save(path)
    img = read_image(path)
    assert img.dtype == np.uint8 and img.shape == (2, 2, 3)
    assert img[..., 0].tolist() == [[16, 128], [192, 255]]


def test_float_image_is_refused_with_a_clear_message(files, tmp_path, capsys, no_loading):
    _, model = files
    path = tmp_path / "radiance.tiff"
    Image.fromarray(np.full((4, 4), 0.5, np.float32)).save(path)
    err = _one_line_exit_2(capsys, [str(path), "cup", "--model", str(model)])
    assert "floating-point pixels" in err and "radiance.tiff" in err


def test_image_larger_than_the_limit_is_refused(files, tmp_path, capsys, no_loading):
    _, model = files
    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(path)
    with pytest.raises(UserError, match="exceeds max_image_pixels 1000"):
        read_image(path, max_pixels=1000)
    argv = [str(path), "cup", "--model", str(model), "--max-image-pixels", "1000"]
    assert "exceeds max_image_pixels 1000" in _one_line_exit_2(capsys, argv)
    assert cli.build_parser().parse_args([str(path), "cup"]).max_image_pixels == 3840 * 2160


def test_cuda_device_without_cuda_is_one_line_exit_2(files, capsys, no_loading):
    image, model = files
    device = "cuda:99" if torch.cuda.is_available() else "cuda"
    err = _one_line_exit_2(capsys, [str(image), "cup", "--model", str(model), "--device", device])
    assert err.startswith("text4seg-segment: error: --device:")
    if torch.version.cuda is None:
        assert "built without CUDA" in err


def test_check_device():
    assert check_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="invalid device 'gpu0'"):
        check_device("gpu0")
    if torch.version.cuda is None:
        with pytest.raises(ValueError, match="without CUDA"):
            check_device("cuda:0")


def test_cuda_without_cuda_as_a_real_process(files, tmp_path):
    """The installed console script: exit 2 and one line on stderr, no traceback."""
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the CPU-only message cannot be produced")
    image, model = files
    exe = Path(sys.executable).with_name("text4seg-segment")
    if not exe.is_file():
        pytest.skip(f"{exe} is not installed (make setup installs it)")
    proc = subprocess.run(
        [str(exe), str(image), "cup", "--model", str(model), "--device", "cuda"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "built without CUDA" in lines[0], proc.stderr


def test_core_checks_never_import_rclpy():
    code = (
        "import sys, text4seg_ros.goals, text4seg_ros.images, text4seg_ros.cli; "
        "bad = [m for m in sys.modules if m.startswith(('rclpy', 'sensor_msgs'))]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=120)
