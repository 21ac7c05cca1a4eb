"""Loading layouts: HF directory, base + LoRA adapter, original LLaVA checkpoint layout."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file

from text4seg_ros.model.llava_original import save_llava_original
from text4seg_ros.model.loading import as_dtype, load_pretrained
from text4seg_ros.model.registry import get_backbone
from text4seg_ros.model.tiny import TINY_BACKBONES, build_tiny, build_tiny_model
from text4seg_ros.model.tokenizer import LLAVA_CHAT_TEMPLATE, build_tokenizer, corpus

torch.set_num_threads(1)
IMAGE = np.random.default_rng(1).integers(0, 255, (24, 36, 3), dtype=np.uint8)


def prefix_logits(loaded_model, processor, backbone: str) -> torch.Tensor:
    """Logits of the image prompt prefix: vision tower, projector and language model."""
    inputs = get_backbone(backbone).preprocess(processor, IMAGE)
    with torch.no_grad():
        return loaded_model(**inputs).logits


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return set(sa) == set(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("backbone", TINY_BACKBONES)
def test_hf_directory_round_trip(tmp_path, backbone):
    path = build_tiny_model(backbone, tmp_path / "m", seed=5)
    loaded = load_pretrained(path)  # backbone from config.json
    assert loaded.backbone.name == backbone and loaded.layout == "hf"
    reference, processor = build_tiny(backbone, seed=5)
    assert same_weights(loaded.model, reference)
    torch.testing.assert_close(
        prefix_logits(loaded.model, loaded.processor, backbone),
        prefix_logits(reference, processor, backbone),
    )
    assert not loaded.model.training


def test_hf_directory_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pretrained(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        load_pretrained(tmp_path / "empty")
    path = build_tiny_model("qwen2_vl", tmp_path / "q")
    (path / "model.safetensors").rename(tmp_path / "moved.safetensors")
    with pytest.raises(FileNotFoundError, match="model weights missing .* model.safetensors"):
        load_pretrained(path)
    (tmp_path / "moved.safetensors").rename(path / "model.safetensors")
    (path / "tokenizer.json").unlink()
    (path / "tokenizer_config.json").unlink()
    with pytest.raises(FileNotFoundError, match="tokenizer missing .* tokenizer.json"):
        load_pretrained(path)
    config = json.loads((tmp_path / "q" / "config.json").read_text())
    (tmp_path / "r").mkdir()
    config.update(model_type="internvl_chat", auto_map={"AutoModel": "x.Y"})
    (tmp_path / "r" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="internvl_chat.*trust_remote_code=True"):
        load_pretrained(tmp_path / "r")
    with pytest.raises(ValueError, match="unknown backbone 'gpt'"):
        load_pretrained(path, backbone="gpt")
    with pytest.raises(ValueError, match="unknown dtype 'int8'"):
        as_dtype("int8")
    assert as_dtype("bfloat16") is torch.bfloat16 and as_dtype(torch.float16) is torch.float16


@pytest.mark.parametrize("backbone", ["llava", "qwen2_vl"])
def test_base_plus_lora(tmp_path, backbone):
    base = build_tiny_model(backbone, tmp_path / "base", seed=2)
    model, processor = build_tiny(backbone, seed=2)
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    peft_model = get_peft_model(model, config).eval()
    peft_model.save_pretrained(tmp_path / "adapter")
    expected = prefix_logits(peft_model, processor, backbone)
    base_logits = prefix_logits(load_pretrained(base).model, processor, backbone)
    assert not torch.allclose(expected, base_logits)  # the adapter changes the model
    merged = load_pretrained(base, adapter=tmp_path / "adapter")
    kept = load_pretrained(base, adapter=tmp_path / "adapter", merge_adapter=False)
    assert merged.layout == kept.layout == "lora"
    assert not any("lora_" in k for k in merged.model.state_dict())
    assert any("lora_" in k for k in kept.model.state_dict())
    for loaded in (merged, kept):
        got = prefix_logits(loaded.model, loaded.processor, backbone)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    # The adapter directory alone is enough when its base is a local directory.
    cfg_file = tmp_path / "adapter" / "adapter_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["base_model_name_or_path"] = str(base)
    cfg_file.write_text(json.dumps(cfg))
    alone = load_pretrained(tmp_path / "adapter")
    torch.testing.assert_close(
        prefix_logits(alone.model, alone.processor, backbone), expected, rtol=1e-4, atol=1e-4
    )
    (tmp_path / "adapter" / "adapter_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="LoRA adapter weights missing"):
        load_pretrained(base, adapter=tmp_path / "adapter")


@pytest.mark.parametrize("separate,safetensors", [(True, True), (False, False)])
def test_llava_original_layout(tmp_path, separate, safetensors):
    model, processor = build_tiny("llava", seed=4)
    out = save_llava_original(
        model, processor, tmp_path / "llava", tmp_path / "clip", separate, safetensors
    )
    assert (out / "mm_projector.safetensors").exists() == separate
    assert (out / ("model.safetensors" if safetensors else "pytorch_model.bin")).exists()
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlavaLlamaForCausalLM"]
    loaded = load_pretrained(out)  # vision tower from the config's mm_vision_tower
    assert loaded.layout == "llava_original" and loaded.backbone.name == "llava"
    assert same_weights(loaded.model, model)
    torch.testing.assert_close(
        prefix_logits(loaded.model, loaded.processor, "llava"),
        prefix_logits(model, processor, "llava"),
    )
    moved = tmp_path / "tower"
    shutil.move(tmp_path / "clip", moved)
    with pytest.raises(FileNotFoundError, match="pass vision_tower=<directory of the CLIP"):
        load_pretrained(out)
    assert load_pretrained(out, vision_tower=moved).layout == "llava_original"


def test_llava_original_missing_projector_and_mismatch(tmp_path):
    model, processor = build_tiny("llava", seed=4)
    out = save_llava_original(model, processor, tmp_path / "llava", tmp_path / "clip")
    (out / "mm_projector.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="mm_projector weights missing.*mm_projector.bin"):
        load_pretrained(out)
    save_llava_original(model, processor, out, tmp_path / "clip")
    config = json.loads((out / "config.json").read_text())
    config["intermediate_size"] += 1
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="mlp.*shape .* expected from config.json"):
        load_pretrained(out)
    config.update(intermediate_size=config["intermediate_size"] - 1, mm_projector_type="linear")
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="mm_projector_type 'linear' not supported"):
        load_pretrained(out)
    with pytest.raises(ValueError, match="original LLaVA checkpoint, not 'qwen2_vl'"):
        load_pretrained(out, backbone="qwen2_vl")


def write_research_tokenizer(out, kind: str) -> int:
    """Replace the saved tokenizer by one without ``<image>``, as the research code saves it:
    a byte-level BPE (tokenizer.json) or a Llama SentencePiece model (tokenizer.model only).
    Returns its vocabulary size."""
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (out / name).unlink(missing_ok=True)
    if kind == "bpe":
        specials = ("<pad>", "</s>", "<s>", "<unk>")
        tok = build_tokenizer(specials, LLAVA_CHAT_TEMPLATE, {}, vocab_size=512, seed=6, bos="<s>")
        tok.save_pretrained(out)
        return len(tok)
    spm = pytest.importorskip("sentencepiece")
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus(0, 16)),
        model_writer=buffer,
        vocab_size=400,
        model_type="bpe",
        byte_fallback=True,
        split_digits=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        normalization_rule_name="identity",
        minloglevel=2,
    )
    (out / "tokenizer.model").write_bytes(buffer.getvalue())
    config = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>"}
    (out / "tokenizer_config.json").write_text(json.dumps({**config, "unk_token": "<unk>"}))
    return 400


@pytest.mark.parametrize("kind", ["bpe", "sentencepiece"])
def test_llava_original_tokenizer_without_image_token(tmp_path, kind):
    """The research tokenizer has no <image>: it is added and the embeddings grow by one row."""
    model, processor = build_tiny("llava", seed=6)
    out = save_llava_original(model, processor, tmp_path / "llava", tmp_path / "clip")
    rows = write_research_tokenizer(out, kind)
    assert rows <= model.config.text_config.vocab_size
    weights = model.state_dict()
    lm = {
        "model." + k.removeprefix("model.language_model."): v.contiguous()
        for k, v in weights.items()
        if k.startswith("model.language_model.")
    }
    lm["model.embed_tokens.weight"] = lm["model.embed_tokens.weight"][:rows].contiguous()
    lm["lm_head.weight"] = weights["lm_head.weight"][:rows].contiguous()
    save_file(lm, str(out / "model.safetensors"))
    config = json.loads((out / "config.json").read_text())
    config["vocab_size"] = rows
    (out / "config.json").write_text(json.dumps(config))
    loaded = load_pretrained(out)
    image_id = loaded.model.config.image_token_id
    assert image_id == rows == loaded.processor.tokenizer.convert_tokens_to_ids("<image>")
    embed = loaded.model.get_input_embeddings().weight
    assert embed.shape[0] == rows + 1
    torch.testing.assert_close(embed[:rows], lm["model.embed_tokens.weight"])
    inputs = get_backbone("llava").preprocess(loaded.processor, IMAGE)
    n_image = int((inputs["input_ids"] == image_id).sum())
    assert n_image == loaded.model.config.image_seq_length
    with torch.no_grad():
        assert torch.isfinite(loaded.model(**inputs).logits).all()
