"""The question-first prompt layout (``text4seg.json`` ``"prompt": "question_first"``): the
question before the image, one prefix per goal. Templates, the model directory's setting, the
Segmenter against the naive masked ``generate`` reference, a frame's goals encoded in one pass
and decoded in one batch over their stacked prefixes against goal after goal, the training
encoder against what the Segmenter feeds, and the ONNX Runtime engine against torch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_decoding_reference import GRID, naive_decode

from text4seg_ros.engines.base import Prefix, stack_prefixes
from text4seg_ros.engines.cuda_graphs import StaticTorchEngine
from text4seg_ros.model.meta import model_prompt, read_meta, write_meta
from text4seg_ros.model.registry import get_backbone
from text4seg_ros.model.segmenter import Segmenter
from text4seg_ros.model.tiny import build_tiny
from text4seg_ros.model.types import Goal
from text4seg_ros.prompts import Task

GOALS = [
    Goal("red cup", id="res"),
    Goal("chair", Task.GRES, id="gres"),
    Goal("", Task.OPEN_VOCAB, id="ov", classes=("cup", "table")),
    Goal("box", Task.INSTANCES, id="bsd"),
]


def test_templates_and_errors() -> None:
    llava = get_backbone("llava")
    first = llava.question_first()
    assert not llava.per_goal_prefix and first.per_goal_prefix
    assert first.render("Q?", "A", system="S") == "S USER: Q?\n<image> ASSISTANT: A</s>"
    assert llava.render("Q?", "A", system="S") == "S USER: <image>\nQ? ASSISTANT: A</s>"
    with pytest.raises(ValueError, match="question before the image"):
        first.prompt_prefix()
    with pytest.raises(ValueError, match="no question-first"):
        get_backbone("qwen2_vl").question_first()


def test_model_directory_setting(tmp_path: Path) -> None:
    assert model_prompt(tmp_path) == "image_first"  # no text4seg.json
    write_meta(tmp_path, grid=8, prompt="question_first")
    assert model_prompt(tmp_path) == "question_first"
    (tmp_path / "text4seg.json").write_text(json.dumps({"grid": 8, "prompt": "sideways"}))
    with pytest.raises(ValueError, match="prompt must be one of image_first, question_first"):
        read_meta(tmp_path)


def test_from_pretrained_reads_the_layout(tiny_model_factory, tmp_path) -> None:
    import shutil

    model_dir = tmp_path / "m"
    shutil.copytree(tiny_model_factory("llava", grid=GRID), model_dir)
    write_meta(model_dir, grid=GRID, prompt="question_first")
    seg = Segmenter.from_pretrained(model_dir)
    assert seg.backbone.per_goal_prefix and seg.grid == GRID
    image = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    seg.set_image(image)
    (res,) = seg.segment([Goal("red cup")])
    assert res.mask.shape == (24, 32) and res.timings.encode_s > 0


@pytest.mark.parametrize("seed", (0, 1))
def test_segmenter_equals_naive_generate_with_the_question_first(seed) -> None:
    model, processor = build_tiny("llava", grid=GRID, seed=seed)
    backbone = get_backbone("llava").question_first()
    seg = Segmenter(model.to(torch.float64), processor, backbone, grid=GRID, max_instances=2)
    image = np.random.default_rng(seed).integers(0, 256, (27, 35, 3), dtype=np.uint8)
    seg.set_image(image)
    answered = seg.segment(GOALS)  # one prefix per goal
    eos = seg.tokenizer.eos_token_id
    for goal, result in zip(GOALS, answered):
        tokens, _ = naive_decode(seg, image, goal)  # the whole prompt: question, image, answer
        plan = seg.plan([goal])[0]
        text = seg.codec.decode(tokens[:-1] if tokens[-1:] == [eos] else tokens)
        assert result.descriptor.endswith(text[len(plan.head) :]), goal.id
        alone = seg.segment([goal])[0]  # the batch does not change an answer
        assert alone.descriptor == result.descriptor and np.array_equal(alone.mask, result.mask)
    # the question really is in front of the image: two goals, two different prefixes
    a = backbone.preprocess(processor, image, question="Q one?")["input_ids"][0].tolist()
    b = backbone.preprocess(processor, image, question="Q two?")["input_ids"][0].tolist()
    image_id = model.config.image_token_index
    assert a != b and a.index(image_id) > 0 and a[-1] == image_id


@pytest.mark.parametrize("engine", ("torch", "static"))
def test_a_frames_goals_decode_in_one_batch_over_stacked_prefixes(engine) -> None:
    model, processor = build_tiny("llava", grid=GRID, seed=2)
    model = model.to(torch.float64)
    backbone = get_backbone("llava").question_first()
    chosen = "torch" if engine == "torch" else StaticTorchEngine(model, backbone, capture=False)
    seg = Segmenter(model, processor, backbone, grid=GRID, max_instances=2, engine=chosen)
    calls: list[int] = []  # language-model passes: prefixes and decoder steps
    model.model.language_model.register_forward_hook(lambda *_: calls.append(1))
    image = np.random.default_rng(7).integers(0, 256, (30, 26, 3), dtype=np.uint8)
    seg.set_image(image)
    answers, passes = {}, {}
    for batched in (False, True):
        seg.batch_prefixes = batched
        calls.clear()
        answers[batched] = seg.segment(GOALS)
        passes[batched] = len(calls)
    steps = [r.model_steps for r in answers[False]]
    for a, b in zip(answers[True], answers[False]):
        assert a.descriptor == b.descriptor and a.model_steps == b.model_steps
        assert np.array_equal(a.mask, b.mask)
    # goal after goal: a prefix pass and the decoder steps of each goal in turn; batched: one
    # pass over every goal's prefix, then the longest goal's steps
    assert passes[False] == len(GOALS) + sum(steps)
    assert passes[True] == 1 + max(steps) < passes[False]


@pytest.mark.parametrize("engine", ("torch", "static", "onnxruntime"))
def test_encode_prefixes_in_one_pass_equals_the_prefixes_stacked(engine, tmp_path) -> None:
    model, processor = build_tiny("llava", grid=GRID, seed=4)
    graph = engine == "onnxruntime"  # runs float32 models: padded matmuls round differently
    tol = 1e-5 if graph else 1e-9
    model = model.to(torch.float32 if graph else torch.float64)
    backbone = get_backbone("llava").question_first()
    if graph:
        pytest.importorskip("onnxruntime")
        from text4seg_ros.engines import make_engine

        chosen = make_engine(engine, model, backbone, folder=tmp_path)
    elif engine == "static":
        chosen = StaticTorchEngine(model, backbone, capture=False)
    else:
        chosen = Segmenter(model, processor, backbone, grid=GRID).engine
    image = np.random.default_rng(9).integers(0, 256, (20, 28, 3), dtype=np.uint8)
    questions = ["Where is the red cup?", "Segment every chair in the room, please.", "box"]
    one_pass = chosen.encode_prefixes(processor, image, None, questions)
    singles = [chosen.encode_prefix(processor, image, None, q) for q in questions]
    stacked = stack_prefixes(singles)
    assert one_pass.lengths == stacked.lengths and len(set(one_pass.lengths)) == 3
    assert torch.equal(one_pass.input_ids, stacked.input_ids)
    for got, want in zip(one_pass.keys + one_pass.values, stacked.keys + stacked.values):
        for row, n in enumerate(one_pass.lengths):  # the padding slots are the decoder's to mask
            torch.testing.assert_close(got[row, :, :n], want[row, :, :n], rtol=tol, atol=tol)


def _prefix(length: int, fill: float, delta: int = 0) -> Prefix:
    kv = [torch.full((1, 2, length, 4), fill) for _ in range(3)]
    return Prefix(kv, [t + 1 for t in kv], torch.arange(1, length + 1)[None], (8, 8), delta, 2)


def test_stack_prefixes_pads_each_row_after_its_own_prefix() -> None:
    stacked = stack_prefixes([_prefix(3, 1.0), _prefix(5, 2.0)])
    assert stacked.lengths == (3, 5) and stacked.length == 5 and stacked.row_lengths == [3, 5]
    assert [tuple(k.shape) for k in stacked.keys] == [(2, 2, 5, 4)] * 3
    assert (stacked.keys[0][0, :, :3] == 1).all() and (stacked.keys[0][0, :, 3:] == 0).all()
    assert (stacked.values[2][1] == 3).all()
    assert stacked.input_ids.tolist() == [[1, 2, 3, 0, 0], [1, 2, 3, 4, 5]]
    assert tuple(stacked.cache(2).layers[0].keys.shape) == (2, 2, 5, 4)
    with pytest.raises(ValueError, match="stacked prefix of 2 rows cannot fill a batch of 3"):
        stacked.cache(3)
    with pytest.raises(ValueError, match="one-row prefixes"):
        stack_prefixes([stacked])
    with pytest.raises(ValueError, match="not one frame"):
        stack_prefixes([_prefix(3, 1.0), _prefix(3, 1.0, delta=4)])
    with pytest.raises(ValueError, match="no prefixes"):
        stack_prefixes([])
    assert _prefix(3, 1.0).row_lengths == 3


def test_training_encoder_feeds_what_the_segmenter_feeds(tmp_path) -> None:
    from PIL import Image

    from training.data.sample import ChatSample
    from training.dataset import encode_sample, sample_lengths

    model, processor = build_tiny("llava", grid=GRID, seed=0)
    backbone = get_backbone("llava").question_first()
    image = np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "im.png")
    question = "Can you segment the red cup in the image?"
    answer = "Sure, here is the segmentation mask for 'red cup':\n<seg>" + (
        "others *4\n " * 3 + "others *2| red cup *2\n</seg>"
    )
    sample = ChatSample(
        id="s", image=str(tmp_path / "im.png"), question=question, answer=answer, task="res",
        grid=GRID,
    )  # fmt: skip
    item = encode_sample(sample, backbone, processor)
    prefix = backbone.preprocess(processor, image, question=question)["input_ids"][0]
    n = prefix.shape[0]
    assert item["input_ids"][:n].tolist() == prefix.tolist()  # question + image in the prefix
    assert (item["labels"][:n] == -100).all() and (item["labels"][n:] != -100).any()
    suffix = processor.tokenizer(" ASSISTANT: ", add_special_tokens=False)["input_ids"]
    assert item["input_ids"][n : n + len(suffix)].tolist() == suffix
    assert sample_lengths([sample], backbone, processor) == [item["input_ids"].shape[0]]


def test_onnxruntime_engine_answers_as_torch(tiny_model_factory, tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    import shutil

    model_dir = tmp_path / "m"
    shutil.copytree(tiny_model_factory("llava", grid=GRID), model_dir)
    write_meta(model_dir, grid=GRID, prompt="question_first")
    image = np.random.default_rng(5).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    answers = {}
    for engine in ("torch", "onnxruntime"):
        seg = Segmenter.from_pretrained(model_dir, engine=engine)
        seg.set_image(image)
        answers[engine] = [r.descriptor for r in seg.segment(GOALS[:2])]
    assert answers["onnxruntime"] == answers["torch"]


def test_demo_base_writes_the_layout_and_a_matching_chat_template(tmp_path) -> None:
    from transformers import AutoProcessor

    from training.demo_base import build_demo_base

    plain = build_demo_base(tmp_path / "plain", grid=4, layers=1, vision_layers=1)
    assert model_prompt(plain) == "image_first"  # the default: the shipped model's layout
    out = build_demo_base(
        tmp_path / "base", grid=4, prompt="question_first", layers=1, vision_layers=1
    )
    assert model_prompt(out) == "question_first"
    processor = AutoProcessor.from_pretrained(out)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q?"}]}]
    chat = processor.apply_chat_template(messages, add_generation_prompt=True)
    first = get_backbone("llava").question_first()
    assert chat == first.prompt_prefix(question="Q?") + " ASSISTANT:"
