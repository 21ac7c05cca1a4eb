"""Processor settings shared by training and inference, with processors configured like the
published checkpoints (issue 12): LLaVA pads to a square, InternVL uses one tile, saved folders
name the upstream processor classes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from text4seg_ros.model.loading import load_pretrained
from text4seg_ros.model.processors import (
    EXTRA_FILE,
    load_processor,
    save_processor,
)
from text4seg_ros.model.registry import get_backbone
from text4seg_ros.model.tiny import build_tiny_model

# llava-hf/llava-1.5-7b-hf preprocessor_config.json (CLIP: short side to 336, centre crop 336).
LLAVA_HF_PREPROCESSOR = {
    "crop_size": {"height": 336, "width": 336},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_processor_type": "CLIPImageProcessor",
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "processor_class": "LlavaProcessor",
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 336},
}
# OpenGVLab/InternVL*-hf image processor: 448 x 448 tiles, up to 12 plus a thumbnail.
INTERNVL_HF_IMAGE = {
    "crop_to_patches": True,
    "min_patches": 1,
    "max_patches": 12,
    "size": {"height": 448, "width": 448},
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
}


def _published_llava(root: Path) -> Path:
    """A tiny LLaVA folder whose image processor is configured like llava-1.5-7b-hf's."""
    path = build_tiny_model("llava", root / "llava")
    config = json.loads((path / "processor_config.json").read_text())
    config.pop("image_processor")
    (path / "processor_config.json").write_text(json.dumps(config))
    (path / "preprocessor_config.json").write_text(json.dumps(LLAVA_HF_PREPROCESSOR))
    (path / EXTRA_FILE).unlink()  # a published folder has none of our files
    return path


def _published_internvl(root: Path) -> Path:
    path = build_tiny_model("internvl", root / "internvl")
    config = json.loads((path / "processor_config.json").read_text())
    config["image_processor"].update(INTERNVL_HF_IMAGE)
    (path / "processor_config.json").write_text(json.dumps(config))
    (path / EXTRA_FILE).write_text(json.dumps({"image_seq_length": 256}))
    return path


def _frame_with_red_sides() -> Image.Image:
    """640 x 480 blue frame whose outer 80-pixel columns are red (what a centre crop cuts)."""
    frame = np.zeros((480, 640, 3), dtype=np.uint8)
    frame[..., 2] = 255
    frame[:, :80] = (255, 0, 0)
    frame[:, -80:] = (255, 0, 0)
    return Image.fromarray(frame)


def test_llava_hf_processor_pads_to_a_square_instead_of_cropping(tmp_path: Path) -> None:
    path = _published_llava(tmp_path)
    frame = _frame_with_red_sides()
    for processor in (
        load_processor(path, "llava"),  # what training's load_base and the Segmenter use
        load_pretrained(path).processor,
    ):
        assert processor.image_processor.do_pad
        pixels = processor.image_processor(images=[frame], return_tensors="pt")["pixel_values"]
        assert pixels.shape == (1, 3, 336, 336)
        middle = pixels[0, :, 168]  # (3, 336) the middle row
        red = (middle[0] > 1.0) & (middle[2] < 0.0)  # normalised: high R, low B
        # The whole width is kept: red at both edges, 80 / 640 of 336 columns each.
        assert red[:40].all() and red[-40:].all()
        assert not red[60:-60].any()
        # Padding above and below the 4:3 frame (mean colour normalises to about zero).
        assert pixels[0, :, :30].abs().max() < 0.02
    # Saved folders record the padding, so a trained model is served the same way.
    out = tmp_path / "saved"
    save_processor(load_processor(path, "llava"), out, "llava")
    assert json.loads((out / EXTRA_FILE).read_text())["pad_to_square"] is True
    assert load_processor(out, "llava").image_processor.do_pad


def test_internvl_hf_processor_uses_one_tile(tmp_path: Path) -> None:
    path = _published_internvl(tmp_path)
    spec = get_backbone("internvl")
    frame = _frame_with_red_sides()

    def encode(processor):
        return processor(images=[frame], text=[spec.prompt_prefix()], return_tensors="pt")

    processor = load_processor(path, "internvl")
    out = encode(processor)
    assert out["pixel_values"].shape[0] == 1  # was 13 tiles (12 + thumbnail)
    image_id = processor.tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    assert int((out["input_ids"] == image_id).sum()) == 256
    assert load_pretrained(path).processor.image_processor.crop_to_patches is False
    # The published setting, asked for explicitly, tiles as before.
    tiled = encode(load_processor(path, "internvl", max_tiles=12))
    assert tiled["pixel_values"].shape[0] == 13
    # The chosen tile count is recorded and reloaded (training saves, inference loads).
    saved = tmp_path / "saved"
    save_processor(load_processor(path, "internvl", max_tiles=4), saved, "internvl")
    assert json.loads((saved / EXTRA_FILE).read_text())["max_tiles"] == 4
    again = load_processor(saved, "internvl")
    assert again.image_processor.max_patches == 4 and again.image_seq_length == 256
    with pytest.raises(ValueError, match="max_tiles"):
        load_processor(path, "internvl", max_tiles=0)


@pytest.mark.parametrize("backbone", ["qwen2_vl", "qwen2_5_vl", "internvl"])
def test_saved_folders_name_upstream_processor_classes(backbone: str, tmp_path: Path) -> None:
    path = build_tiny_model(backbone, tmp_path / backbone)
    upstream = {
        "qwen2_vl": "Qwen2VLProcessor",
        "qwen2_5_vl": "Qwen2_5_VLProcessor",
        "internvl": "InternVLProcessor",
    }[backbone]
    for file in path.glob("*.json"):
        assert "NoVideo" not in file.read_text(), file.name
    config = json.loads((path / "processor_config.json").read_text())
    assert config["processor_class"] == upstream
    tokenizer_config = json.loads((path / "tokenizer_config.json").read_text())
    assert tokenizer_config.get("processor_class", upstream) == upstream
    processor = load_processor(path, backbone)  # still loads here, without torchvision
    assert type(processor).__mro__[1].__name__ == upstream


@pytest.mark.parametrize("backbone", ["qwen2_vl", "qwen2_5_vl", "internvl"])
def test_saved_folders_give_transformers_a_video_processor_config(
    backbone: str, tmp_path: Path
) -> None:
    # Where torchvision exists AutoProcessor builds the video processor from this lookup (no
    # torchvision needed for it); it raised OSError on the GPU image before the folders carried
    # preprocessor_config.json, the published checkpoints' fallback file.
    from transformers.video_processing_utils import BaseVideoProcessor

    path = build_tiny_model(backbone, tmp_path / backbone)
    config, _ = BaseVideoProcessor.get_video_processor_dict(str(path))
    nested = json.loads((path / "processor_config.json").read_text())["image_processor"]
    assert config["image_processor_type"] == nested["image_processor_type"]
    assert config["image_mean"] == nested["image_mean"] and "NoVideo" not in json.dumps(config)
    image_processor = load_processor(path, backbone).image_processor
    assert list(image_processor.image_mean) == nested["image_mean"]  # the nested one still wins


@pytest.mark.parametrize("backbone", ["qwen2_vl", "internvl"])
def test_auto_processor_loads_saved_folders_where_torchvision_exists(
    backbone: str, tmp_path: Path
) -> None:
    pytest.importorskip("torchvision", reason="AutoProcessor builds video processors with it")
    from transformers import AutoProcessor

    path = build_tiny_model(backbone, tmp_path / backbone)
    processor = AutoProcessor.from_pretrained(str(path))
    assert type(processor).__name__ == {"qwen2_vl": "Qwen2VLProcessor",
                                        "internvl": "InternVLProcessor"}[backbone]  # fmt: skip
