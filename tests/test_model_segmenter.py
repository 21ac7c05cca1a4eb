"""Segmenter: tiny LLaVA, Qwen2-VL, Qwen2.5-VL and InternVL load from disk and answer goals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from text4seg_ros.descriptors import OTHERS, parse_rrle
from text4seg_ros.descriptors.bsd import parse_bsd
from text4seg_ros.descriptors.geometry import grid_to_labels
from text4seg_ros.metrics import mask_to_box
from text4seg_ros.model.segmenter import Segmenter
from text4seg_ros.model.tiny import TINY_BACKBONES, build_tiny_model
from text4seg_ros.model.types import Goal, GoalResult
from text4seg_ros.prompts import Task

torch.set_num_threads(1)
GRID = 8
IMAGE = np.random.default_rng(2).integers(0, 255, (30, 41, 3), dtype=np.uint8)
GOALS = [
    Goal("red cup", id="a"),
    Goal("chair", Task.GRES, id="b"),
    Goal("mug", Task.REC, id="c"),
    Goal("", Task.OPEN_VOCAB, id="d", classes=("cup", "table")),
    Goal("box", Task.INSTANCES, id="e"),
]


@pytest.fixture(scope="module", params=TINY_BACKBONES)
def segmenter(request, tmp_path_factory):
    path = build_tiny_model(request.param, tmp_path_factory.mktemp(request.param), seed=7)
    seg = Segmenter.from_pretrained(path, grid=GRID)  # backbone from config.json
    assert seg.backbone.name == request.param
    seg.set_image(IMAGE)
    return seg


def check_result(result: GoalResult, goal: Goal) -> None:
    """A valid descriptor, read back exactly into the mask, box and labels."""
    h, w = IMAGE.shape[:2]
    assert result.goal is goal
    assert result.mask.shape == (h, w) and result.mask.dtype == bool
    assert result.box == mask_to_box(result.mask)
    assert 0.0 <= result.score <= 1.0
    assert result.model_steps >= 1
    assert result.repairs == []  # constrained decoding never needs a repair
    assert result.timings.decode_s > 0 and result.timings.encode_s > 0
    task = Task.parse(goal.task)
    if task is Task.INSTANCES:
        instances, repairs = parse_bsd(result.descriptor, [goal.text], GRID)
        assert repairs == [] and len(instances) == len(result.instances)
        union = np.zeros((h, w), bool)
        for inst in result.instances:
            assert inst.box == mask_to_box(inst.mask)
            assert inst.descriptor.startswith("<ref>") and inst.descriptor in result.descriptor
            (alone,), _ = parse_bsd(inst.descriptor, [goal.text], GRID)
            assert alone.label == inst.labels[0] == goal.text
            union |= inst.mask
        assert np.array_equal(union, result.mask)
        return
    assert result.descriptor.startswith("<seg>") and result.descriptor.endswith("</seg>")
    names = [OTHERS, *goal.classes] if task is Task.OPEN_VOCAB else [OTHERS, goal.text]
    assert result.labels == names
    parsed = parse_rrle(result.descriptor, names, GRID)
    assert parsed.valid, parsed.repairs
    rows = result.descriptor.removeprefix("<seg>").removesuffix("</seg>").split("\n ")
    assert len(rows) == GRID
    assert np.array_equal(grid_to_labels(parsed.grid, (h, w)) > 0, result.mask)
    if task is Task.OPEN_VOCAB:
        assert np.array_equal(result.label_map, grid_to_labels(parsed.grid, (h, w)))
    else:
        assert result.label_map is None


def test_several_goals_in_one_call(segmenter):
    results = segmenter.segment(GOALS)
    assert len(results) == len(GOALS)
    for result, goal in zip(results, GOALS):
        check_result(result, goal)
    assert len({id(r.timings) for r in results}) == 1  # one batch, one set of timings


def test_batched_equals_single(segmenter):
    batched = segmenter.segment(GOALS)
    for goal, together in zip(GOALS, batched):
        (alone,) = segmenter.segment([goal])
        assert alone.descriptor == together.descriptor
        assert alone.model_steps == together.model_steps
        assert alone.score == pytest.approx(together.score, rel=1e-4)
        assert np.array_equal(alone.mask, together.mask)


def test_prefix_reused_across_calls_and_frames(segmenter):
    first = segmenter.segment(GOALS[:2])
    again = segmenter.segment(GOALS[:2])
    assert [r.descriptor for r in first] == [r.descriptor for r in again]
    other = np.ascontiguousarray(IMAGE[::-1, ::-1])
    segmenter.set_image(other[:20])
    assert segmenter.image_size == (20, 41)
    assert segmenter.segment(GOALS[:1])[0].mask.shape == (20, 41)
    segmenter.set_image(IMAGE)


def test_argument_errors(segmenter):
    with pytest.raises(TypeError, match="uint8"):
        segmenter.set_image(IMAGE.astype(np.float64))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        segmenter.set_image(IMAGE[..., :1].copy())
    with pytest.raises(ValueError, match="goal 0 \\(id 'x'\\): unknown task 'paint'"):
        segmenter.segment([Goal("cup", task="paint", id="x")])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="goal 1: open-vocabulary goals need a non-empty classes"):
        segmenter.segment([Goal("cup"), Goal("", Task.OPEN_VOCAB)])
    with pytest.raises(ValueError, match="goal 0: .*must not contain"):
        segmenter.segment([Goal("cup | mug")])
    with pytest.raises(ValueError, match="must not be 'others'"):
        segmenter.segment([Goal("others")])
    with pytest.raises(TypeError, match="goal 0: expected a Goal, got str"):
        segmenter.segment(["cup"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="sequence of Goal"):
        segmenter.segment(Goal("cup"))  # type: ignore[arg-type]
    assert segmenter.segment([]) == []


def test_segment_before_set_image(tmp_path):
    path = build_tiny_model("llava", tmp_path / "m")
    seg = Segmenter.from_pretrained(path, backbone="llava", grid=4)
    with pytest.raises(RuntimeError, match="before set_image"):
        seg.segment([Goal("cup")])
    with pytest.raises(ValueError, match="unknown descriptor 'rle'"):
        Segmenter(seg.model, seg.processor, "llava", descriptor="rle")
    with pytest.raises(ValueError, match="unknown engine 'magic'"):
        Segmenter.from_pretrained(path, engine="magic")
    with pytest.raises(ValueError, match="refiner='sam' needs refiner_path"):
        Segmenter.from_pretrained(path, refiner="sam")


def test_box_wise_descriptor_for_referring_goals(tmp_path):
    path = build_tiny_model("qwen2_vl", tmp_path / "m", seed=3)
    seg = Segmenter.from_pretrained(path, grid=4, descriptor="bsd", max_instances=2)
    seg.set_image(IMAGE)
    (result,) = seg.segment([Goal("cup")])
    instances, repairs = parse_bsd(result.descriptor, ["cup"], 4)
    assert repairs == [] and len(instances) == len(result.instances) <= 2
    assert result.box == mask_to_box(result.mask)


class ShrinkingRefiner:
    """A real (if simple) refiner: erodes the coarse mask to its tight box's inner half."""

    def __init__(self) -> None:
        self.calls = 0

    def refine(self, image, coarse_mask, box=None, rng=None):
        self.calls += 1
        x1, y1, x2, y2 = mask_to_box(coarse_mask)
        out = np.zeros_like(coarse_mask)
        out[y1 : (y1 + y2 + 1) // 2, x1 : (x1 + x2 + 1) // 2] = True
        return out


def test_refiner_is_applied(tmp_path):
    path = build_tiny_model("llava", tmp_path / "m", seed=7)
    refiner = ShrinkingRefiner()
    seg = Segmenter.from_pretrained(path, grid=GRID, refiner=refiner)
    plain = Segmenter(seg.model, seg.processor, "llava", grid=GRID)
    seg.set_image(IMAGE)
    plain.set_image(IMAGE)
    goals = [Goal("red cup"), Goal("", Task.OPEN_VOCAB, classes=("cup",))]
    refined, coarse = seg.segment(goals), plain.segment(goals)
    assert refined[0].descriptor == coarse[0].descriptor
    assert coarse[0].mask.any()  # seed 7 gives a non-empty coarse mask: there is work to do
    assert refiner.calls == 1
    assert 0 < refined[0].mask.sum() < coarse[0].mask.sum()
    assert refined[0].box == mask_to_box(refined[0].mask)
    assert refined[0].timings.refine_s > 0
    assert np.array_equal(refined[1].mask, coarse[1].mask)  # label maps are not refined


def test_bfloat16_weights(tmp_path):
    path = build_tiny_model("internvl", tmp_path / "m", seed=7)
    seg = Segmenter.from_pretrained(path, grid=4, dtype="bfloat16")
    assert seg.model.dtype == torch.bfloat16
    seg.set_image(IMAGE)
    (result,) = seg.segment([Goal("cup")])
    assert parse_rrle(result.descriptor, [OTHERS, "cup"], 4).valid


@pytest.mark.gpu
def test_cuda_matches_cpu(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    path = build_tiny_model("qwen2_vl", tmp_path / "m", seed=7)
    cpu = Segmenter.from_pretrained(path, grid=GRID)
    gpu = Segmenter.from_pretrained(path, grid=GRID, device="cuda")
    for seg in (cpu, gpu):
        seg.set_image(IMAGE)
    for a, b in zip(cpu.segment(GOALS), gpu.segment(GOALS)):
        check_result(b, b.goal)
        assert a.descriptor == b.descriptor


def test_real_camera_frame(data_dir, tmp_path):
    """A real 854 x 480 DAVIS frame through the whole path at G = 16 (random weights)."""
    from PIL import Image

    frames = sorted((data_dir / "davis_blackswan" / "JPEGImages").rglob("*.jpg"))
    assert frames, "no JPEG frames in davis_blackswan/JPEGImages"
    with Image.open(frames[0]) as im:
        frame = np.asarray(im.convert("RGB"))
    path = build_tiny_model("qwen2_5_vl", tmp_path / "m", seed=1)
    seg = Segmenter.from_pretrained(path, grid=16)
    seg.set_image(frame)
    goals = [Goal("black swan"), Goal("water", Task.GRES)]
    for goal, result in zip(goals, seg.segment(goals)):
        assert result.mask.shape == frame.shape[:2] == (480, 854)
        parsed = parse_rrle(result.descriptor, [OTHERS, goal.text], 16)
        assert parsed.valid and result.descriptor.count("\n ") == 15


def test_suffix_ids_are_the_tokenizers_and_the_cache_is_bounded(segmenter, monkeypatch):
    """Prompt suffixes are tokenized once per text (goals repeat every frame): the cached ids
    are the tokenizer's, and the cache is cleared when it holds SUFFIX_CACHE texts."""
    from text4seg_ros.model.answers import plan_goal

    plans = [plan_goal(g, 0, "isd") for g in GOALS[:4]]
    for plan in plans:
        text = segmenter.backbone.prompt_suffix(plan.question, plan.prompt_answer)
        expected = segmenter.tokenizer(text, add_special_tokens=False)["input_ids"]
        assert segmenter.suffix_ids(plan) == expected == segmenter.suffix_ids(plan)
    monkeypatch.setattr(segmenter, "SUFFIX_CACHE", 2)
    segmenter._suffixes.clear()
    for plan in plans:
        segmenter.suffix_ids(plan)
        assert 1 <= len(segmenter._suffixes) <= 2


def test_prompt_descriptor_boundary_check():
    """Qwen's pre-tokenizer glues '>' to the next word: the boundary check must say so."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from text4seg_ros.model.segmenter import joins_cleanly
    from text4seg_ros.model.tiny import build_tiny

    qwen_regex = (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
        r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    )
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(qwen_regex), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    backend.train_from_iterator(["<seg>others *16\n cup *4| others *12\n</seg>"] * 20, trainer)
    qwen_like = PreTrainedTokenizerFast(tokenizer_object=backend)
    assert not joins_cleanly(qwen_like)
    assert joins_cleanly(build_tiny("qwen2_vl")[1].tokenizer)


@pytest.mark.slow
def test_thousand_random_generations_are_valid(tmp_path):
    """1,000 constrained answers of random-weight VLMs (all tasks, four backbones): 0 invalid."""
    import random

    rng = random.Random(0)
    words = "red green small cup mug chair table box laptop person floor".split()
    kinds = [Task.RES, Task.GRES, Task.REC, Task.OPEN_VOCAB, Task.INSTANCES]
    checked = 0
    for b, backbone in enumerate(TINY_BACKBONES):
        path = build_tiny_model(backbone, tmp_path / backbone, seed=20 + b)
        seg = Segmenter.from_pretrained(path, grid=4, max_instances=2)
        for frame in range(10):
            size = (rng.randint(8, 60), rng.randint(8, 60), 3)
            seg.set_image(np.random.default_rng(frame).integers(0, 255, size, dtype=np.uint8))
            goals = []
            for _ in range(25):
                task = rng.choice(kinds)
                if task is Task.OPEN_VOCAB:
                    goals.append(Goal("", task, classes=tuple(rng.sample(words, 3))))
                else:
                    goals.append(Goal(" ".join(rng.sample(words, rng.randint(1, 3))), task))
            for goal, result in zip(goals, seg.segment(goals)):
                assert result.repairs == [], (backbone, goal, result.descriptor)
                if Task.parse(goal.task) is Task.INSTANCES:
                    assert parse_bsd(result.descriptor, [goal.text], 4)[1] == []
                else:
                    names = [OTHERS, *goal.classes] if goal.classes else [OTHERS, goal.text]
                    assert parse_rrle(result.descriptor, names, 4).valid
                checked += 1
    assert checked == 1000


def test_sam_refiner_loads_in_the_models_dtype(tmp_path):
    """refiner="sam" loads SAM in from_pretrained's dtype (it stayed float32 before)."""
    from text4seg_ros.refine import SamRefiner
    from text4seg_ros.refine.tiny import build_tiny_sam

    path = build_tiny_model("llava", tmp_path / "m", seed=7)
    sam = build_tiny_sam(tmp_path / "sam")
    seg = Segmenter.from_pretrained(path, grid=4, dtype="bfloat16", refiner="sam", refiner_path=sam)
    assert isinstance(seg.refiner, SamRefiner)
    assert next(seg.refiner.backend.model.parameters()).dtype == torch.bfloat16
    seg.set_image(IMAGE)
    (result,) = seg.segment([Goal("cup")])
    assert result.mask.shape == IMAGE.shape[:2] and result.mask.dtype == bool
    plain = Segmenter.from_pretrained(path, grid=4, refiner="sam", refiner_path=sam)
    assert next(plain.refiner.backend.model.parameters()).dtype == torch.float32
