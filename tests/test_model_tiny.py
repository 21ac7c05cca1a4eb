"""Tiny random backbones: build, save, reload, and run the real transformers classes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText

from text4seg_ros.model.tiny import TINY_BACKBONES, build_tiny, build_tiny_model, load_processor

torch.set_num_threads(1)


@pytest.mark.parametrize("backbone", TINY_BACKBONES)
def test_build_save_reload_forward(tmp_path, backbone):
    out = build_tiny_model(backbone, tmp_path / backbone, seed=3)
    assert (out / "config.json").exists() and (out / "model.safetensors").exists()
    model = AutoModelForImageTextToText.from_pretrained(out).eval()
    fresh, _ = build_tiny(backbone, seed=3)
    assert type(model) is type(fresh)
    n_params = sum(p.numel() for p in model.parameters())
    assert 50_000 < n_params < 2_000_000, n_params
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name  # same seed, same weights after the round trip
    processor = load_processor(out, backbone)
    tok = processor.tokenizer
    # Digits are single tokens, as in Llama and Qwen tokenizers.
    pieces = tok.tokenize("cup *16| others *305")
    assert all(len(p.strip("Ġ")) == 1 for p in pieces if any(c.isdigit() for c in p))
    assert tok.decode(tok.encode("others *16\n cup *4", add_special_tokens=False)) == (
        "others *16\n cup *4"
    )
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Segment it."}]}
    ]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert "Segment it." in text
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), np.uint8))
    inputs = processor(images=[image], text=[text], return_tensors="pt")
    image_id = model.config.image_token_id
    n_image = int((inputs["input_ids"] == image_id).sum())
    assert n_image > 0
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (1, inputs["input_ids"].shape[1], len(tok))
    assert torch.isfinite(logits).all()


def test_internvl_keeps_image_seq_length(tmp_path):
    out = build_tiny_model("internvl", tmp_path / "ivl", image_size=64)
    processor = load_processor(out, "internvl")
    model = AutoModelForImageTextToText.from_pretrained(out)
    assert processor.image_seq_length == model.config.image_seq_length == (64 // 8) ** 2 // 4


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown backbone 'gpt'"):
        build_tiny_model("gpt", tmp_path)
    with pytest.raises(TypeError, match="unknown size argument"):
        build_tiny("llava", hidden_units=3)
    with pytest.raises(ValueError, match="size layers must be an int >= 1"):
        build_tiny("llava", layers=0)
    with pytest.raises(ValueError, match="unknown backbone"):
        load_processor(tmp_path, "gpt")


def test_llava_patch_sets_the_visual_token_grid_and_extra_texts_shorten_words(tmp_path):
    model, processor = build_tiny("llava", image_size=64, patch=4)
    assert model.config.vision_config.patch_size == 4
    assert model.config.image_seq_length == 16 * 16  # one visual token per cell at G = 16
    image = Image.fromarray(np.zeros((50, 70, 3), np.uint8))
    batch = processor(images=[image], text=["USER: <image>\nhi"], return_tensors="pt")
    assert int((batch["input_ids"] == model.config.image_token_id).sum()) == 256
    with torch.no_grad():
        assert model(**batch).logits.shape[1] == batch["input_ids"].shape[1]
    word = " tabletoppers"
    plain = build_tiny("llava")[1].tokenizer(word, add_special_tokens=False)["input_ids"]
    tuned = build_tiny("llava", extra_texts=[word] * 50)[1].tokenizer
    assert len(tuned(word, add_special_tokens=False)["input_ids"]) < len(plain)
    with pytest.raises(ValueError, match="patch 5 must divide image_size 64"):
        build_tiny("llava", image_size=64, patch=5)
    with pytest.raises(ValueError, match="extra_texts is supported for llava only"):
        build_tiny("qwen2_vl", extra_texts=["x"])
