"""Training: recipe, DeepSpeed config, LoRA targets, tokenisation with answer-only labels.

The end-to-end run under DeepSpeed ZeRO-2 on 2 gloo ranks is in test_training_zero2.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from peft import get_peft_model

from text4seg_ros.model.registry import get_backbone
from text4seg_ros.model.tiny import TINY_BACKBONES, build_tiny
from training.data.sample import ChatSample
from training.data.synthetic import build_synthetic
from training.dataset import IGNORE_INDEX, Collator, encode_sample, load_image
from training.lora import lora_config, target_modules
from training.recipe import Recipe
from training.train import deepspeed_config, parse_recipe, resolve_precision

torch.set_num_threads(1)


def _recipe(**kw) -> Recipe:
    return Recipe(model="m", data=["d.jsonl"], output_dir="o", **kw)


def test_recipe_defaults_are_the_paper_table_7() -> None:
    r = _recipe()
    assert (r.lora_r, r.lora_alpha, r.lora_dropout) == (64, 128, 0.05)
    assert (r.adam_beta1, r.adam_beta2, r.weight_decay) == (0.9, 0.95, 0.0)
    assert (r.warmup_ratio, r.grad_clip, r.global_batch, r.epochs) == (0.03, 1.0, 128, 5.0)
    assert r.peak_lr("llava") == 2e-4 and r.peak_lr("qwen2_vl") == 2e-4
    assert r.peak_lr("internvl") == 1e-4
    assert _recipe(lr=3e-4).peak_lr("internvl") == 3e-4


def test_accumulation_is_derived_from_the_global_batch() -> None:
    assert _recipe(per_device_batch=16).accumulation(8) == 1
    assert _recipe(per_device_batch=4).accumulation(8) == 4
    assert _recipe(per_device_batch=8).accumulation(16) == 1
    with pytest.raises(ValueError, match="not a multiple"):
        _recipe(per_device_batch=16).accumulation(3)


def test_deepspeed_config_is_zero2_filled_from_the_recipe() -> None:
    cfg = deepspeed_config(_recipe(per_device_batch=4), 8, "bf16")
    assert cfg["zero_optimization"]["stage"] == 2
    assert cfg["train_micro_batch_size_per_gpu"] == 4
    assert cfg["gradient_accumulation_steps"] == 4
    assert cfg["train_batch_size"] == 128
    assert cfg["gradient_clipping"] == 1.0
    assert cfg["bf16"]["enabled"] is True and cfg["fp16"]["enabled"] is False
    cpu = deepspeed_config(_recipe(global_batch=8, per_device_batch=2), 2, "fp32")
    assert cpu["bf16"]["enabled"] is False and cpu["fp16"]["enabled"] is False
    assert "auto" not in str(cpu)


def test_precision_is_fp32_on_cpu_and_checked() -> None:
    if not torch.cuda.is_available():
        assert resolve_precision("auto") == "fp32"
        assert resolve_precision("bf16") == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp8")


def test_recipe_from_the_command_line() -> None:
    r = parse_recipe(
        [
            "--model",
            "m",
            "--data",
            "a.jsonl",
            "b.jsonl",
            "--output_dir",
            "o",
            "--lora_r",
            "8",
            "--local_rank=1",
            "--lr",
            "1e-3",
        ]
    )
    assert r.data == ["a.jsonl", "b.jsonl"] and r.lora_r == 8 and r.lr == 1e-3
    assert r.local_rank == 1 and r.lora_alpha == 128


@pytest.mark.parametrize("backbone", TINY_BACKBONES)
def test_lora_targets_language_model_and_projector_only(backbone: str) -> None:
    model, _ = build_tiny(backbone)
    n_layers = model.config.text_config.num_hidden_layers
    peft_model = get_peft_model(model, lora_config(backbone, r=4, alpha=8))
    wrapped = {
        n.removeprefix("base_model.model.").rsplit(".lora_A", 1)[0]
        for n, _ in peft_model.named_parameters()
        if ".lora_A." in n
    }
    lm = {n for n in wrapped if n.startswith("model.language_model.")}
    assert len(lm) == 7 * n_layers  # q k v o gate up down per layer
    projector = wrapped - lm
    assert len(projector) == 2, projector  # projector: two linears
    assert all("merger" in n or "multi_modal_projector" in n for n in projector)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)  # vision tower frozen
    with pytest.raises(ValueError, match="no LoRA targets"):
        target_modules("gpt2")


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> list[ChatSample]:
    out = tmp_path_factory.mktemp("syn")
    return list(build_synthetic(out, n_images=2, seed=1, size=(40, 48), grid=8))


@pytest.mark.parametrize("backbone", ["llava", "qwen2_vl", "internvl"])
def test_labels_cover_the_answer_only_and_prefix_matches_inference(
    backbone: str, samples: list[ChatSample]
) -> None:
    model, processor = build_tiny(backbone)
    spec = get_backbone(backbone)
    tok = processor.tokenizer
    sample = samples[0]
    item = encode_sample(sample, spec, processor)
    ids, labels = item["input_ids"], item["labels"]
    assert ids.shape == labels.shape == item["attention_mask"].shape
    # The prefix is exactly what the Segmenter encodes for this frame (same processor call).
    image = np.asarray(load_image(sample))
    prefix = spec.preprocess(processor, image)["input_ids"][0]
    assert torch.equal(ids[: prefix.shape[0]], prefix)
    image_id = model.config.image_token_id
    assert (ids == image_id).sum() > 0
    assert (labels[ids == image_id] == IGNORE_INDEX).all()
    # The targets decode to the answer and the end of the turn, nothing of the question.
    target_text = tok.decode(ids[labels != IGNORE_INDEX])
    assert target_text.strip() == (sample.answer + spec.turn_end).strip()
    assert sample.question not in target_text
    masked_text = tok.decode(ids[labels == IGNORE_INDEX])
    assert sample.question in masked_text
    # The model computes a finite loss on the batch.
    batch = Collator(tok.pad_token_id)([item, encode_sample(samples[1], spec, processor)])
    with torch.no_grad():
        loss = model(**batch).loss
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="max_length"):
        encode_sample(sample, spec, processor, max_length=10)


def test_collator_right_pads_tokens_and_stacks_images() -> None:
    a = {
        "input_ids": torch.tensor([5, 6, 7]),
        "labels": torch.tensor([-100, 6, 7]),
        "attention_mask": torch.ones(3, dtype=torch.long),
        "pixel_values": torch.zeros(1, 3, 4, 4),
    }
    b = {
        "input_ids": torch.tensor([8]),
        "labels": torch.tensor([8]),
        "attention_mask": torch.ones(1, dtype=torch.long),
        "pixel_values": torch.ones(1, 3, 4, 4),
    }
    batch = Collator(pad_id=0)([a, b])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["pixel_values"].shape == (2, 3, 4, 4) and batch["pixel_values"][1].sum() == 48


def test_crop_is_applied_on_load(samples: list[ChatSample], tmp_path: Path) -> None:
    s = samples[0]
    cropped = ChatSample(**{**s.__dict__, "crop": (4, 2, 36, 34)})
    full, part = np.asarray(load_image(s)), np.asarray(load_image(cropped))
    assert part.shape == (32, 32, 3)
    np.testing.assert_array_equal(part, full[2:34, 4:36])


def test_epochs_are_cut_to_whole_optimizer_steps_and_resume_skips_done_steps() -> None:
    from training.train import epoch_indices

    # 50 samples on this rank, micro-batch 2, accumulation 2: 12 whole steps = 48 samples. Feeding
    # all 50 would leave half a step that DeepSpeed carries into the next epoch.
    order = list(range(100, 150))
    full = epoch_indices(order, 0, 12, 2, 2)
    assert full == order[:48] and len(full) % (2 * 2) == 0
    assert epoch_indices(order, 3, 12, 2, 2) == order[12:48]  # resumed after 3 steps
    assert epoch_indices(order, 12, 12, 2, 2) == []
