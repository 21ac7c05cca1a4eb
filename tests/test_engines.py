"""Engines against the torch reference: identical tokens, masks and scores on every backbone,
single and batched, drafts on and off; the ONNX cache and its manifest; TensorRT's guard."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from text4seg_ros.engines import ENGINES, EngineUnavailable, ListCache, make_engine
from text4seg_ros.engines.export import OnnxBundle, fingerprint
from text4seg_ros.model.registry import get_backbone
from text4seg_ros.model.segmenter import Segmenter
from text4seg_ros.model.tiny import TINY_BACKBONES, build_tiny
from text4seg_ros.model.types import Goal
from text4seg_ros.prompts import Task

REPO = Path(__file__).resolve().parents[1]
GOALS = [Goal("cup"), Goal("dog", Task.INSTANCES), Goal("the red mug"), Goal("chair")]


def _frame(seed: int = 0, h: int = 40, w: int = 52) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def _same(a, b) -> None:
    """Identical answers: descriptor text, mask, box, model steps; scores to float32 noise."""
    assert a.descriptor == b.descriptor
    assert np.array_equal(a.mask, b.mask)
    assert a.box == b.box and a.model_steps == b.model_steps
    assert a.score == pytest.approx(b.score, rel=1e-4, abs=1e-6)
    assert len(a.instances) == len(b.instances)


# Exports take tens of seconds per backbone on a loaded 2-core machine: the default run covers
# both position schemes (1-D rope: LLaVA; mrope + vision tower wrapped per frame size:
# Qwen2-VL); InternVL and Qwen2.5-VL (window attention) run with -m slow.
BACKBONE_PARAMS = [
    b if b in ("llava", "qwen2_vl") else pytest.param(b, marks=pytest.mark.slow)
    for b in sorted(TINY_BACKBONES)
]


@pytest.fixture(scope="module", params=BACKBONE_PARAMS)
def pair(request, tmp_path_factory):
    """A tiny random model of every backbone with a torch and an onnxruntime Segmenter."""
    model, processor = build_tiny(request.param, seed=3)
    folder = tmp_path_factory.mktemp(f"onnx_{request.param}")
    torch_seg = Segmenter(model, processor, request.param, grid=8)
    ort_seg = Segmenter(
        model,
        processor,
        request.param,
        grid=8,
        engine="onnxruntime",
        engine_options={"folder": folder},
    )
    return torch_seg, ort_seg, folder


@pytest.mark.parametrize("drafts", [64, 0])
def test_onnxruntime_equals_torch_batched_and_single(pair, drafts):
    ref, ort, _ = pair
    ref.max_draft_tokens = ort.max_draft_tokens = drafts
    image = _frame(1)
    ref.set_image(image)
    ort.set_image(image)
    assert ort.image_size == ref.image_size
    for a, b in zip(ref.segment(GOALS), ort.segment(GOALS)):
        _same(a, b)
    for goal in GOALS[:2]:  # one goal at a time: the same answers as in the batch
        _same(ref.segment([goal])[0], ort.segment([goal])[0])


def test_onnxruntime_prefix_cache_matches_torch(pair):
    ref, ort, _ = pair
    image = _frame(2)
    ref.set_image(image)
    ort.set_image(image)
    a, b = ref._prefix, ort._prefix
    assert torch.equal(a.input_ids, b.input_ids) and a.rope_delta == b.rope_delta
    for k_ref, k_ort in zip(a.keys, b.keys):
        assert k_ref.shape == k_ort.shape
        assert torch.allclose(k_ref, k_ort, atol=1e-4)


def test_onnx_step_selects_and_grows_the_cache_in_place(pair):
    """The step returns logits only at ``select`` and a torch-tensor cache one block longer;
    rows and slots are cut by ``select_cache``."""
    _, ort, _ = pair
    ort.set_image(_frame(3))
    step = ort._step
    prefix = ort._prefix
    cache = ort.engine.cache(prefix, 2)
    assert isinstance(cache, ListCache) and cache.batch == 2 and cache.length == prefix.length
    ids = torch.tensor([[5, 6, 7], [8, 9, 10]])
    pos = prefix.length + torch.arange(3)[None].expand(2, -1)
    mask = torch.ones(2, prefix.length + 3, dtype=torch.long)
    logits, cache = step(ids, pos, mask, cache, select=torch.tensor([2, 3]))
    assert logits.shape[0] == 2 and cache.length == prefix.length + 3
    full, _ = step(ids, pos, mask, ort.engine.cache(prefix, 2))
    assert full.shape[:2] == (2, 3)
    assert torch.allclose(full[0, 2], logits[0], atol=1e-5)
    assert torch.allclose(full[1, 0], logits[1], atol=1e-5)
    cut = step.select_cache(cache, torch.tensor([1]), torch.arange(prefix.length + 1))
    assert cut.batch == 1 and cut.length == prefix.length + 1
    assert torch.equal(cut.keys[0][0], cache.keys[0][1, :, : prefix.length + 1])


def test_manifest_names_model_opset_and_exporter_and_goes_stale(pair):
    ref, ort, folder = pair
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["model_hash"] == fingerprint(ref.model)
    assert manifest["opset"] >= 18 and manifest["backbone"] == ref.backbone.name
    assert {"torch", "transformers", "onnxscript"} <= set(manifest["exporter"])
    assert manifest["vision"] and (folder / "decoder.onnx").is_file()
    bundle = OnnxBundle(ref.model, ref.backbone, folder)
    assert not bundle.stale()
    bad = dict(manifest, opset=manifest["opset"] - 1)
    (folder / "manifest.json").write_text(json.dumps(bad))
    assert bundle.stale()  # another exporter or opset: exported again on next use
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_fingerprint_changes_with_any_weight_update():
    model, _ = build_tiny("llava", seed=0)
    before = fingerprint(model)
    with torch.no_grad():
        model.get_output_embeddings().weight[3, 5] += 0.5
    assert fingerprint(model) != before


def test_tensorrt_without_the_package_says_which_in_one_line():
    pytest.importorskip("onnxruntime")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:  # pragma: no cover - GPU machines
        pytest.skip("tensorrt is installed here; the GPU tests cover it")
    model, _ = build_tiny("qwen2_vl")
    with pytest.raises(EngineUnavailable) as err:
        make_engine("tensorrt", model, get_backbone("qwen2_vl"))
    message = str(err.value)
    assert "\n" not in message and "pip install" in message and "tensorrt" in message


def test_unknown_engine_is_refused_with_the_choices():
    model, _ = build_tiny("llava")
    with pytest.raises(ValueError, match="allowed: torch, onnxruntime, tensorrt"):
        make_engine("openvino", model, get_backbone("llava"))
    assert ENGINES == ("torch", "onnxruntime", "tensorrt")


def test_a_model_without_the_registry_layout_is_refused_with_the_reason():
    class Bare(torch.nn.Module):
        config = None

    with pytest.raises(EngineUnavailable, match="refuses this model: .*language_model"):
        make_engine("onnxruntime", Bare(), get_backbone("llava"))


@pytest.mark.skipif(not (REPO / "models" / "demo" / "config.json").is_file(), reason="no demo")
def test_demo_model_onnxruntime_equals_torch(tmp_path):  # pragma: no cover - until it lands
    path = REPO / "models" / "demo"
    ref = Segmenter.from_pretrained(path)
    ort = Segmenter(
        ref.model,
        ref.processor,
        ref.backbone,
        grid=ref.grid,
        engine="onnxruntime",
        engine_options={"folder": tmp_path / "onnx"},
    )
    image = _frame(4, 96, 128)
    ref.set_image(image)
    ort.set_image(image)
    for a, b in zip(ref.segment(GOALS), ort.segment(GOALS)):
        _same(a, b)
    # held-out tabletop scenes (make demo's, bench/engines.py's): the demo model writes real
    # masks there, over several calls with drafts rejected, batched and one goal at a time
    from text4seg_ros.demo.scenes import select_goals
    from training.data.tabletop import GOAL_KINDS, draw_tabletop, scene_seed, tabletop_goals

    drawn = 0
    for i in range(2):
        seed = scene_seed("heldout", i)
        scene = draw_tabletop(seed, size=(128, 128))
        goals = [
            Goal(g.text, g.task, classes=tuple(g.classes))
            for g in select_goals(tabletop_goals(scene, seed), i, 4, GOAL_KINDS)
        ]
        ref.set_image(scene.image)
        ort.set_image(scene.image)
        batched = ref.segment(goals)
        for a, b in zip(batched, ort.segment(goals)):
            _same(a, b)
        _same(ref.segment(goals[:1])[0], ort.segment(goals[:1])[0])
        drawn += sum(int(r.mask.any()) for r in batched)
    assert drawn  # not `others` everywhere: real masks were compared


@pytest.mark.gpu
@pytest.mark.parametrize("backbone", sorted(TINY_BACKBONES))
def test_tensorrt_fp32_equals_torch_on_gpu(backbone, tmp_path):  # pragma: no cover - GPU only
    pytest.importorskip("tensorrt")
    if not torch.cuda.is_available():
        pytest.skip("needs an NVIDIA GPU")
    model, processor = build_tiny(backbone, seed=3)
    model = model.to("cuda")
    ref = Segmenter(model, processor, backbone, grid=8)
    trt = Segmenter(
        model,
        processor,
        backbone,
        grid=8,
        engine="tensorrt",
        engine_options={"folder": tmp_path, "precision": "fp32"},
    )
    image = _frame(5)
    ref.set_image(image)
    trt.set_image(image)
    for drafts in (64, 0):
        ref.max_draft_tokens = trt.max_draft_tokens = drafts
        for a, b in zip(ref.segment(GOALS), trt.segment(GOALS)):
            _same(a, b)
    assert list(tmp_path.glob("decoder-*.plan"))  # the plan is cached beside the ONNX files


@pytest.mark.gpu
def test_onnxruntime_cuda_provider_equals_torch_on_gpu(tmp_path):  # pragma: no cover - GPU only
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu is not installed")
    model, processor = build_tiny("qwen2_vl", seed=3)
    model = model.to("cuda")
    ref = Segmenter(model, processor, "qwen2_vl", grid=8)
    ort = Segmenter(
        model, processor, "qwen2_vl", grid=8, engine="onnxruntime",
        engine_options={"folder": tmp_path},
    )  # fmt: skip
    image = _frame(6)
    ref.set_image(image)
    ort.set_image(image)
    for a, b in zip(ref.segment(GOALS), ort.segment(GOALS)):
        _same(a, b)


def test_export_command_prepares_graphs_beside_the_model(tmp_path, capsys):
    """``text4seg-export`` writes MODEL/onnx; the engine then uses it as is (no new export)
    and answers as torch does; a missing directory is one line and exit status 2."""
    from text4seg_ros.export_cli import main
    from text4seg_ros.model.tiny import build_tiny_model

    path = build_tiny_model("llava", tmp_path / "m", seed=4)
    assert main([str(path), "--size", "40x52"]) == 0
    assert "vision graph for 40x52" in capsys.readouterr().out
    decoder = path / "onnx" / "decoder.onnx"
    stamp = decoder.stat().st_mtime_ns
    ref = Segmenter.from_pretrained(path, grid=8)
    ort = Segmenter.from_pretrained(path, grid=8, engine="onnxruntime")
    image = _frame(7)
    ref.set_image(image)
    ort.set_image(image)
    for a, b in zip(ref.segment(GOALS[:2]), ort.segment(GOALS[:2])):
        _same(a, b)
    assert decoder.stat().st_mtime_ns == stamp
    assert len(list((path / "onnx").glob("vision-*.onnx"))) == 1  # the 40x52 graph, reused
    capsys.readouterr()  # loading progress bars so far
    assert main([str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "model directory not found" in err


def test_from_pretrained_with_a_graph_engine_frees_the_torch_decoder(tmp_path, monkeypatch):
    """A Segmenter that loads its own model for a graph engine moves the torch language-model
    layers to ``meta`` (the weights are not held twice), keeps embeddings and vision tower, and
    still answers as torch does, also on a new frame size (vision graph exported then); with
    its decoder graph gone it says so instead of exporting from weights it no longer has."""
    from text4seg_ros.model.tiny import build_tiny_model

    monkeypatch.setenv("TEXT4SEG_CACHE", str(tmp_path / "cache"))
    path = build_tiny_model("llava", tmp_path / "m", seed=4)
    ref = Segmenter.from_pretrained(path, grid=8)
    ort = Segmenter.from_pretrained(path, grid=8, engine="onnxruntime")
    language_model = ort.model.model.language_model
    assert {p.device.type for p in language_model.layers.parameters()} == {"meta"}
    assert language_model.norm.weight.device.type == "meta"
    assert ort.model.get_input_embeddings().weight.device.type == "cpu"
    assert {p.device.type for p in ort.model.model.vision_tower.parameters()} == {"cpu"}
    assert {p.device.type for p in ref.model.parameters()} == {"cpu"}  # torch engine: kept
    assert ort.engine.release_torch_decoder() == 0  # nothing left to free
    for image in (_frame(5), _frame(6, 64, 48)):
        ref.set_image(image)
        ort.set_image(image)
        for a, b in zip(ref.segment(GOALS), ort.segment(GOALS)):
            _same(a, b)
    (ort.engine.bundle.folder / "manifest.json").unlink()
    with pytest.raises(RuntimeError, match="reload the model to export again"):
        ort.set_image(_frame(7, 30, 30))
