"""The prompt / descriptor boundary: what the Segmenter feeds and generates is, token for token,
what training tokenizes (training/dataset.py), for SentencePiece (Llama-2, the LLaVA-1.5 family)
and Qwen-regex tokenizers; and a tiny LLaVA in the original research layout with a bare
SentencePiece ``tokenizer.model`` answers every kind of goal through ``Segmenter.segment``.

Teacher forcing: the model's real step runs (real caches), then its logits are replaced by a
one-hot of the training sequence's next token at each logical position. The constrained decoder
then writes the training answer exactly when its grammar, suffix and head tokenize as training
does; a single differing token (e.g. a suffix cut at ``<seg>`` that Qwen writes ``">cup"``)
shifts every later position and the answer departs from the teacher.
"""

from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from text4seg_ros.decoding import constrained_generate
from text4seg_ros.decoding.general_bpe import QWEN2_PATTERN
from text4seg_ros.descriptors.bsd import encode_instances, parse_bsd
from text4seg_ros.descriptors.rrle import OTHERS, SEG_CLOSE, SEG_OPEN, encode_grid, parse_rrle
from text4seg_ros.model import tiny
from text4seg_ros.model.answers import GoalPlan
from text4seg_ros.model.llava_original import save_llava_original
from text4seg_ros.model.segmenter import Segmenter, joins_cleanly
from text4seg_ros.model.tokenizer import build_tokenizer, llama_tokenizer, train_sentencepiece
from text4seg_ros.model.types import Goal
from text4seg_ros.prompts import Task, answer_prefix
from training.data.sample import ChatSample
from training.dataset import encode_sample, load_image

G = 6
LABEL = "red mug left of the laptop"  # several words: several "▁" marks in SentencePiece
IMAGE = np.random.default_rng(4).integers(0, 255, (40, 56, 3), dtype=np.uint8)


def sentencepiece_llava(root: Path) -> Path:
    """A tiny LLaVA saved in the original layout whose tokenizer is a bare ``tokenizer.model``
    (Llama-2-shaped SentencePiece trained on general text), weights sized to its vocabulary."""
    pytest.importorskip("sentencepiece")
    model, processor = tiny.build_tiny("llava", grid=G, seed=3)
    out = save_llava_original(model, processor, root / "llava", root / "clip")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (out / name).unlink(missing_ok=True)
    tok = llama_tokenizer(train_sentencepiece(2000, 300_000), out)
    rows = len(tok)
    lm = load_file(str(out / "model.safetensors"))
    hidden = lm["model.embed_tokens.weight"].shape[1]
    gen = torch.Generator().manual_seed(0)  # rows of a model trained with this vocabulary
    lm["model.embed_tokens.weight"] = torch.randn(rows, hidden, generator=gen) * 0.5
    lm["lm_head.weight"] = torch.randn(rows, hidden, generator=gen) * 0.5
    save_file(lm, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((out / "config.json").read_text())
    config.update(vocab_size=rows, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    (out / "config.json").write_text(json.dumps(config))
    return out


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory) -> Path:
    return sentencepiece_llava(tmp_path_factory.mktemp("sp_llava"))


def qwen_regex_segmenter() -> Segmenter:
    """A tiny Qwen2-VL whose byte-level BPE pre-tokenizes with Qwen2's own regex."""
    # Whole answers in its corpus, so that like Qwen's own vocabulary it holds merges across
    # the "<seg>" marker (">others", ">red"), which its regex keeps in one pre-token.
    answers = [
        f"{answer_prefix(Task.RES, lab)}<seg>{lab} *2| others *4\n others *6\n</seg>"
        for lab in (LABEL, "cup", "others", "dining table")
    ] * 20
    build = functools.partial(build_tokenizer, pattern=QWEN2_PATTERN, extra_texts=answers)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tiny, "build_tokenizer", build)
        model, processor = tiny.build_tiny("qwen2_vl", grid=G, seed=5)
    return Segmenter(model.float(), processor, "qwen2_vl", grid=G, max_instances=2)


@pytest.fixture(scope="module", params=["sentencepiece_llava", "qwen_regex_qwen2_vl"])
def seg(request, llava_dir) -> Segmenter:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no boundary warning
        if request.param == "sentencepiece_llava":
            return Segmenter.from_pretrained(llava_dir, grid=G, max_instances=2)
        return qwen_regex_segmenter()


def known_descriptor(kind: str, names: list[str]) -> str:
    """A fixed valid descriptor (the text after the answer start) whose first label is a class."""
    if kind == "bsd":
        masks = [np.zeros((40, 56), bool), np.zeros((40, 56), bool)]
        masks[0][3:22, 4:30] = True
        masks[1][25:39, 35:55] = True
        return encode_instances(masks, names[1], G)
    cells = np.zeros((G, G), np.int64)
    cells[:3, :4] = 1
    cells[4, 2:] = len(names) - 1
    return encode_grid(cells, names) + SEG_CLOSE


def teacher(step, sequence: list[int]):
    """``step`` whose logits are one-hot at ``sequence[p + 1]`` for logical position ``p``."""

    def forced(input_ids, position_ids, attention_mask, cache):
        logits, cache = step(input_ids, position_ids, attention_mask, cache)
        nxt = torch.tensor(sequence + [0])[(position_ids + 1).clamp(max=len(sequence))]
        out = torch.full_like(logits, -1e4)
        out.scatter_(2, nxt[..., None].to(out.device), 1e4)
        return out, cache

    return forced


GOALS = [
    Goal(LABEL, Task.RES),
    Goal("", Task.OPEN_VOCAB, classes=["cup", "dining table", "tête de lit"]),
    Goal(LABEL, Task.INSTANCES),
]


@pytest.mark.parametrize("goal", GOALS, ids=lambda g: str(g.task))
def test_fed_and_generated_tokens_are_the_training_tokens(seg, goal, tmp_path):
    plan = seg.plan([goal])[0]
    descriptor = known_descriptor(plan.kind, list(plan.names))
    Image.fromarray(IMAGE).save(tmp_path / "frame.png")
    sample = ChatSample(
        id="t",
        image=str(tmp_path / "frame.png"),
        question=plan.question,
        answer=plan.answer_start + descriptor,
        task=str(plan.task),
        grid=G,
    )
    train = encode_sample(sample, seg.backbone, seg.processor)["input_ids"].tolist()
    seg.set_image(np.asarray(load_image(sample)))
    n = seg._prefix.length
    assert seg._prefix.input_ids[0].tolist() == train[:n]  # the same processor call
    step = teacher(seg._step, train)
    grammar, suffix = seg.grammar(plan), seg.suffix_ids(plan)
    out = constrained_generate(
        step,
        [grammar],
        [suffix],
        prefix_cache=seg._prefix.cache(1),
        prefix_len=n,
        pad_token_id=seg.pad_token_id,
    )[0]
    fed = suffix + out.tokens
    assert out.complete and out.forward_calls * 3 <= len(out.tokens)  # forced runs + drafts
    assert fed == train[n : n + len(fed)]
    rest = seg.tokenizer.convert_ids_to_tokens(train[n + len(fed) :])
    assert "".join(rest) in seg.backbone.turn_end.replace("\n", "Ċ")  # only the turn end left
    # The whole Segmenter path, with the same teacher, returns the training descriptor.
    seg._step = step
    (result,) = seg.segment([goal])
    assert result.descriptor == (descriptor if plan.kind == "bsd" else SEG_OPEN + descriptor)
    # What the old split got wrong for these tokenizers: Qwen's regex glues "<seg>" to the
    # first label; SentencePiece marks a standalone piece's first word with "▁".
    codec = seg.codec
    if seg.backbone.name == "qwen2_vl":
        assert not joins_cleanly(seg.tokenizer)
        if plan.kind != "bsd":  # a suffix ending at "<seg>" is not what training tokenized
            text = seg.backbone.prompt_suffix(plan.question, plan.answer_start)
            old = list(seg.tokenizer(text, add_special_tokens=False)["input_ids"])
            assert train[n : n + len(old)] != old
    else:
        assert codec.encode(descriptor) != codec.encode_piece(descriptor)


def test_tiny_llava_with_sentencepiece_answers_every_goal_kind(llava_dir):
    """The research layout (tokenizer.model only) loads and answers in one segment call."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        seg = Segmenter.from_pretrained(llava_dir, grid=G, max_instances=2)
    assert type(seg.tokenizer).__name__ == "LlamaTokenizer" and seg.boundary_ok
    seg.set_image(IMAGE)
    goals = [
        Goal(LABEL, Task.RES),
        Goal("the black swan", Task.GRES),
        Goal("cup", Task.REC),
        Goal("", Task.OPEN_VOCAB, classes=["cup", "dining table", "日本"]),
        Goal("cup", Task.INSTANCES),
    ]
    results = seg.segment(goals)
    assert len(results) == len(goals)
    for goal, result in zip(goals, results):
        assert result.mask.shape == IMAGE.shape[:2]
        if goal.task == Task.INSTANCES:
            instances, repairs = parse_bsd(result.descriptor, ["cup"], G)
            assert not repairs and len(instances) == len(result.instances)
            continue
        names = [OTHERS, *goal.classes] if goal.task == Task.OPEN_VOCAB else [OTHERS, goal.text]
        assert result.descriptor.startswith(SEG_OPEN) and result.descriptor.count(SEG_OPEN) == 1
        parsed = parse_rrle(result.descriptor, names, G)
        assert parsed.valid, (result.descriptor, parsed.repairs)
        assert result.model_steps >= 1 and 0.0 <= result.score <= 1.0


def test_a_suffix_cut_at_seg_is_detected(monkeypatch):
    """Cut where the old Segmenter cut (after ``<seg>``), a Qwen-regex tokenizer's split no
    longer matches training: ``check_boundary`` says so and construction warns."""
    seg = qwen_regex_segmenter()
    plan = seg.plan([Goal(LABEL)])[0]
    assert seg.boundary_ok and seg.check_boundary(plan)
    monkeypatch.setattr(GoalPlan, "head", property(lambda self: ""))
    assert not seg.check_boundary(plan)
    with pytest.warns(UserWarning, match="training text"):
        Segmenter(seg.model, seg.processor, "qwen2_vl", grid=G)
