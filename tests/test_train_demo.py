"""`make demo-model`'s script end to end at smoke size (slow: about 200 s on 2 cores).

training/scripts/train_demo.sh with tiny scene counts and steps: base (question before the
image), alignment, three answer stages under DeepSpeed on 2 gloo ranks, the copy to DEST, the
held-out evaluation and the word-reading diagnostic. The aligned parts (vision tower, projector,
word embeddings) reach DEST unchanged (the answer stages freeze them) and the language model's
layers do not. A second run with FROM_STAGE=3 reruns stage 3 alone, from the first run's data
and stage-2 model, and builds stage 3's data set again when its arguments changed; a third with
KEEP_DATA=1 keeps the alignment and the data and trains the answer stages again. A fast test
checks that bench/group_by_length.py, which copies the script's training options, still has
them.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from text4seg_ros.model.meta import read_meta
from training.data.tabletop import GOAL_KINDS
from training.lora import load_base

REPO = Path(__file__).resolve().parents[1]


def _recipe(env: dict[str, str]) -> list[str]:
    """Run train_demo.sh with ``env``; returns the step markers it printed ("1/7", "1-2", ...)."""
    proc = subprocess.run(
        ["bash", "training/scripts/train_demo.sh"], cwd=REPO, env=env, capture_output=True,
        text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [line[3:6] for line in proc.stdout.splitlines() if line.startswith("== ")]


@pytest.mark.slow
def test_the_demo_recipe_runs_at_smoke_size(tmp_path: Path) -> None:
    out, dest = tmp_path / "run", tmp_path / "final"
    env = {**os.environ, "OUT": str(out), "DEST": str(dest), "N1": "12", "N3": "12", "N4": "12",
           "STEPS1": "2", "STEPS2": "2", "STEPS3": "2", "ALIGN_STEPS": "3",
           "ALIGN_SCENES": "8", "MASTER_PORT": "29655"}  # fmt: skip
    _recipe(env)
    # the shipped model names the refiner its node figures were measured with
    assert read_meta(dest) == {"grid": 8, "prompt": "question_first", "refiner": "grabcut"}
    report = json.loads((out / "heldout_eval.json").read_text())
    # Every goal kind scored, every answer parsed (the figures of a 6-step model mean nothing).
    assert set(report) == set(GOAL_KINDS)
    assert all(r["valid"] == 1.0 and r["goals"] > 0 for r in report.values())
    diagnosis = json.loads((out / "diagnose.json").read_text())
    assert set(diagnosis) == {"two_objects", "two_to_six", "absent"}
    # a 2-step model may answer nothing (then picked_target and chance are NaN)
    settings = [diagnosis["two_objects"], diagnosis["two_to_six"]]
    assert all(d["goals"] > 0 and 0.0 <= d["answered"] <= 1.0 for d in settings)
    assert diagnosis["absent"]["goals"] > 0 and 0.0 <= diagnosis["absent"]["marked"] <= 1.0
    # the alignment stage reports what its frozen tokens tell apart (held-out probe)
    assert json.loads((out / "aligned" / "align.json").read_text())["probe_objects"] > 0
    aligned = dict(load_base(out / "aligned")[0].named_parameters())
    final = dict(load_base(dest)[0].named_parameters())
    fixed = [k for k in aligned if "vision_tower" in k or "projector" in k or "embed_tokens" in k]
    layers = [k for k in aligned if "language_model.layers" in k and k.endswith("proj.weight")]
    assert fixed and layers
    assert all(torch.equal(aligned[k], final[k]) for k in fixed)
    assert any(not torch.equal(aligned[k], final[k]) for k in layers)
    # Every stage starts from the previous stage's model, which carries the prompt layout.
    for stage in ("run1", "run2", "run3"):
        assert read_meta(out / stage / "model") == {"grid": 8, "prompt": "question_first"}
    # Each data set records the arguments it was built with.
    assert "--n-images 12" in (out / "relate" / "args.txt").read_text()
    stage_data = (out / "stage3" / "train.jsonl").stat().st_mtime_ns
    # FROM_STAGE=3 reruns stage 3 alone, on OUT's stage-2 model and data, and refreshes DEST;
    # stage 3's own data set is built again because its arguments changed (N4), never reused.
    stage2 = (out / "run2" / "model" / "model.safetensors").read_bytes()
    (dest / "model.safetensors").unlink()
    ran = _recipe({**env, "FROM_STAGE": "3", "N4": "10"})
    assert "6/7" in ran and not {"1/7", "2/7", "3/7", "4/7", "5/7"} & set(ran), ran
    assert (out / "run2" / "model" / "model.safetensors").read_bytes() == stage2
    assert (dest / "model.safetensors").is_file()
    assert "--n-images 10" in (out / "relate" / "args.txt").read_text()
    assert len((out / "relate" / "train.jsonl").read_text().splitlines()) <= 10 * 4
    assert (out / "stage3" / "train.jsonl").stat().st_mtime_ns == stage_data
    # KEEP_DATA=1 from stage 1 keeps the alignment its args.txt matches and every data set whose
    # arguments match (built beside the alignment), and trains the answer stages again.
    aligned = out / "aligned" / "model.safetensors"
    aligned_time = aligned.stat().st_mtime_ns
    ran = _recipe({**env, "N4": "10", "KEEP_DATA": "1"})
    assert "1-2" in ran and {"4/7", "5/7", "6/7"} <= set(ran) and "2/7" not in ran, ran
    assert aligned.stat().st_mtime_ns == aligned_time
    assert (out / "stage3" / "train.jsonl").stat().st_mtime_ns == stage_data


def _script_value(text: str, name: str) -> str:
    """The default of ``NAME=${NAME:-default}`` or the value of ``NAME="..."`` in the script."""
    for line in text.splitlines():
        if line.startswith(f"{name}=${{{name}:-"):
            return line.split(":-", 1)[1].split("}", 1)[0]
        if line.startswith(f'{name}="'):
            return line.split('"')[1]
    raise AssertionError(f"{name} not found in train_demo.sh")


def test_group_by_length_bench_trains_with_the_recipes_options() -> None:
    # bench/group_by_length.py measures the recipe's stage 2: its copy of the options must
    # follow train_demo.sh's (fast; the slow test above runs the script itself).
    import shlex

    from helpers import load_script

    text = (REPO / "training" / "scripts" / "train_demo.sh").read_text()
    block = text.split("TRAIN=(", 1)[1].split(")", 1)[0]
    words = shlex.split(block, comments=True)
    recipe = words[words.index("training.train") - 1 :]
    bench = load_script(REPO / "bench" / "group_by_length.py", "group_by_length")
    assert bench.TRAIN[: len(recipe)] == recipe
    extra = dict(zip(bench.TRAIN[len(recipe) :: 2], bench.TRAIN[len(recipe) + 1 :: 2]))
    assert extra["--lr"] == _script_value(text, "LR")
    assert extra["--fg_weight"] == _script_value(text, "FG_WEIGHT")
    assert bench.MIX == _script_value(text, "ALL_KINDS")
