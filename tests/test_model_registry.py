"""Backbone registry: prompts, prefix encoding and the decoder step against HF generate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from text4seg_ros.model.registry import (
    BACKBONES,
    backbone_registry,
    check_image,
    detect_backbone,
    get_backbone,
)
from text4seg_ros.model.tiny import TINY_BACKBONES, build_tiny

torch.set_num_threads(1)
IMAGE = np.random.default_rng(0).integers(0, 255, (30, 44, 3), dtype=np.uint8)
ANSWER = "Sure, here is the segmentation mask for 'cup':\n<seg>"


@pytest.fixture(scope="module", params=TINY_BACKBONES)
def tiny(request):
    model, processor = build_tiny(request.param, seed=1)
    return get_backbone(request.param), model, processor


def test_registry_entries():
    assert set(BACKBONES) == {"llava", "qwen2_vl", "qwen2_5_vl", "internvl"}
    assert backbone_registry is BACKBONES
    for name, backbone in BACKBONES.items():
        assert backbone.name == name
        assert detect_backbone(name) is backbone  # config.model_type == registry name
        assert backbone.processor_class.__name__.lower().startswith(name.replace("_", "")[:4])
    with pytest.raises(ValueError, match="unknown backbone 'sam'; registered: llava"):
        get_backbone("sam")
    with pytest.raises(ValueError, match="no registered backbone for model_type 'internvl_chat'"):
        detect_backbone("internvl_chat")
    with pytest.raises(TypeError):
        get_backbone(3)


def test_prompt_split_matches_chat_template(tiny):
    backbone, _, processor = tiny
    question = "Can you segment the cup in the image?"
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]},
        {"role": "assistant", "content": [{"type": "text", "text": ANSWER}]},
    ]
    rendered = processor.tokenizer.apply_chat_template(messages, tokenize=False)
    assert rendered == backbone.render(question, ANSWER)
    prefix = backbone.prompt_prefix()
    assert prefix.endswith(backbone.image_placeholder)
    assert backbone.render(question, ANSWER).startswith(prefix + backbone.prompt_suffix(question))
    with pytest.raises(ValueError, match="question must be a non-empty str"):
        backbone.prompt_suffix("  ")


def test_step_adapter_equals_generate(tiny):
    """Prefix cache + suffix through the step adapter = HF generate on the whole prompt."""
    backbone, model, processor = tiny
    tok = processor.tokenizer
    prefix = backbone.encode_prefix(model, processor, IMAGE)
    assert prefix.image_size == (30, 44) and prefix.n_image_tokens > 0
    assert prefix.rope_delta != 0 if backbone.mrope else prefix.rope_delta == 0
    step = backbone.make_step(model, prefix)
    question = "Segment the red mug on the left."
    suffix = tok(backbone.prompt_suffix(question, ANSWER), add_special_tokens=False)["input_ids"]
    full = backbone.prompt_prefix() + backbone.prompt_suffix(question, ANSWER)
    inputs = processor(images=[Image.fromarray(IMAGE)], text=[full], return_tensors="pt")
    # The split tokenization is the tokenization of the whole prompt.
    assert inputs["input_ids"][0].tolist() == prefix.input_ids[0].tolist() + suffix
    with torch.no_grad():
        reference = model(**inputs).logits[0, prefix.length :]
        expected = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    expected = expected[0, inputs["input_ids"].shape[1] :].tolist()
    cache, n = prefix.cache(1), prefix.length
    ids, pos = torch.tensor([suffix]), torch.arange(n, n + len(suffix))[None]
    mask = torch.ones(1, n + len(suffix), dtype=torch.long)
    logits, cache = step(ids, pos, mask, cache)
    assert logits.shape == (1, len(suffix), model.config.get_text_config().vocab_size)
    torch.testing.assert_close(logits[0], reference, rtol=1e-4, atol=1e-4)
    tokens = []
    for _ in range(6):
        tokens.append(int(logits[0, -1].argmax()))
        ids, pos = torch.tensor([[tokens[-1]]]), pos[:, -1:] + 1
        mask = torch.ones(1, mask.shape[1] + 1, dtype=torch.long)
        logits, cache = step(ids, pos, mask, cache)
    assert tokens == expected


def test_prefix_cache_is_reusable(tiny):
    backbone, model, processor = tiny
    prefix = backbone.encode_prefix(model, processor, IMAGE)
    before = [k.clone() for k in prefix.keys]
    cache = prefix.cache(3)
    assert cache.get_seq_length() == prefix.length
    assert cache.layers[0].keys.shape[0] == 3
    step = backbone.make_step(model, prefix)
    ids = torch.ones((3, 2), dtype=torch.long)
    pos = torch.arange(prefix.length, prefix.length + 2).expand(3, -1)
    step(ids, pos, torch.ones(3, prefix.length + 2, dtype=torch.long), cache)
    assert cache.get_seq_length() == prefix.length + 2
    assert all(torch.equal(a, b) for a, b in zip(before, prefix.keys))  # prefix untouched
    assert prefix.cache(1).get_seq_length() == prefix.length
    with pytest.raises(ValueError, match="batch must be >= 1"):
        prefix.cache(0)
    with pytest.raises(ValueError, match=r"must both be \(B, T\)"):
        step(ids, pos[:, :1], torch.ones(3, prefix.length + 2, dtype=torch.long), prefix.cache(3))


def test_check_image():
    assert check_image(IMAGE).shape == (30, 44, 3)
    with pytest.raises(TypeError, match="uint8"):
        check_image(IMAGE.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        check_image(IMAGE[..., :2].copy())
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        check_image(IMAGE[..., 0].copy())
    with pytest.raises(TypeError, match="numpy array"):
        check_image(IMAGE.tolist())
