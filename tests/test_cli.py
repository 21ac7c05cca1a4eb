"""text4seg-segment: argument handling, user errors (exit 2), and the PNG / JSON writers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import read_mask_png
from PIL import Image

from text4seg_ros.cli import (
    UserError,
    build_parser,
    main,
    make_goals,
    mask_png,
    parse_classes,
    read_image,
    result_to_json,
    slug,
    write_result,
)
from text4seg_ros.descriptors import decode_mask, encode_mask, mask_to_box
from text4seg_ros.model.types import Goal, GoalResult, Timings
from text4seg_ros.overlay import PALETTE, TINT_ALPHA, render_overlay, result_layer
from text4seg_ros.prompts import Task


@pytest.fixture()
def image_file(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "frame.png"
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture()
def model_dir(tmp_path: Path) -> Path:
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text('{"model_type": "llava"}')
    return d


def _result(mask: np.ndarray, text: str = "the red mug", **kw) -> GoalResult:
    return GoalResult(
        goal=Goal(text=text, task=kw.pop("task", Task.RES), id="0", classes=kw.pop("classes", ())),
        mask=mask,
        box=mask_to_box(mask),
        score=0.75,
        descriptor=encode_mask(mask, text, 8) if mask.any() else "",
        labels=["others", text],
        model_steps=5,
        timings=Timings(encode_s=0.1, decode_s=0.2, refine_s=0.0, total_s=0.3),
        **kw,
    )


def test_parser_defaults_and_options() -> None:
    args = build_parser().parse_args(["img.jpg", "the cup", "a chair", "--model", "m"])
    assert args.goals == ["the cup", "a chair"] and args.model == Path("m")
    assert args.task == "res" and args.grid is None and args.device == "cpu"  # None: model's
    assert args.refiner == "auto" and args.refine_prompt == "points" and args.backbone is None
    assert (args.dtype, args.descriptor, args.adapter, args.vision_tower) == (
        "float32",
        "isd",
        None,
        None,
    )
    args = build_parser().parse_args(
        [
            "i.png",
            "x",
            "--model",
            "m",
            "--task",
            "open_vocab",
            "--classes",
            "cup,table",
            "--grid",
            "24",
            "--refiner",
            "sam.pth",
            "--refine-prompt",
            "box",
            "--out",
            "o",
            "--device",
            "cuda:0",
            "--backbone",
            "llava",
        ]
    )
    assert (args.task, args.grid, args.refine_prompt, args.backbone) == (
        "open_vocab",
        24,
        "box",
        "llava",
    )
    assert args.refiner == "sam.pth" and args.out == Path("o")


def test_dtype_choices_are_the_model_loaders() -> None:
    from text4seg_ros.model.loading import DTYPES

    (action,) = [a for a in build_parser()._actions if a.dest == "dtype"]
    assert list(action.choices) == list(DTYPES)


def test_goals_and_classes() -> None:
    assert parse_classes(" cup, table,,chair ") == ("cup", "table", "chair")
    goals = make_goals(["a cup", "the chair "], "gres", ())
    assert [g.text for g in goals] == ["a cup", "the chair"]
    assert [g.id for g in goals] == ["0", "1"] and goals[0].task is Task.GRES
    ov = make_goals(["scene"], "open_vocab", ("cup", "table"))
    assert ov[0].classes == ("cup", "table") and ov[0].task is Task.OPEN_VOCAB
    with pytest.raises(UserError, match="--classes"):
        make_goals(["scene"], "open_vocab", ())
    with pytest.raises(UserError, match="only used with --task open_vocab"):
        make_goals(["cup"], "res", ("cup",))
    with pytest.raises(UserError, match="goal text is empty"):
        make_goals(["  "], "res", ())


def test_slug() -> None:
    assert slug("The red mug, left of the laptop!") == "the-red-mug-left-of-the-laptop"
    assert slug("???") == "goal"
    assert len(slug("x" * 100)) == 40


@pytest.mark.parametrize(
    "argv_tail, message",
    [
        (["--task", "dance"], "invalid choice"),
        (["--grid", "0"], "--grid: grid must be an int in 2..64, got 0"),
        (["--grid", "1"], "--grid: grid must be an int in 2..64, got 1"),
        (["--grid", "65"], "in 2..64"),
        (["--task", "open_vocab"], "needs --classes"),
        (["--engine", "onnxruntime", "--cuda-graphs"], "--cuda-graphs is a mode of the torch"),
    ],
)
def test_bad_options_exit_2(image_file, model_dir, capsys, argv_tail, message) -> None:
    code = main([str(image_file), "cup", "--model", str(model_dir), *argv_tail])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_without_model_option_the_shipped_model_is_used_or_named_missing(
    image_file, tmp_path, monkeypatch, capsys
) -> None:
    from text4seg_ros.model import meta

    monkeypatch.setattr(meta, "demo_model_candidates", lambda: [tmp_path / "models" / "demo"])
    assert main([str(image_file), "cup"]) == 2
    err = capsys.readouterr().err
    assert "shipped demo model is missing" in err and str(tmp_path / "models" / "demo") in err
    assert "Traceback" not in err


def test_without_model_and_grid_the_shipped_model_answers_at_its_grid(
    tiny_llava, image_file, tmp_path, monkeypatch
) -> None:
    """No --model: the demo model (here a tiny one put where the package looks); no --grid: the
    grid of its text4seg.json (4), so the descriptor has 4 rows."""
    import shutil

    from text4seg_ros.model import meta

    demo = tmp_path / "share" / "text4seg_ros" / "models" / "demo"
    shutil.copytree(tiny_llava, demo)
    meta.write_meta(demo, grid=4)
    monkeypatch.setattr(meta, "demo_model_candidates", lambda: [tmp_path / "src", demo])
    assert main([str(image_file), "the cup", "--out", str(tmp_path / "out")]) == 0
    record = json.loads((tmp_path / "out" / "00_the-cup.json").read_text())
    mask = np.asarray(Image.open(tmp_path / "out" / "00_the-cup.mask.png")) == 255
    assert np.array_equal(mask, decode_mask(record["descriptor"], "the cup", (48, 64), 4))


def test_missing_and_unreadable_image(tmp_path, model_dir, capsys) -> None:
    assert main([str(tmp_path / "nope.png"), "cup", "--model", str(model_dir)]) == 2
    assert "image file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.png"
    bad.write_text("this is not a PNG")
    assert main([str(bad), "cup", "--model", str(model_dir)]) == 2
    err = capsys.readouterr().err
    assert "cannot decode image" in err and "Traceback" not in err


def test_bad_model_dir(image_file, tmp_path, capsys) -> None:
    assert main([str(image_file), "cup", "--model", str(tmp_path / "none")]) == 2
    assert "model directory not found" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(image_file), "cup", "--model", str(empty)]) == 2
    assert "no config.json" in capsys.readouterr().err


def test_bad_refiner_path(image_file, model_dir, tmp_path, capsys) -> None:
    code = main(
        [str(image_file), "cup", "--model", str(model_dir), "--refiner", str(tmp_path / "sam.pth")]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "cannot load SAM refiner" in err and "does not exist" in err


def test_read_image_converts_to_rgb(tmp_path) -> None:
    gray = tmp_path / "g.png"
    Image.fromarray(np.full((5, 7), 200, dtype=np.uint8)).save(gray)
    img = read_image(gray)
    assert img.shape == (5, 7, 3) and img.dtype == np.uint8 and np.all(img == 200)


def test_mask_png_is_mono8_0_255() -> None:
    mask = np.zeros((4, 6), dtype=bool)
    mask[1:3, 2:5] = True
    png = mask_png(mask)
    assert png.mode == "L"
    arr = np.asarray(png)
    assert set(np.unique(arr).tolist()) == {0, 255} and np.array_equal(arr == 255, mask)


def test_overlay_tints_mask_and_draws_box() -> None:
    image = np.full((40, 50, 3), 100, dtype=np.uint8)
    mask = np.zeros((40, 50), dtype=bool)
    mask[10:30, 15:35] = True
    out = render_overlay(image, [result_layer(_result(mask), 1)])
    color = np.array(PALETTE[1], dtype=np.float32)
    tinted = np.rint((1 - TINT_ALPHA) * 100 + TINT_ALPHA * color).astype(np.uint8)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(out[20, 25], tinted), "inside: tinted"
    assert np.array_equal(out[5, 5], image[5, 5]), "outside the box: untouched"
    # box (15, 10, 35, 30): outline 2 px on the edge pixels, x2/y2 exclusive
    for y, x in ((10, 15), (11, 20), (29, 34), (20, 33)):
        assert np.array_equal(out[y, x], PALETTE[1]), (y, x)
    assert not np.array_equal(out[30, 25], PALETTE[1]) and np.array_equal(
        out[30, 25], image[30, 25]
    )
    with pytest.raises(ValueError, match="does not match"):
        render_overlay(image[:10], [result_layer(_result(mask))])


def test_overlay_of_empty_result_is_the_image() -> None:
    image = np.random.default_rng(1).integers(0, 256, (12, 9, 3), dtype=np.uint8)
    out = render_overlay(image, [result_layer(_result(np.zeros((12, 9), dtype=bool)))])
    assert np.array_equal(out, image)


def test_write_result_files_and_json(tmp_path) -> None:
    image = np.random.default_rng(2).integers(0, 256, (32, 40, 3), dtype=np.uint8)
    mask = decode_mask(
        encode_mask(np.pad(np.ones((10, 12), bool), ((5, 17), (8, 20))), "cup", 8),
        "cup",
        (32, 40),
        8,
    )
    result = _result(mask, "the cup")
    paths = write_result(tmp_path / "out", 3, image, result, refined=True)
    assert paths["mask"].name == "03_the-cup.mask.png"
    back = np.asarray(Image.open(paths["mask"]))
    assert back.shape == (32, 40) and np.array_equal(back == 255, mask)
    overlay = Image.open(paths["overlay"])
    assert overlay.mode == "RGB" and overlay.size == (40, 32)
    record = json.loads(paths["json"].read_text())
    assert record["goal"] == {"text": "the cup", "task": "res", "id": "0", "classes": []}
    assert record["image_size"] == [32, 40]
    assert record["box"] == list(mask_to_box(mask)) and record["area"] == int(mask.sum())
    assert record["score"] == 0.75 and record["model_steps"] == 5 and record["refined"] is True
    assert record["descriptor"] == result.descriptor and record["labels"] == ["others", "the cup"]
    assert record["timings"] == {"encode_s": 0.1, "decode_s": 0.2, "refine_s": 0.0, "total_s": 0.3}
    assert record["files"] == {"mask": "03_the-cup.mask.png", "overlay": "03_the-cup.overlay.png"}
    assert record["empty"] is False


def test_write_result_open_vocab_label_map_and_instances(tmp_path) -> None:
    image = np.zeros((20, 20, 3), dtype=np.uint8)
    labels = np.zeros((20, 20), dtype=np.int64)
    labels[:10] = 1
    labels[15:, 15:] = 2
    result = _result(
        labels > 0, "scene", task=Task.OPEN_VOCAB, classes=("wall", "cup"), label_map=labels
    )
    paths = write_result(tmp_path, 0, image, result)
    assert np.array_equal(np.asarray(Image.open(paths["labels"])), labels)
    over = np.asarray(Image.open(paths["overlay"]))
    assert not np.array_equal(over[2, 2], over[17, 17]), "each class its own colour"
    assert over.shape[0] > 20 and over.shape[1] == 20, "label map: legend strip below the frame"
    a, b = np.zeros((20, 20), bool), np.zeros((20, 20), bool)
    a[2:6, 2:6] = True
    b[12:18, 10:16] = True
    inst = _result(
        a | b, "cup", task=Task.INSTANCES, instances=[_result(a, "cup"), _result(b, "cup")]
    )
    record = result_to_json(inst, (20, 20))
    assert [i["box"] for i in record["instances"]] == [[2, 2, 6, 6], [10, 12, 16, 18]]
    over = render_overlay(image, [result_layer(inst)])
    assert np.array_equal(over[2, 2], PALETTE[0]) and np.array_equal(over[12, 10], PALETTE[1])


def test_writers_on_real_frame(tmp_path, data_dir) -> None:
    frames = sorted((data_dir / "davis_blackswan").rglob("*.jpg"))
    masks = sorted((data_dir / "davis_blackswan").rglob("*.png"))
    if not frames or not masks:
        pytest.skip(f"no jpg/png pairs under {data_dir / 'davis_blackswan'}")
    image = read_image(frames[0])
    mask = read_mask_png(masks[0])
    assert mask.shape == image.shape[:2]
    coarse = decode_mask(encode_mask(mask, "black swan"), "black swan", mask.shape)
    paths = write_result(tmp_path, 0, image, _result(coarse, "black swan"))
    assert np.array_equal(np.asarray(Image.open(paths["mask"])) == 255, coarse)
    assert json.loads(paths["json"].read_text())["image_size"] == list(mask.shape)


# -- end to end with a tiny random LLaVA (and a tiny SAM) --------------------------------------


@pytest.fixture(scope="module")
def tiny_llava(tiny_model_factory) -> Path:
    return tiny_model_factory("llava", grid=4)


def test_end_to_end_writes_valid_results(tiny_llava, image_file, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    argv = [str(image_file), "the cup", "a red chair", "--model", str(tiny_llava)]
    assert main([*argv, "--grid", "4", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "[0] 'the cup'" in stdout and "[1] 'a red chair'" in stdout
    for i, text in enumerate(("the cup", "a red chair")):
        stem = f"{i:02d}_{slug(text)}"
        record = json.loads((out / f"{stem}.json").read_text())
        mask = np.asarray(Image.open(out / f"{stem}.mask.png")) == 255
        assert mask.shape == (48, 64) and record["image_size"] == [48, 64]
        assert record["goal"]["text"] == text and record["goal"]["id"] == str(i)
        # The mask is exactly the descriptor decoded at image size (no refiner).
        assert np.array_equal(mask, decode_mask(record["descriptor"], text, (48, 64), 4))
        assert record["box"] == (None if not mask.any() else list(mask_to_box(mask)))
        assert record["labels"] == ["others", text] and record["refined"] is False
        assert record["model_steps"] >= 1 and 0.0 <= record["score"] <= 1.0
        assert record["timings"]["total_s"] > 0
        assert Image.open(out / f"{stem}.overlay.png").size == (64, 48)


def test_end_to_end_with_sam_refiner(tiny_llava, image_file, tmp_path) -> None:
    from text4seg_ros.refine.tiny import build_tiny_sam

    sam = build_tiny_sam(tmp_path / "sam")
    out = tmp_path / "out"
    argv = [str(image_file), "the cup", "--model", str(tiny_llava), "--grid", "4"]
    assert main([*argv, "--refiner", str(sam), "--refine-prompt", "box", "--out", str(out)]) == 0
    record = json.loads((out / "00_the-cup.json").read_text())
    assert record["refined"] is True
    coarse = decode_mask(record["descriptor"], "the cup", (48, 64), 4)
    # The written mask is the coarse (descriptor) mask refined by that SAM with the box prompt.
    from text4seg_ros.refine import RefinerConfig, load_refiner

    expected = load_refiner(sam, config=RefinerConfig(prompt="box")).refine(
        read_image(image_file), coarse
    )
    assert np.array_equal(np.asarray(Image.open(out / "00_the-cup.mask.png")) == 255, expected)
    if coarse.any():  # an empty coarse mask is not refined
        assert record["timings"]["refine_s"] > 0


def test_end_to_end_instances(tiny_llava, image_file, tmp_path) -> None:
    out = tmp_path / "out"
    argv = [str(image_file), "cup", "--model", str(tiny_llava), "--grid", "4"]
    assert main([*argv, "--task", "instances", "--out", str(out)]) == 0
    record = json.loads((out / "00_cup.json").read_text())
    assert record["goal"]["task"] == "instances"
    for inst in record["instances"]:
        if inst["box"] is not None:
            x1, y1, x2, y2 = inst["box"]
            assert 0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 48


def test_end_to_end_model_errors_exit_2(tiny_llava, image_file, tmp_path, capsys) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llava"}')
    assert main([str(image_file), "cup", "--model", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "cannot load model" in err and "Traceback" not in err
    assert main([str(image_file), "cup", "--model", str(tiny_llava), "--backbone", "gpt9"]) == 2
    assert "cannot load model" in capsys.readouterr().err


def test_segmenter_loads_sam_by_path(tiny_llava, image_file, tmp_path) -> None:
    """The Segmenter's own hook (refiner="sam", refiner_path) builds this package's SamRefiner."""
    from text4seg_ros.model.segmenter import Segmenter
    from text4seg_ros.refine import SamRefiner, load_refiner
    from text4seg_ros.refine.tiny import build_tiny_sam

    sam = build_tiny_sam(tmp_path / "sam")
    seg = Segmenter.from_pretrained(tiny_llava, grid=4, refiner="sam", refiner_path=sam)
    assert isinstance(seg.refiner, SamRefiner)
    image = read_image(image_file)
    seg.set_image(image)
    (result,) = seg.segment([Goal("the cup")])
    coarse = decode_mask(result.descriptor, "the cup", (48, 64), 4)
    assert np.array_equal(result.mask, load_refiner(sam).refine(image, coarse))
    assert result.box == mask_to_box(result.mask)


@pytest.mark.parametrize("text", ["a|b", "others"])
def test_goal_the_model_cannot_be_asked_exits_2_before_loading(
    image_file, model_dir, capsys, monkeypatch, text
) -> None:
    """make_goals plans every goal (no model needed): a bad label exits 2 before any loading."""
    import text4seg_ros.cli as cli

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded for a goal that cannot be asked")

    monkeypatch.setattr(cli, "load_segmenter", no_loading)
    monkeypatch.setattr(cli, "load_sam", no_loading)
    assert main([str(image_file), "cup", text, "--model", str(model_dir)]) == 2
    err = capsys.readouterr().err
    assert "goal 1" in err and "Traceback" not in err
    with pytest.raises(UserError, match="goal 0"):
        make_goals([text], "instances", (), "bsd")


def test_lora_adapter_directory_as_model(tiny_llava, image_file, tmp_path) -> None:
    """--model may name a LoRA adapter directory (adapter_config.json, no config.json) whose
    base is a local directory: it runs like --model BASE --adapter ADAPTER."""
    from peft import LoraConfig, get_peft_model

    from text4seg_ros.model.loading import load_pretrained

    base = load_pretrained(tiny_llava).model
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    lora.init_lora_weights = False
    adapter = tmp_path / "adapter"
    get_peft_model(base, lora).save_pretrained(adapter)
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(tiny_llava)
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    assert not (adapter / "config.json").exists()
    argv = [str(image_file), "the cup", "--grid", "4"]
    assert main([*argv, "--model", str(adapter), "--out", str(tmp_path / "a")]) == 0
    both = ["--model", str(tiny_llava), "--adapter", str(adapter), "--out", str(tmp_path / "b")]
    assert main([*argv, *both]) == 0
    a, b = (json.loads((tmp_path / d / "00_the-cup.json").read_text()) for d in "ab")
    assert a["descriptor"] == b["descriptor"] and a["score"] == pytest.approx(b["score"])
