"""``loss_on="free"``: the loss only where the descriptor grammar leaves the model a choice."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from text4seg_ros.descriptors import SEG_OPEN
from text4seg_ros.model.registry import get_backbone
from text4seg_ros.model.tiny import build_tiny
from training.data.sample import ChatSample
from training.data.tabletop_samples import build_tabletop
from training.dataset import IGNORE_INDEX, ChatDataset, encode_sample, free_positions
from training.recipe import Recipe

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ChatSample]:
    out = tmp_path_factory.mktemp("tabletop")
    by_kind: dict[str, ChatSample] = {}
    for s in build_tabletop(out, 4, size=(48, 48), grid=8):
        by_kind.setdefault(s.meta["kind"], s)
    return by_kind


@pytest.mark.parametrize("backbone", ["llava", "qwen2_vl"])
@pytest.mark.parametrize("kind", ["res_attr", "gres_absent", "openvocab", "instances"])
def test_free_labels_are_the_grammar_choices_only(
    backbone: str, kind: str, samples: dict[str, ChatSample]
) -> None:
    _, processor = build_tiny(backbone, grid=8)
    spec, tok = get_backbone(backbone), processor.tokenizer
    sample = samples[kind]
    full = encode_sample(sample, spec, processor)
    free = encode_sample(sample, spec, processor, loss_on="free")
    assert torch.equal(full["input_ids"], free["input_ids"])
    kept, answer = free["labels"] != IGNORE_INDEX, full["labels"] != IGNORE_INDEX
    assert kept.any() and (kept <= answer).all() and kept.sum() < answer.sum() / 2
    assert torch.equal(free["labels"][kept], free["input_ids"][kept])
    # Nothing of the answer sentence, which the prompt forces, keeps a label.
    ids = free["input_ids"]
    first_kept = int(kept.nonzero()[0])
    assert "Sure, here" in tok.decode(ids[answer & ~kept][:12])
    assert tok.decode(ids[first_kept:]).lstrip().startswith(
        ("others", "<ref>", "<seg>others", sample.meta["label"].split("|")[0][:2])
    ) or SEG_OPEN in tok.decode(ids[first_kept - 3 : first_kept + 1])
    # Count digits are mostly free (the run lengths carry the mask; a count is forced only
    # where one cell is left in the row); " *" after a label never is.
    pieces = [tok.decode([int(t)]) for t in ids[answer]]
    flags = kept[answer].tolist()
    stars = [i for i, p in enumerate(pieces) if p.strip() == "*"]
    assert stars and all(re.fullmatch(r"\d", pieces[i + 1]) for i in stars)
    assert sum(flags[i + 1] for i in stars) >= len(stars) / 2
    assert not any(flags[i] for i in stars)


def test_free_positions_align_with_the_suffix_and_reject_bad_samples(
    samples: dict[str, ChatSample],
) -> None:
    _, processor = build_tiny("llava", grid=8)
    spec, tok = get_backbone("llava"), processor.tokenizer
    sample = samples["res_attr"]
    flags = free_positions(sample, spec, tok)
    suffix = tok(spec.prompt_suffix(sample.question, sample.answer) + spec.turn_end,
                 add_special_tokens=False)["input_ids"]  # fmt: skip
    assert len(flags) == len(suffix) and any(flags) and not flags[-1]
    bad = ChatSample(**{**sample.__dict__, "meta": {}})
    with pytest.raises(ValueError, match="meta\\['label'\\]"):
        free_positions(bad, spec, tok)
    broken = ChatSample(**{**sample.__dict__, "answer": sample.answer.replace("*8", "*9", 1)})
    if broken.answer != sample.answer:
        with pytest.raises(ValueError, match="grammar"):
            free_positions(broken, spec, tok)
    with pytest.raises(ValueError, match="loss_on"):
        encode_sample(sample, spec, processor, loss_on="forced")


def test_recipe_and_dataset_carry_loss_on(tmp_path: Path, samples: dict[str, ChatSample]) -> None:
    from training.data.sample import write_jsonl

    assert Recipe(model="m", data=["d"], output_dir="o").loss_on == "answer"
    path = tmp_path / "d.jsonl"
    write_jsonl(samples.values(), path)
    _, processor = build_tiny("llava", grid=8)
    ds = ChatDataset([str(path)], get_backbone("llava"), processor, loss_on="free")
    item = ds[0]
    assert (item["labels"] != IGNORE_INDEX).sum() < (item["input_ids"].shape[0] // 4)
    with pytest.raises(ValueError, match="loss_on"):
        ChatDataset([str(path)], get_backbone("llava"), processor, loss_on="x")


def test_fg_weight_weighs_the_rows_holding_a_target(samples: dict[str, ChatSample]) -> None:
    from training.dataset import Collator, target_row_spans

    text = "<seg>others *8\n others *3| red mug *2| others *3\n red mug *8\n</seg>"
    spans = [text[a:b] for a, b in target_row_spans(text, ["red mug"])]
    assert spans == [" others *3| red mug *2| others *3\n", " red mug *8\n"]
    assert target_row_spans(text, []) == []
    _, processor = build_tiny("llava", grid=8)
    spec, tok = get_backbone("llava"), processor.tokenizer
    for kind in ("res_attr", "gres_absent", "openvocab", "instances"):
        sample = samples[kind]
        plain = encode_sample(sample, spec, processor)
        item = encode_sample(sample, spec, processor, fg_weight=4.0)
        assert "loss_weights" not in plain and torch.equal(plain["labels"], item["labels"])
        w, labelled = item["loss_weights"], item["labels"] != IGNORE_INDEX
        assert (w[~labelled] == 0).all() and set(w[labelled].tolist()) <= {1.0, 4.0}
        heavy = tok.decode(item["input_ids"][w == 4.0])
        if kind == "gres_absent":
            assert not (w == 4.0).any()  # no target: no row is weighted
        else:
            assert (w == 4.0).any() and "Sure" not in heavy and " *" in heavy
    batch = Collator(tok.pad_token_id)([item, item])
    assert batch["loss_weights"].shape == batch["labels"].shape


def test_weighted_loss_matches_the_model_loss_at_weight_one() -> None:
    from training.train import weighted_loss

    torch.manual_seed(0)
    logits = torch.randn(2, 7, 11)
    labels = torch.randint(0, 11, (2, 7))
    labels[:, :3] = IGNORE_INDEX
    ones = torch.ones(2, 7)
    ce = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX
    )
    assert torch.allclose(weighted_loss(logits, labels, ones), ce)
    heavy = ones.clone()
    heavy[0, 5] = 3.0  # token 5 of row 0 counts three times
    per = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), reduction="none",
        ignore_index=IGNORE_INDEX,
    ).reshape(2, 6)  # fmt: skip
    mask = (labels[:, 1:] != IGNORE_INDEX).float()
    w = mask.clone()
    w[0, 4] = 3.0
    assert torch.allclose(weighted_loss(logits, labels, heavy), (per * w).sum() / w.sum())
