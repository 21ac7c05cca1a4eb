"""SAM refiner on tiny random SAM models: the SPEC section 5 procedure, caching, loading."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from text4seg_ros.refine import (
    RefinerConfig,
    SamRefiner,
    load_refiner,
    mask_logit_prompt,
    segment_anything_available,
)
from text4seg_ros.refine.convert import infer_config, sam_kind
from text4seg_ros.refine.tiny import build_tiny_sam

torch.set_num_threads(1)

H, W = 60, 90  # a wide image: SAM pads it at the bottom


@pytest.fixture(scope="module")
def sam_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sam(tmp_path_factory.mktemp("sam") / "tiny_sam", seed=0)


@pytest.fixture()
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)


@pytest.fixture()
def coarse() -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[15:40, 30:70] = True
    return mask


class Recorder:
    """Records every SAM call: prompt-encoder inputs, decoder outputs, vision encodes."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.prompts: list[dict[str, torch.Tensor | None]] = []
        self.low_res: list[torch.Tensor] = []
        self.encodes = 0
        self._handles = [
            model.prompt_encoder.register_forward_pre_hook(self._prompt, with_kwargs=True),
            model.mask_decoder.register_forward_hook(self._decoded),
            model.vision_encoder.register_forward_hook(self._encoded),
        ]

    def _prompt(self, module, args, kwargs):  # noqa: ANN001
        self.prompts.append({k: (None if v is None else v.clone()) for k, v in kwargs.items()})

    def _decoded(self, module, args, output):  # noqa: ANN001
        self.low_res.append(output[0].detach().clone())

    def _encoded(self, module, args, output):  # noqa: ANN001
        self.encodes += 1

    def close(self) -> None:
        for h in self._handles:
            h.remove()


@pytest.fixture()
def refiner(sam_dir: Path):
    ref = load_refiner(sam_dir)
    rec = Recorder(ref.backend.model)
    yield ref, rec
    rec.close()


def test_points_prompt_three_passes_feed_back_low_res_logits(refiner, image, coarse) -> None:
    ref, rec = refiner
    out = ref.refine(image, coarse)
    assert out.shape == (H, W) and out.dtype == bool
    assert len(rec.prompts) == 3 and len(rec.low_res) == 3 and rec.encodes == 1
    side = ref.backend.low_res_side
    assert side == 32  # 4 x (128 / 16)
    # Pass 1: the coarse mask as +/- ln(999) logits in the padded low-res frame.
    first = rec.prompts[0]["input_masks"]
    assert tuple(first.shape) == (1, 1, side, side)
    assert np.allclose(first[0, 0].numpy(), mask_logit_prompt(coarse, side))
    # Passes 2 and 3: SAM's previous low-resolution logits, unchanged.
    for i in (1, 2):
        fed = rec.prompts[i]["input_masks"]
        assert torch.equal(fed[0, 0], rec.low_res[i - 1][0, 0, 0])
    # 10 foreground + 10 background points, the same in every pass, no box.
    for p in rec.prompts:
        assert p["input_boxes"] is None
        assert tuple(p["input_points"].shape) == (1, 1, 20, 2)
        assert p["input_labels"][0, 0].tolist() == [1] * 10 + [0] * 10
        assert torch.equal(p["input_points"], rec.prompts[0]["input_points"])
    # Points were scaled into the 128 px input frame (90 px wide -> 128): back in image pixels
    # they hit the coarse mask exactly as labelled.
    xy = rec.prompts[0]["input_points"][0, 0].double().numpy()
    xy = xy / np.array([128 / W, 85 / H])  # reshaped input is (85, 128) for 60 x 90
    xs, ys = np.rint(xy[:, 0]).astype(int), np.rint(xy[:, 1]).astype(int)
    assert np.array_equal(coarse[ys, xs], np.array([True] * 10 + [False] * 10))
    # The answer is the last pass's logits, upsampled to the image, thresholded at 0.
    logits = ref.backend.processor.post_process_masks(
        [rec.low_res[2][0]],
        [(H, W)],
        [(85, 128)],
        binarize=False,
        pad_size={"height": 128, "width": 128},
    )[0][0, 0]
    assert np.array_equal(out, logits.numpy() > 0)
    assert isinstance(ref.last_score, float)


def test_empty_mask_is_returned_unchanged_without_sam(refiner, image) -> None:
    ref, rec = refiner
    empty = np.zeros((H, W), dtype=bool)
    out = ref.refine(image, empty)
    assert out.shape == (H, W) and not out.any()
    assert out is not empty
    assert rec.prompts == [] and rec.encodes == 0 and ref.last_score is None


def test_seeded_and_reproducible(refiner, image, coarse) -> None:
    ref, rec = refiner
    a = ref.refine(image, coarse)
    b = ref.refine(image, coarse)
    c = ref.refine(image, coarse, rng=np.random.default_rng(0))
    d = ref.refine(image, coarse, rng=12345)
    assert np.array_equal(a, b) and np.array_equal(a, c)  # default seed is 0
    pts = [p["input_points"] for p in rec.prompts[::3]]
    assert torch.equal(pts[0], pts[1]) and torch.equal(pts[0], pts[2])
    assert not torch.equal(pts[0], pts[3]), "another seed draws other points"
    assert d.shape == (H, W)


def test_image_embedding_cache(refiner, image, coarse) -> None:
    ref, rec = refiner
    ref.refine(image, coarse)
    ref.refine(image, ~coarse)
    assert rec.encodes == 1 and ref.encodes == 1, "one frame, several goals: one encode"
    other = image.copy()
    other[0, 0, 0] ^= 1  # same buffer shape, new content
    ref.refine(other, coarse)
    assert rec.encodes == 2
    ref.set_image(image)
    m1 = ref.refine_mask(coarse)
    assert rec.encodes == 3 and np.array_equal(m1, ref.refine(image, coarse))
    assert rec.encodes == 3


def test_box_variant_uses_tight_box_and_no_points(sam_dir, image, coarse) -> None:
    ref = load_refiner(sam_dir, config=RefinerConfig(prompt="box"))
    rec = Recorder(ref.backend.model)
    out = ref.refine(image, coarse)
    rec.close()
    assert out.shape == (H, W) and out.dtype == bool
    assert len(rec.prompts) == 3
    for p in rec.prompts:
        assert p["input_points"] is None
    box = rec.prompts[0]["input_boxes"][0, 0].double().numpy()
    # tight box (30, 15, 70, 40) -> inclusive (30, 15, 69, 39), scaled into the input frame
    expected = np.array([30, 15, 69, 39]) * np.array([128 / W, 85 / H] * 2)
    assert np.allclose(box, expected, atol=1e-4)
    assert torch.equal(rec.prompts[1]["input_masks"][0, 0], rec.low_res[0][0, 0, 0])
    # An explicit box replaces the tight box.
    rec = Recorder(ref.backend.model)
    ref.refine(image, coarse, box=(0, 0, 45, 30))
    rec.close()
    expected = np.array([0, 0, 44, 29]) * np.array([128 / W, 85 / H] * 2)
    assert np.allclose(rec.prompts[0]["input_boxes"][0, 0].double().numpy(), expected, atol=1e-4)


def test_points_mode_adds_a_given_box(refiner, image, coarse) -> None:
    ref, rec = refiner
    ref.refine(image, coarse, box=(30, 15, 70, 40))
    p = rec.prompts[0]
    assert tuple(p["input_points"].shape) == (1, 1, 20, 2)
    assert tuple(p["input_boxes"].shape) == (1, 1, 4)


def test_bad_input_errors(refiner, image, coarse, sam_dir) -> None:
    ref, _ = refiner
    with pytest.raises(TypeError, match="bool"):
        ref.refine(image, coarse.astype(np.uint8))
    with pytest.raises(ValueError, match="does not match the image size"):
        ref.refine(image, coarse[:, :-1])
    with pytest.raises(TypeError, match="uint8"):
        ref.refine(image.astype(np.float32), coarse)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        ref.refine(image[..., :2], coarse)
    with pytest.raises(ValueError, match="x1 < x2"):
        ref.refine(image, coarse, box=(10, 10, 5, 20))
    fresh = load_refiner(sam_dir)
    with pytest.raises(RuntimeError, match="set_image"):
        fresh.refine_mask(coarse)
    with pytest.raises(ValueError, match="prompt"):
        RefinerConfig(prompt="scribble")
    with pytest.raises(ValueError, match="passes"):
        RefinerConfig(passes=0)
    with pytest.raises(TypeError, match="RefinerConfig"):
        SamRefiner(ref.backend, config={"passes": 3})


def test_half_precision_weights(sam_dir, image, coarse) -> None:
    ref = load_refiner(sam_dir, dtype="bfloat16")
    assert next(ref.backend.model.parameters()).dtype == torch.bfloat16
    out = ref.refine(image, coarse)
    assert out.shape == (H, W) and out.dtype == bool
    with pytest.raises(ValueError, match="dtype"):
        load_refiner(sam_dir, dtype="int8")


def test_refiner_dtype_names_are_the_models(sam_dir) -> None:
    """One dtype table: load_refiner takes what the model loader takes (``torch.`` names too)."""
    from text4seg_ros.model.loading import DTYPES

    for name, dtype in DTYPES.items():
        for given in (name, f"torch.{name}", dtype):
            ref = load_refiner(sam_dir, dtype=given)
            assert next(ref.backend.model.parameters()).dtype == dtype


def test_loader_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_refiner(tmp_path / "nope")
    with pytest.raises(ValueError, match="no config.json"):
        load_refiner(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "llava"}')
    with pytest.raises(ValueError, match="expected 'sam'"):
        load_refiner(tmp_path)
    txt = tmp_path / "weights.txt"
    txt.write_text("x")
    with pytest.raises(ValueError, match="suffix"):
        load_refiner(txt)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="weights-only"):
        load_refiner(junk)
    wrong = tmp_path / "wrong.pth"
    torch.save({"layer.weight": torch.zeros(2, 2)}, wrong)
    with pytest.raises(ValueError, match="missing 'image_encoder.patch_embed.proj.weight'"):
        load_refiner(wrong)
    with pytest.raises(ValueError, match="backend"):
        load_refiner(wrong, backend="onnx")


# segment_anything module names, written from segment_anything/modeling (image_encoder.py,
# prompt_encoder.py, mask_decoder.py, transformer.py, sam.py): what an official checkpoint holds.
_HF_TO_SA = (
    ("vision_encoder.", "image_encoder."),
    ("patch_embed.projection.", "patch_embed.proj."),
    ("neck.conv1.", "neck.0."),
    ("neck.layer_norm1.", "neck.1."),
    ("neck.conv2.", "neck.2."),
    ("neck.layer_norm2.", "neck.3."),
    ("mask_embed.conv1.", "mask_downscaling.0."),
    ("mask_embed.layer_norm1.", "mask_downscaling.1."),
    ("mask_embed.conv2.", "mask_downscaling.3."),
    ("mask_embed.layer_norm2.", "mask_downscaling.4."),
    ("mask_embed.conv3.", "mask_downscaling.6."),
    ("upscale_conv1.", "output_upscaling.0."),
    ("upscale_layer_norm.", "output_upscaling.1."),
    ("upscale_conv2.", "output_upscaling.3."),
    ("shared_embedding.positional_embedding", "pe_layer.positional_encoding_gaussian_matrix"),
    ("point_embed.", "point_embeddings."),
    (".layer_norm", ".norm"),
)


def _to_segment_anything(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in hf.items():
        if key.startswith("shared_image_embedding."):
            continue  # tied copy of the prompt encoder's matrix
        key = re.sub(r"^vision_encoder\.layers\.", "vision_encoder.blocks.", key)
        m = re.match(
            r"^(.*(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\.(\w+)\.(.*)$", key
        )
        if m and m.group(2) in ("proj_in", "proj_out", "layers"):
            stem, part, rest = m.groups()
            if part == "proj_in":
                key = f"{stem}.layers.0.{rest}"
            elif part == "proj_out":
                key = f"{stem}.layers.2.{rest}"  # depth 3 in the tiny model, as in SAM
            else:
                i, tail = rest.split(".", 1)
                key = f"{stem}.layers.{int(i) + 1}.{tail}"
        for new, old in _HF_TO_SA:
            key = key.replace(new, old)
        out[key] = value.clone()
    out["pixel_mean"] = torch.tensor([123.675, 116.28, 103.53]).view(-1, 1, 1)
    out["pixel_std"] = torch.tensor([58.395, 57.12, 57.375]).view(-1, 1, 1)
    return out


def test_pth_checkpoint_converts_to_the_same_model(sam_dir, tmp_path, image, coarse) -> None:
    from transformers import SamModel

    hf = SamModel.from_pretrained(sam_dir).state_dict()
    sa = _to_segment_anything(hf)
    for key in (  # names of the official layout
        "image_encoder.blocks.1.norm2.bias",
        "image_encoder.neck.0.weight",
        "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
        "prompt_encoder.point_embeddings.3.weight",
        "prompt_encoder.mask_downscaling.6.bias",
        "mask_decoder.output_upscaling.3.weight",
        "mask_decoder.iou_prediction_head.layers.2.weight",
        "mask_decoder.output_hypernetworks_mlps.3.layers.1.bias",
        "mask_decoder.transformer.norm_final_attn.weight",
        "mask_decoder.transformer.layers.1.cross_attn_image_to_token.out_proj.weight",
    ):
        assert key in sa, key
    path = tmp_path / "sam_vit_tiny.pth"
    torch.save(sa, path)
    cfg = infer_config(sa)
    assert cfg.vision_config.image_size == 128 and cfg.vision_config.num_hidden_layers == 2
    assert list(cfg.vision_config.global_attn_indexes) == [1]
    assert cfg.vision_config.window_size == 4 and cfg.vision_config.num_attention_heads == 2
    converted = load_refiner(path)
    reference = load_refiner(sam_dir)
    conv_sd = converted.backend.model.state_dict()
    for key, value in hf.items():
        assert torch.equal(conv_sd[key], value), key
    for prompt in ("points", "box"):
        a = SamRefiner(converted.backend, RefinerConfig(prompt=prompt)).refine(image, coarse)
        b = SamRefiner(reference.backend, RefinerConfig(prompt=prompt)).refine(image, coarse)
        assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="768/1024/1280"):
        sam_kind(sa)


@pytest.mark.skipif(segment_anything_available(), reason="segment_anything is installed")
def test_segment_anything_backend_absent_gives_clear_error(sam_dir, tmp_path) -> None:
    from transformers import SamModel

    path = tmp_path / "sam_vit_b.pth"
    sa = _to_segment_anything(SamModel.from_pretrained(sam_dir).state_dict())
    # A ViT-B-shaped encoder width so the kind resolves; the package import fails first.
    sa["image_encoder.patch_embed.proj.weight"] = torch.zeros(768, 3, 16, 16)
    torch.save(sa, path)
    with pytest.raises(ImportError, match="segment-anything"):
        load_refiner(path, backend="segment_anything")
    with pytest.raises(ValueError, match="directory"):
        load_refiner(sam_dir, backend="segment_anything")


def _tiny_segment_anything_model():  # noqa: ANN202
    """A tiny model built from segment_anything's own modules (same shapes as tiny_sam_config)."""
    from functools import partial

    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    torch.manual_seed(1)
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=2,
            embed_dim=32,
            img_size=128,
            mlp_ratio=2.0,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=2,
            patch_size=16,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=[1],
            window_size=4,
            out_chans=32,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=32, image_embedding_size=(8, 8), input_image_size=(128, 128), mask_in_chans=8
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=32, mlp_dim=64, num_heads=8),
            transformer_dim=32,
            iou_head_depth=3,
            iou_head_hidden_dim=32,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    with torch.no_grad():  # constant-initialised tensors (norms, position tables) would hide
        for p in sam.parameters():  # a swapped mapping: make every tensor distinct
            p.add_(torch.randn_like(p) * 0.05)
    return sam.eval()


@pytest.mark.skipif(
    not segment_anything_available(),
    reason="segment_anything (needs torchvision) is not installed; runs where it is",
)
def test_segment_anything_backend_matches_converted_transformers_model(
    tmp_path, image, coarse
) -> None:
    from text4seg_ros.refine import SegmentAnythingBackend

    sam = _tiny_segment_anything_model()
    path = tmp_path / "sam_vit_tiny.pth"
    torch.save(sam.state_dict(), path)
    hf = load_refiner(path)  # official layout -> transformers SamModel
    sa_backend = SegmentAnythingBackend(sam)
    assert sa_backend.low_res_side == hf.backend.low_res_side == 32
    for prompt in ("points", "box"):
        cfg = RefinerConfig(prompt=prompt)
        a = SamRefiner(hf.backend, cfg)
        b = SamRefiner(sa_backend, cfg)
        ma, mb = a.refine(image, coarse), b.refine(image, coarse)
        assert (ma == mb).mean() > 0.999, f"{prompt}: {(ma != mb).sum()} pixels differ"
        pa = hf.backend.predict(None, None, np.array([30, 15, 69, 39], np.float32), None)
        pb = sa_backend.predict(None, None, np.array([30, 15, 69, 39], np.float32), None)
        assert np.allclose(pa.low_res, pb.low_res, atol=1e-3), np.abs(pa.low_res - pb.low_res).max()
        assert abs(pa.score - pb.score) < 1e-3


@pytest.mark.gpu
def test_refiner_on_cuda_matches_cpu(sam_dir, image, coarse) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    cpu = load_refiner(sam_dir).refine(image, coarse)
    gpu = load_refiner(sam_dir, device="cuda").refine(image, coarse)
    assert gpu.shape == cpu.shape and (gpu == cpu).mean() > 0.999


def test_refine_hashes_the_frame_once_per_call(refiner, image, coarse, monkeypatch) -> None:
    """refine() fingerprints the image once: also for a new frame (no second hash to encode)."""
    from text4seg_ros.refine import refiner as refiner_module

    real = refiner_module._fingerprint
    calls: list[int] = []

    def counting(img):  # noqa: ANN001
        calls.append(1)
        return real(img)

    monkeypatch.setattr(refiner_module, "_fingerprint", counting)
    ref, rec = refiner
    ref.refine(image, coarse)  # new frame: hashed, encoded
    assert len(calls) == 1 and rec.encodes == 1
    ref.refine(image, ~coarse)  # same frame: hashed, not encoded
    assert len(calls) == 2 and rec.encodes == 1
    other = image.copy()
    other[0, 0, 0] ^= 1
    ref.refine(other, coarse)  # a new frame after another: hashed once, encoded
    assert len(calls) == 3 and rec.encodes == 2
