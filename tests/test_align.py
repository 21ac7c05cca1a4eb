"""training.align: dense word targets per visual token, and the alignment stage itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import free_port
from safetensors.torch import load_file

from text4seg_ros.model.meta import read_meta
from training.align import COVER, align, cell_objects, cell_targets, main, probe, word_ids
from training.data.tabletop import KINDS, PLURALS, draw_tabletop
from training.demo_base import build_demo_base
from training.lora import load_base

REPO = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_base(tmp_path_factory.mktemp("align") / "base", grid=8)


def test_cells_name_the_object_covering_most_of_them() -> None:
    scene = draw_tabletop(3)
    which = cell_objects(scene, 8)
    assert which.shape == (64,) and which.dtype == np.int64
    cover = np.stack([o.mask.reshape(8, 16, 8, 16).mean((1, 3)).ravel() for o in scene.objects])
    for cell in range(64):
        share = cover[:, cell]
        if share.max() >= COVER:
            assert which[cell] == share.argmax()
        else:
            assert which[cell] == -1
    assert (which >= 0).any() and (which == -1).any()
    with pytest.raises(ValueError, match="multiple of grid"):
        cell_objects(draw_tabletop(3, size=(100, 100)), 8)


def test_targets_are_the_words_of_the_object(base: Path) -> None:
    _, processor, _ = load_base(base)
    ids = word_ids(processor.tokenizer)
    assert len(set(ids.values())) == len(ids)
    scene = draw_tabletop(3)
    which, targets = cell_objects(scene, 8), cell_targets(scene, 8, ids)
    assert targets.shape == (4, 64)
    for cell in range(64):
        if which[cell] < 0:
            assert (targets[:, cell] == ids["others"]).all()
        else:
            obj = scene.objects[which[cell]]
            want = [ids[obj.colour], ids[obj.kind], ids[PLURALS[obj.kind]], ids[obj.size]]
            assert targets[:, cell].tolist() == want
    assert set(KINDS) <= set(ids)


def test_alignment_makes_patches_read_as_their_colour_words(base: Path, tmp_path: Path) -> None:
    model, processor, _ = load_base(base)
    lm_before = {k: v.clone() for k, v in model.named_parameters() if "language_model.layers" in k}
    result = align(model, processor, grid=8, scenes=48, steps=300, lr=3e-3, batch=16)
    assert result["loss"] < result["first_loss"] - 1.0, result
    # Cells showing an object read as their colour word (a model answering "others" for every
    # cell scores 0 here; the 600-step run of make demo-model reached 0.82), the other cells as
    # "others".
    assert result["colour"] > 0.4 and result["others"] > 0.8, result
    assert result["row"] > 0.3 and result["col"] > 0.3, result  # chance 1 in 8; 1.0 at 600 steps
    # The language model's layers do not take part.
    assert all(torch.equal(v, dict(model.named_parameters())[k]) for k, v in lm_before.items())
    # The held-out probe reads each word group on its own: colours after alignment, where the
    # random base reads them near chance (1/6).
    before = probe(load_base(base)[0], processor, grid=8, scenes=30)
    after = probe(model, processor, grid=8, scenes=30)
    assert after["probe_objects"] == before["probe_objects"] > 30
    assert before["probe_colour"] < 0.45 and after["probe_colour"] > 0.8, (before, after)
    assert set(after) == {"probe_colour", "probe_kind", "probe_size", "probe_objects"}
    assert all(0.0 <= after[k] <= 1.0 for k in ("probe_kind", "probe_size"))


def test_cli_saves_a_loadable_model_with_its_grid(base: Path, tmp_path: Path) -> None:
    out = tmp_path / "aligned"
    assert main(["--model", str(base), "--out", str(out), "--scenes", "16", "--steps", "2",
                 "--batch", "4"]) == 0  # fmt: skip
    assert read_meta(out)["grid"] == 8
    result = json.loads((out / "align.json").read_text())
    assert result["step"] == 2 and result["probe_objects"] > 0  # the probe runs by default
    model, _, _ = load_base(out)
    assert model.config.model_type == "llava"


def test_alignment_refuses_a_model_whose_tokens_are_not_the_grid(base: Path) -> None:
    model, processor, _ = load_base(base)
    with pytest.raises(ValueError, match="visual tokens"):
        align(model, processor, grid=16, scenes=2, steps=1, batch=2)


# the data-parallel tests' alignment: 4 steps on 16 scenes, no probe
_ARGS = ["--scenes", "16", "--steps", "4", "--lr", "3e-3", "--probe_scenes", "0"]


def _align_on_two_ranks(base: Path, out: Path, batch: int) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           f"--master_port={free_port()}", "-m", "training.align", *_ARGS, "--batch", str(batch),
           "--model", str(base), "--out", str(out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_data_parallel_alignment_takes_the_steps_one_process_takes(
    base: Path, tmp_path: Path
) -> None:
    """Two gloo ranks (torch.distributed.run), each on half of every batch, end where one
    process ends: the same batches and the averaged gradient of the whole batch."""
    one_dir, two_dir = tmp_path / "one", tmp_path / "two"
    assert main([*_ARGS, "--batch", "8", "--model", str(base), "--out", str(one_dir)]) == 0
    proc = _align_on_two_ranks(base, two_dir, batch=8)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("[align] step 1/4") == 1  # rank 0 alone logs
    start, one, two = (load_file(str(d / "model.safetensors")) for d in (base, one_dir, two_dir))
    assert set(one) == set(two)
    trained = [k for k in one if not torch.equal(one[k], start[k])]
    assert any("vision_tower" in k for k in trained) and any("embed_tokens" in k for k in trained)
    moved = torch.cat([(one[k] - start[k]).ravel() for k in trained]).norm()
    apart = torch.cat([(two[k] - one[k]).ravel() for k in trained]).norm()
    # The same steps, summed in another order: a rounding apart, against the steps' size (not
    # per tensor: where the true gradient is zero, as for attention's key bias, Adam turns
    # rounding noise into full-size steps of either sign).
    assert apart < 0.01 * moved, (apart, moved)
    assert read_meta(two_dir)["grid"] == 8


def test_data_parallel_alignment_refuses_a_batch_the_ranks_cannot_split(
    base: Path, tmp_path: Path
) -> None:
    proc = _align_on_two_ranks(base, tmp_path / "bad", batch=7)
    assert proc.returncode != 0
    assert "batch 7 does not split over 2 ranks" in proc.stdout + proc.stderr
