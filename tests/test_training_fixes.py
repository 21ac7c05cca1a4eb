"""Training defects of issue 12 that a CPU shows: checkpointing default and KV cache off, the
precision choice by compute capability, over-long samples dropped before sampling, resume
decided by rank 0, checkpoint rotation, the fp32 merge, launch-script paths, COCO-Stuff ids."""

from __future__ import annotations

import json
import os
import random
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import free_port
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file
from transformers import LlavaForConditionalGeneration

from text4seg_ros.model.registry import get_backbone
from text4seg_ros.model.tiny import build_tiny, build_tiny_model
from training.checkpoints import decide_resume, rotate, step_dirs
from training.data.sample import ChatSample, write_jsonl
from training.data.semantic import COCO_STUFF_NAMES, PRESETS, open_vocab_sample
from training.data.synthetic import build_synthetic
from training.dataset import ChatDataset, Collator, encode_sample, sample_lengths
from training.merge import merge_adapter
from training.recipe import Recipe
from training.train import choose_precision, deepspeed_config, prepare_model

REPO = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


def _recipe(**kw) -> Recipe:
    return Recipe(model="m", data=["d.jsonl"], output_dir="o", **kw)


def test_checkpointing_is_on_by_default_and_training_builds_no_kv_cache() -> None:
    recipe = _recipe()
    assert recipe.gradient_checkpointing is True and recipe.save_total_limit == 2
    model, processor = build_tiny("llava")
    prepare_model(model, recipe.gradient_checkpointing)
    layers = model.model.language_model.layers
    assert all(layer.gradient_checkpointing for layer in layers)
    assert model.config.get_text_config().use_cache is False
    model.train()
    batch = Collator(processor.tokenizer.pad_token_id)(
        [
            {
                "input_ids": torch.tensor([5, 6, 7]),
                "labels": torch.tensor([5, 6, 7]),
                "attention_mask": torch.ones(3, dtype=torch.long),
            }
        ]  # fmt: skip
    )
    out = model(**batch)
    assert out.past_key_values is None  # the language model read text_config.use_cache
    out.loss.backward()


def test_auto_precision_follows_the_compute_capability() -> None:
    assert choose_precision("auto", (7, 0)) == "fp16"  # V100: bf16 only emulated
    assert choose_precision("auto", (7, 5)) == "fp16"  # T4
    assert choose_precision("auto", (8, 0)) == "bf16"  # A100
    assert choose_precision("auto", (9, 0)) == "bf16"  # H100 / H200
    assert choose_precision("auto", None) == "fp32"  # CPU
    assert choose_precision("fp16", (9, 0)) == "fp16"
    with pytest.warns(UserWarning, match="emulated"):
        assert choose_precision("bf16", (7, 0)) == "bf16"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        choose_precision("bf16", (8, 6))
    with pytest.raises(ValueError, match="precision must be one of"):
        choose_precision("fp8", (9, 0))


def test_node_local_checkpoints_when_output_is_not_shared() -> None:
    shared = deepspeed_config(_recipe(per_device_batch=4), 8, "bf16")
    assert "use_node_local_storage" not in json.dumps(shared)
    local = deepspeed_config(_recipe(per_device_batch=4, shared_output=False), 8, "bf16")
    assert local["checkpoint"]["use_node_local_storage"] is True


@pytest.mark.parametrize("backbone", ["llava", "qwen2_vl", "internvl"])
def test_over_long_samples_are_dropped_before_sampling(backbone: str, tmp_path: Path) -> None:
    samples = list(build_synthetic(tmp_path, n_images=3, seed=2, size=(40, 48), grid=8))
    long = ChatSample(**{**samples[1].__dict__, "id": "too-long",
                         "question": "where is " + "the red thing " * 200})  # fmt: skip
    cropped = ChatSample(**{**samples[2].__dict__, "id": "cropped", "crop": (4, 2, 36, 34)})
    data = [*samples, long, cropped]
    write_jsonl(data, tmp_path / "d.jsonl")
    _, processor = build_tiny(backbone)
    spec = get_backbone(backbone)
    # Predicted lengths are exactly those encode_sample builds (no image decoded).
    lengths = sample_lengths(data, spec, processor)
    actual = [encode_sample(s, spec, processor, 10**6)["input_ids"].shape[0] for s in data]
    assert lengths == actual
    limit = max(n for s, n in zip(data, lengths) if s.id != "too-long")
    dataset = ChatDataset([str(tmp_path / "d.jsonl")], spec, processor, max_length=limit)
    assert dataset.dropped == ["too-long"] and len(dataset) == len(data) - 1
    assert all(s.id != "too-long" for s in dataset.samples)
    for i in range(len(dataset)):  # nothing left that raises
        assert dataset[i]["input_ids"].shape[0] <= limit
    again = ChatDataset([str(tmp_path / "d.jsonl")], spec, processor, max_length=limit)
    assert [s.id for s in again.samples] == [s.id for s in dataset.samples]  # same on resume
    with pytest.raises(ValueError, match=f"all {len(data)} samples are longer"):
        ChatDataset([str(tmp_path / "d.jsonl")], spec, processor, max_length=5)


def _resume_worker(rank: int, port: int, root: str, results: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        # No shared output folder: each rank has its own; only rank 0's holds "latest" (as
        # DeepSpeed writes it on global rank 0 alone).
        ckpt = Path(root) / f"node{rank}" / "checkpoints"
        try:
            tag: str | None = decide_resume(ckpt, resume=True)
            outcome = {"tag": tag}
        except RuntimeError as err:
            outcome = {"error": str(err)}
        Path(results, f"rank{rank}.json").write_text(json.dumps(outcome))
    finally:
        dist.destroy_process_group()


def _make_ckpt(folder: Path, tag: str, rank: int, latest: bool) -> None:
    (folder / tag).mkdir(parents=True, exist_ok=True)
    (folder / tag / "mp_rank_00_model_states.pt").write_bytes(b"x")
    (folder / tag / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt").write_bytes(b"x")
    if latest:
        (folder / "latest").write_text(tag)


def _run_resume(root: Path) -> list[dict]:
    results = root / "results"
    results.mkdir()
    mp.spawn(_resume_worker, args=(free_port(), str(root), str(results)), nprocs=2)
    return [json.loads((results / f"rank{r}.json").read_text()) for r in range(2)]


def test_resume_is_decided_by_rank_0_for_every_rank(tmp_path: Path) -> None:
    _make_ckpt(tmp_path / "node0" / "checkpoints", "step8", 0, latest=True)
    _make_ckpt(tmp_path / "node1" / "checkpoints", "step8", 1, latest=False)
    assert _run_resume(tmp_path) == [{"tag": "step8"}, {"tag": "step8"}]


def test_resume_stops_every_rank_when_one_lacks_the_checkpoint(tmp_path: Path) -> None:
    _make_ckpt(tmp_path / "node0" / "checkpoints", "step8", 0, latest=True)
    _make_ckpt(tmp_path / "node1" / "checkpoints", "step4", 1, latest=False)  # older only
    outcomes = _run_resume(tmp_path)
    assert all("ranks [1] have no such checkpoint" in o.get("error", "") for o in outcomes)


def test_rotation_keeps_the_newest_checkpoints(tmp_path: Path) -> None:
    for step in (4, 8, 12, 16):
        (tmp_path / f"step{step}").mkdir()
    (tmp_path / "latest").write_text("step16")
    deleted = rotate(tmp_path, keep=2)
    assert [p.name for p in deleted] == ["step4", "step8"]
    assert [p.name for p in step_dirs(tmp_path)] == ["step12", "step16"]
    assert rotate(tmp_path, keep=0) == [] and len(step_dirs(tmp_path)) == 2


def test_adapter_is_merged_in_fp32_then_cast(tmp_path: Path) -> None:
    base = build_tiny_model("llava", tmp_path / "base")
    model, _ = build_tiny("llava")
    base_q = model.model.language_model.layers[0].self_attn.q_proj.weight.detach().clone()
    peft_model = get_peft_model(
        model,
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    peft_model.peft_config["default"].base_model_name_or_path = str(base)
    peft_model.save_pretrained(str(tmp_path / "adapter"))
    merged = merge_adapter(tmp_path / "adapter", tmp_path / "merged", dtype=torch.bfloat16)
    assert {t.dtype for t in load_file(str(merged / "model.safetensors")).values()} == {
        torch.bfloat16
    }
    got = LlavaForConditionalGeneration.from_pretrained(str(merged), dtype=torch.bfloat16)
    reference = peft_model.merge_and_unload().state_dict()  # float32 merge
    q = "model.language_model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(reference[q], base_q)  # the adapter changed the weight
    for name, tensor in got.state_dict().items():
        assert torch.equal(tensor, reference[name].to(torch.bfloat16)), name
    assert json.loads((merged / "config.json").read_text())["dtype"] == "bfloat16"


def _fake(path: Path, name: str) -> Path:
    """An executable that prints its working directory and arguments, one per line."""
    exe = path / name
    exe.write_text('#!/bin/sh\npwd\nfor a in "$@"; do echo "$a"; done\n')
    exe.chmod(0o755)
    return exe


@pytest.mark.parametrize("script", ["train_8gpu.sh", "train_multinode.sh"])
def test_launch_scripts_read_relative_paths_from_the_callers_folder(
    script: str, tmp_path: Path
) -> None:
    fake = _fake(tmp_path, "fake")
    env = {**os.environ, "PY": str(fake), "DEEPSPEED": str(fake), "MASTER_ADDR": "node1",
           "HOSTFILE": "hosts"}  # fmt: skip
    proc = subprocess.run(
        ["bash", str(REPO / "training" / "scripts" / script), "base", "a.jsonl,sub/b.jsonl", "out"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    cwd, *args = proc.stdout.splitlines()
    assert Path(cwd) == REPO
    after = {flag: args[args.index(flag) + 1] for flag in ("--model", "--output_dir")}
    assert after == {"--model": f"{tmp_path}/base", "--output_dir": f"{tmp_path}/out"}
    data = args[args.index("--data") + 1 : args.index("--data") + 3]
    assert data == [f"{tmp_path}/a.jsonl", f"{tmp_path}/sub/b.jsonl"]
    if script == "train_multinode.sh":
        assert args[args.index("--hostfile") + 1] == f"{tmp_path}/hosts"


def test_two_stage_script_reads_relative_paths_from_the_callers_folder(tmp_path: Path) -> None:
    fake = _fake(tmp_path, "fake")
    env = {**os.environ, "PY": str(fake), "LAUNCHER": "fake"}
    proc = subprocess.run(
        ["bash", str(REPO / "training" / "scripts" / "two_stage.sh"), "base", "r.jsonl",
         "g.jsonl", "out"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    lines = proc.stdout.splitlines()
    assert f"{tmp_path}/base" in lines and f"{tmp_path}/r.jsonl" in lines
    assert f"{tmp_path}/g.jsonl" in lines and f"{tmp_path}/out/stage2_merged" in lines


def test_coco_stuff_names_follow_the_182_id_list(data_dir: Path) -> None:
    assert len(COCO_STUFF_NAMES) == 182
    assert COCO_STUFF_NAMES[0] == "person" and COCO_STUFF_NAMES[181] == "wood"
    unused = [i for i, n in enumerate(COCO_STUFF_NAMES) if n is None]
    assert unused == [11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90]
    assert COCO_STUFF_NAMES[91] == "banner" and COCO_STUFF_NAMES[156] == "sky"
    assert len({n for n in COCO_STUFF_NAMES if n}) == 171
    # Thing names agree with the real COCO instances file (pixel value = category id - 1).
    instances = json.loads(
        (data_dir / "coco_tiny16" / "instances_train2017_small.json").read_text()
    )
    for category in instances["categories"]:
        assert COCO_STUFF_NAMES[category["id"] - 1] == category["name"]
    # A stuffthingmaps label map: 12 = stop sign (id 13), 156 = sky, 255 unlabeled.
    label_map = np.full((32, 32), 255, dtype=np.uint8)
    label_map[:16] = 156
    label_map[16:, :16] = 12
    names, ignore = PRESETS["coco-stuff"]
    sample = open_vocab_sample("x.jpg", label_map, names, random.Random(0), grid=8, ignore=ignore)
    assert sample is not None and sorted(sample.meta["present"]) == ["sky", "stop sign"]
