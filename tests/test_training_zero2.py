"""End to end on CPU: LoRA under real DeepSpeed ZeRO-2 on 2 gloo ranks (torchrun), the loss
falls, the run resumes from its checkpoint, the adapter merges, and the Segmenter loads the
merged model and answers goals with valid descriptors.

Data: synthetic scenes (the real-data variant is the slow test running
training/scripts/train_tiny_cpu.sh on ../shared/data/coco_tiny16).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import free_port

from text4seg_ros.model.meta import read_meta, write_meta
from text4seg_ros.model.segmenter import Segmenter
from text4seg_ros.model.tiny import build_tiny_model
from text4seg_ros.model.types import Goal
from text4seg_ros.prompts import Task
from training.data.sample import ChatSample, read_jsonl, write_jsonl
from training.data.synthetic import build_synthetic
from training.dataset import ChatDataset, Collator, load_image
from training.evaluate import evaluate
from training.merge import merge_adapter

REPO = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


def _torchrun(args: list[str], timeout: float = 300, nproc: int = 2) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TORCH_EXTENSIONS_DIR": str(REPO / "build" / "torch_extensions"),
    }
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           f"--master_port={free_port()}", "-m", "training.train", *args]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Build data and a tiny LLaVA, train 8 steps (checkpoint at 4 and 8), resume to 10."""
    root = tmp_path_factory.mktemp("zero2")
    data = root / "syn.jsonl"
    samples = list(build_synthetic(root, n_images=24, seed=0, size=(32, 32), grid=16))
    # One sample over max_length: dropped (and counted) before sampling, never a crash.
    long = ChatSample(**{**samples[0].__dict__, "id": "too-long", "question": "x " * 3000})
    write_jsonl([*samples, long], data)
    base = build_tiny_model("llava", root / "base")
    write_meta(base, grid=16)  # carried into the merged and the fully tuned model
    out = root / "run"
    args = ["--model", str(base), "--data", str(data), "--output_dir", str(out),
            "--lora_r", "8", "--lora_alpha", "16", "--lr", "2e-3", "--global_batch", "8",
            "--per_device_batch", "2", "--log_steps", "2", "--save_steps", "4",
            "--num_workers", "0"]  # fmt: skip
    first = _torchrun([*args, "--max_steps", "8"])
    log_first = (out / "log.jsonl").read_text()
    second = _torchrun([*args, "--max_steps", "10"])
    return {"root": root, "data": data, "base": base, "out": out, "first": first,
            "second": second, "log_first": log_first}  # fmt: skip


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_loss_falls_under_zero2_on_two_ranks(run: dict) -> None:
    out = run["out"]
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["world_size"] == 2 and recipe["accumulation"] == 2
    assert recipe["precision"] == "fp32" and recipe["lr"] == 2e-3
    first_run = [json.loads(line) for line in run["log_first"].splitlines()]
    assert [r["step"] for r in first_run] == [2, 4, 6, 8]
    losses = [r["loss"] for r in first_run]
    assert losses[-1] < losses[0] - 0.05, losses
    assert all(r["samples_s"] > 0 and r["tokens_s"] > 0 for r in first_run)
    # ZeRO-2: each rank holds its own partition of the optimizer state.
    step8 = out / "checkpoints" / "step8"
    assert (step8 / "zero_pp_rank_0_mp_rank_00_optim_states.pt").is_file()
    assert (step8 / "zero_pp_rank_1_mp_rank_00_optim_states.pt").is_file()
    assert "world 2 x micro 2 x accum 2 = 8/step" in run["first"].stdout
    assert "dropped 1 of 119 samples" in run["first"].stdout
    assert "(first: too-long)" in run["first"].stdout
    assert recipe["dropped_over_max_length"] == 1


def test_checkpoints_hold_trainable_weights_only_and_rotate(run: dict) -> None:
    ckpt = run["out"] / "checkpoints"
    # save_steps 4, save_total_limit 2 (default): step4 was deleted once step10 was saved.
    assert sorted(p.name for p in ckpt.glob("step*")) == ["step10", "step8"]
    states = torch.load(ckpt / "step8" / "mp_rank_00_model_states.pt", weights_only=False)
    names = list(states["module"])
    assert names and all("lora_" in n for n in names), names[:5]
    assert not states.get("frozen_param_fragments")


def test_training_resumes_from_the_latest_checkpoint(run: dict) -> None:
    assert "resumed at step 8" in run["second"].stdout
    steps = [r["step"] for r in _log(run["out"])]
    assert steps == [2, 4, 6, 8, 10]  # continued, not restarted
    assert (run["out"] / "checkpoints" / "step10").is_dir()
    assert "dropped 1 of " in run["second"].stdout  # the same sample, again before sampling


@pytest.fixture(scope="module")
def merged(run: dict) -> Path:
    return merge_adapter(run["out"] / "adapter", run["root"] / "merged")


def test_merged_model_equals_base_plus_adapter(run: dict, merged: Path) -> None:
    plain = Segmenter.from_pretrained(merged, grid=16)
    lora = Segmenter.from_pretrained(run["base"], grid=16, adapter=run["out"] / "adapter",
                                     merge_adapter=False)  # fmt: skip
    base = Segmenter.from_pretrained(run["base"], grid=16)
    dataset = ChatDataset([str(run["data"])], plain.backbone, plain.processor)
    batch = Collator(plain.tokenizer.pad_token_id)([dataset[0], dataset[1]])
    with torch.no_grad():
        a = plain.model(**batch).logits
        b = lora.model(**batch).logits
        c = base.model(**batch).logits
    assert torch.allclose(a, b, atol=1e-4)
    assert not torch.allclose(a, c, atol=1e-3)  # training changed the model
    assert read_meta(merged) == {"grid": 16}  # the base's text4seg.json
    provenance = json.loads((merged / "text4seg_training.json").read_text())
    assert provenance["backbone"] == "llava" and provenance["recipe"]["world_size"] == 2


def test_segmenter_answers_goals_with_valid_descriptors(run: dict, merged: Path) -> None:
    segmenter = Segmenter.from_pretrained(merged, grid=16)
    sample = read_jsonl(run["data"])[0]
    image = np.asarray(load_image(sample))
    segmenter.set_image(image)
    goals = [Goal(sample.meta["label"]), Goal("green shapes", Task.GRES), Goal("blue square")]
    results = segmenter.segment(goals)
    assert len(results) == 3
    for result in results:
        assert result.descriptor.startswith("<seg>") and result.descriptor.endswith("</seg>")
        assert result.repairs == []
        assert result.mask.shape == image.shape[:2] and result.mask.dtype == bool


@pytest.mark.slow
def test_one_command_trains_on_coco_tiny16(data_dir: Path, tmp_path: Path) -> None:
    """training/scripts/train_tiny_cpu.sh: coco_tiny16 -> ZeRO-2 on 2 ranks -> merged answers."""
    env = {**os.environ, "OUT": str(tmp_path / "tiny"), "TEXT4SEG_DATA": str(data_dir),
           "PY": sys.executable, "MASTER_PORT": str(free_port())}  # fmt: skip
    proc = subprocess.run(["bash", "training/scripts/train_tiny_cpu.sh"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # training.evaluate prints the overall metrics as one JSON line, then a line per goal kind
    lines = proc.stdout.strip().splitlines()
    metrics = json.loads(next(line for line in reversed(lines) if line.startswith("{")))
    assert metrics["queries"] == 8 and metrics["valid"] == 1.0
    assert any(line.startswith("res {") for line in lines), lines[-3:]
    log = _log(tmp_path / "tiny" / "run")
    assert log[-1]["loss"] < log[0]["loss"]
    assert (tmp_path / "tiny" / "merged" / "model.safetensors").is_file()


def test_evaluate_answers_the_samples_goals(run: dict, merged: Path) -> None:
    segmenter = Segmenter.from_pretrained(merged, grid=16)
    samples = read_jsonl(run["data"])
    report = evaluate(segmenter, samples, limit=4)
    assert report["metrics"]["queries"] == 4 and report["metrics"]["valid"] == 1.0
    assert [a["id"] for a in report["answers"]] == [s.id for s in samples[:4]]
    assert all(0.0 <= a["iou"] <= 1.0 for a in report["answers"])


def test_full_fine_tuning_saves_a_model_the_segmenter_loads(run: dict) -> None:
    """``--tune full`` (tiny models from random init, e.g. the demo's): one rank, all weights."""
    out = run["root"] / "full"
    args = ["--model", str(run["base"]), "--data", str(run["data"]), "--output_dir", str(out),
            "--tune", "full", "--lr", "1e-3", "--global_batch", "8", "--per_device_batch", "8",
            "--max_steps", "6", "--log_steps", "2", "--save_steps", "0",
            "--num_workers", "0"]  # fmt: skip
    proc = _torchrun(args, nproc=1)
    trainable, total = re.search(r"([\d,]+) trainable of ([\d,]+) params", proc.stdout).groups()
    assert trainable == total  # every weight, vision tower included
    losses = [r["loss"] for r in _log(out)]
    assert losses[-1] < losses[0] - 0.1, losses
    assert read_meta(out / "model") == {"grid": 16}  # the input model's text4seg.json
    segmenter = Segmenter.from_pretrained(out / "model", grid=16)
    segmenter.set_image(np.asarray(load_image(read_jsonl(run["data"])[0])))
    (result,) = segmenter.segment([Goal("red circle")])
    assert result.repairs == [] and result.descriptor.startswith("<seg>")


def test_freeze_keeps_the_named_parts_fixed_in_full_tuning(run: dict) -> None:
    """``--freeze vision,projector,embeddings`` (after training.align): those weights leave the
    run bit-identical, the language model's layers train (with batches grouped by length, so
    that option runs under DeepSpeed too)."""
    from training.lora import load_base

    out = run["root"] / "frozen"
    args = ["--model", str(run["base"]), "--data", str(run["data"]), "--output_dir", str(out),
            "--tune", "full", "--freeze", "vision,projector,embeddings", "--lr", "1e-3",
            "--global_batch", "8", "--per_device_batch", "8", "--max_steps", "4",
            "--log_steps", "2", "--save_steps", "0", "--num_workers", "0",
            "--group_by_length", "true"]  # fmt: skip
    proc = _torchrun(args, nproc=1)
    trainable, total = re.search(r"([\d,]+) trainable of ([\d,]+) params", proc.stdout).groups()
    assert 0 < int(trainable.replace(",", "")) < int(total.replace(",", ""))
    before = dict(load_base(run["base"])[0].named_parameters())
    after = dict(load_base(out / "model")[0].named_parameters())
    fixed = [k for k in before if "vision_tower" in k or "projector" in k or "embed_tokens" in k]
    moved = [k for k in before if "language_model.layers" in k and k.endswith("proj.weight")]
    assert fixed and moved
    assert all(torch.equal(before[k], after[k]) for k in fixed)
    assert all(not torch.equal(before[k], after[k]) for k in moved)


def test_freeze_is_checked_by_the_recipe() -> None:
    from training.recipe import Recipe

    with pytest.raises(ValueError, match="unknown --freeze parts"):
        Recipe(model="m", data=["d"], output_dir="o", tune="full", freeze="vision,wheels")
    with pytest.raises(ValueError, match="needs --tune full"):
        Recipe(model="m", data=["d"], output_dir="o", tune="lora", freeze="vision")
    assert Recipe(
        model="m", data=["d"], output_dir="o", tune="full", freeze=" vision, projector"
    ).freeze_parts() == ["vision", "projector"]
