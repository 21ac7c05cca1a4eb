"""``make demo``: held-out scenes, goal selection, the demo report, and (slow) the whole run.

The slow test runs ``python -m text4seg_ros.demo`` as ``make demo`` does, as its own process:
the node is a further process fed over DDS. It uses the shipped demo model when
``models/demo`` holds one, else a tiny random model that carries grid 4 (the pipeline, not
quality, is then under test).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from text4seg_ros.bag.reader import EvalBag
from text4seg_ros.bag.record_frames import read_goals_file, record_frames
from text4seg_ros.demo.run import davis_subset
from text4seg_ros.demo.run import main as demo_main
from text4seg_ros.demo.scenes import GOALS_FILE, select_goals, write_heldout_scenes
from text4seg_ros.demo.summary import BARS, bar_rows, write_summary
from text4seg_ros.model import meta

REPO = Path(__file__).resolve().parents[1]
GOAL_KINDS = (
    "res_attr", "res_size", "res_spatial", "gres_multi", "gres_single", "gres_absent", "rec",
    "openvocab", "instances",
)  # fmt: skip


@dataclass
class FakeGoal:
    kind: str
    n: int


def test_goals_are_picked_round_robin_over_kinds_rotating_per_frame() -> None:
    goals = [FakeGoal(k, n) for k, count in (("a", 3), ("b", 1), ("c", 2)) for n in range(count)]
    picked = select_goals(goals, frame=0, max_goals=4, kinds=("a", "b", "c"))
    assert [(g.kind, g.n) for g in picked] == [("a", 0), ("b", 0), ("c", 0), ("a", 1)]
    picked = select_goals(goals, frame=1, max_goals=4, kinds=("a", "b", "c"))
    assert [(g.kind, g.n) for g in picked] == [("b", 0), ("c", 0), ("a", 0), ("c", 1)]
    assert len(select_goals(goals, frame=5, max_goals=8)) == 6 and select_goals([], 0) == []


def test_heldout_scenes_cover_every_kind_and_fit_the_node(tmp_path: Path) -> None:
    from training.data.tabletop import HELDOUT_BASE

    goals_file, plans = write_heldout_scenes(tmp_path, 9)
    assert goals_file == tmp_path / GOALS_FILE
    assert all(1 <= len(p.goals) <= 8 for p in plans)
    kinds = [g.goal.id.split("/")[0] for p in plans for g in p.goals]
    assert set(kinds) == set(GOAL_KINDS)
    read = read_goals_file(goals_file, tmp_path)
    assert [[g.goal.id for g in p.goals] for p in read] == [
        [g.goal.id for g in p.goals] for p in plans
    ]
    # the ground truth on disk is the scene generator's (held-out seeds: never trained on)
    from training.data.tabletop import draw_tabletop, tabletop_goals

    seed = HELDOUT_BASE + 0
    scene = draw_tabletop(seed, size=(128, 128))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "scene_0000.png")), scene.image)
    first = plans[0].goals[0]
    truth = next(g for g in tabletop_goals(scene, seed) if g.kind == first.goal.id.split("/")[0])
    assert np.array_equal(np.asarray(Image.open(first.truth)) == 255, truth.mask)
    # every goal of every frame is one the node takes: the bag records, one-shot goals per frame
    record_frames(read, tmp_path / "bag", start_ns=1_763_000_000_000_000_000)
    with EvalBag(tmp_path / "bag") as bag:
        assert bag.pairs == len(kinds) and not bag.rejected_goals
        ovoc = next(g for goals in bag.frame_goals for g in goals if g.task.value == "open_vocab")
        truth = next(f.ground_truth[ovoc.id] for f in bag.frames() if ovoc.id in f.ground_truth)
        assert truth.dtype == np.uint8 and 0 < truth.max() <= len(ovoc.classes)


def fake_report(value: float, absent_nacc: float, pairs: int = 320) -> dict:
    """A report whose kinds all have the same counts: cIoU = Acc@0.5 = ``value``."""
    counts = {"intersection": int(100 * value), "union": 100, "iou_sum": value,
              "queries": 1, "empty_targets": 0, "empty_hits": 0, "target_queries": 1,
              "target_hits": 1, "rec_hits": int(10 * value), "rec_queries": 10}  # fmt: skip
    per_kind = {k: {"task": "res", "pairs": 10, "answered": 10, "counts": dict(counts)}
                for k in GOAL_KINDS}  # fmt: skip
    per_kind["gres_absent"]["counts"].update(
        intersection=0, union=0, empty_targets=10, empty_hits=int(10 * absent_nacc),
        target_queries=0, target_hits=0, rec_queries=0, rec_hits=0,
    )  # fmt: skip
    decoding = {"goals": pairs, "model_calls_per_goal": 6.0, "answer_tokens_per_goal": 48.0,
                "tokens_per_call": 8.0, "per_kind": {}}  # fmt: skip
    return {"bag": "tabletop.bag", "frames": 40, "pairs_in_bag": pairs, "answered_pairs": pairs,
            "scored_pairs": pairs, "dropped_frames": 0, "per_kind": per_kind,
            "decoding": decoding, "created": "now", "latency_s": {}, "files": {},
            "cIoU": value}  # fmt: skip


def test_bars_are_checked_on_kinds_merged_by_their_counts() -> None:
    rows = bar_rows(fake_report(0.7, absent_nacc=0.9))
    assert [r["met"] for r in rows] == [True] * len(rows)
    assert len(rows) == len(BARS) + 3  # + pairs, every pair answered, tokens per call
    rows = bar_rows(fake_report(0.5, absent_nacc=0.8, pairs=200))
    met = {(r["bar"].name, r["bar"].metric): r["met"] for r in rows}
    assert met[("RES single target", "cIoU")] is False
    assert met[("RES spatial relation", "cIoU")] is True  # 0.5 >= 0.45
    assert met[("GRES absent target", "N-acc")] is False
    assert met[("pairs (at least 300)", "pairs")] is False


def test_demo_report_names_the_bars_and_says_real_images_need_real_weights(tmp_path) -> None:
    davis = {k: v for k, v in fake_report(0.2, 0.0, 50).items() if k != "per_kind"}
    davis.update(goals=[{"text": "the black swan"}], files={"montage": "overlay_montage.png"})
    text = write_summary(
        tmp_path / "report.md", fake_report(0.7, 0.9), davis, model="models/demo",
        params_file="share/text4seg_ros/config/perception.yaml",
        timings_s={"total": 200.0}, refiner="`grabcut` (the params file)",
    )  # fmt: skip
    assert text == (tmp_path / "report.md").read_text()
    assert "- mask refiner: `grabcut` (the params file)" in text
    assert "| RES single target | res_attr, res_size | cIoU | >= 0.6 | 0.700 | yes |" in text
    assert "| answer tokens per model call | - | tokens/call | >= 5 | 8.000 | yes |" in text
    assert "8.00 answer tokens per sequential model call" in text
    assert "**Quality on real images needs real weights.**" in text
    assert "![davis montage](davis/overlay_montage.png)" in text and "total 200 s" in text
    link = text.split("see [docs/checkpoints.md](")[1].split(")")[0]
    assert (tmp_path / link).resolve() == (REPO / "docs" / "checkpoints.md").resolve()
    assert (REPO / "docs" / "checkpoints.md").is_file()
    other = write_summary(
        tmp_path / "r3.md", fake_report(0.7, 0.9), davis, model="published", params_file="p",
        timings_s={}, shipped=False,
    )  # fmt: skip
    assert "never seen a swan" not in other and "docs/checkpoints.md" in other
    skipped = write_summary(
        tmp_path / "r2.md", fake_report(0.7, 0.9), None, model="m", params_file="p",
        timings_s={}, davis_note="Skipped (--no-davis).",
    )  # fmt: skip
    assert "Skipped (--no-davis)." in skipped


def test_davis_subset_links_evenly_spaced_frames_and_their_masks(tmp_path: Path) -> None:
    davis = tmp_path / "davis"
    for sub, ext in (("JPEGImages", "jpg"), ("Annotations", "png")):
        (davis / sub).mkdir(parents=True)
        for i in range(10):
            (davis / sub / f"{i:05d}.{ext}").write_bytes(b"x")
    assert davis_subset(davis, tmp_path / "all", 0) == davis
    out = davis_subset(davis, tmp_path / "four", 4)
    names = sorted(p.name for p in (out / "JPEGImages").iterdir())
    assert names == ["00000.jpg", "00003.jpg", "00006.jpg", "00009.jpg"]
    assert all((out / "Annotations" / n.replace("jpg", "png")).is_symlink() for n in names)


def test_demo_without_a_model_exits_2_naming_it(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(meta, "demo_model_candidates", lambda: [tmp_path / "models" / "demo"])
    assert demo_main(["--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "shipped demo model is missing" in err and "make demo-model" in err


def test_params_file_without_an_ament_index_is_the_source_trees(monkeypatch) -> None:
    from text4seg_ros.demo.run import launch_params_file

    monkeypatch.delenv("AMENT_PREFIX_PATH", raising=False)  # ament_index raises OSError then
    path = launch_params_file()
    assert path == Path(__file__).resolve().parents[1] / "config" / "perception.yaml"


def test_the_report_names_the_refiner_the_params_file_gives_the_node(tmp_path) -> None:
    from text4seg_ros.demo.run import launch_params_file, refiner_in_use

    model = tmp_path / "m"
    model.mkdir()
    meta.write_meta(model, grid=8, refiner="grabcut")
    assert refiner_in_use(launch_params_file(), model) == (
        "`grabcut` (`auto` in the params file: the one the model names)"
    )
    meta.write_meta(model, grid=8)
    assert refiner_in_use(launch_params_file(), model).startswith("`none` (`auto`")
    own = tmp_path / "p.yaml"
    own.write_text("/**:\n  ros__parameters:\n    grid: 8\n/**/perception_node:\n"
                   "  ros__parameters:\n    refiner: none\n")  # fmt: skip
    meta.write_meta(model, grid=8, refiner="grabcut")
    assert refiner_in_use(own, model) == "`none` (the params file)"


def shipped_model() -> Path | None:
    try:
        return meta.default_model_dir()
    except FileNotFoundError:
        return None


@pytest.mark.slow
def test_make_demo_end_to_end(tmp_path: Path, data_dir: Path) -> None:
    """The demo as ``make demo`` runs it (the shipped model when present): every pair of every
    kind answered through the node, the reports and figures written, the DAVIS run done."""
    model = shipped_model()
    args = ["--out", str(tmp_path / "out"), "--davis", str(data_dir / "davis_blackswan")]
    if model is None:
        from text4seg_ros.model.tiny import build_tiny_model

        model = build_tiny_model("llava", tmp_path / "tiny", grid=4)
        meta.write_meta(model, grid=4)
        args += ["--model", str(model), "--frames", "6", "--davis-frames", "4"]
    env = {**os.environ, "ROS_DOMAIN_ID": str(20 + (os.getpid() + 71) % 80),
           "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}  # fmt: skip
    args += ["--namespace", f"/t4s_demo_{os.getpid()}", "--no-progress"]
    done = subprocess.run(
        [sys.executable, "-m", "text4seg_ros.demo", *args],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "out"
    report = json.loads((out / "tabletop" / "report.json").read_text())
    assert report["answered_pairs"] == report["pairs_in_bag"] and report["dropped_frames"] == 0
    assert set(report["per_kind"]) == set(GOAL_KINDS)
    assert report["decoding"]["goals"] == report["pairs_in_bag"]
    assert report["decoding"]["tokens_per_call"] > 1.0
    for name in ("overlay_montage.png", "iou_per_frame.png", "latency.png", "node.log"):
        assert (out / "tabletop" / name).stat().st_size > 0
    davis = json.loads((out / "davis" / "report.json").read_text())
    assert davis["answered_pairs"] == davis["pairs_in_bag"] > 0
    text = (out / "report.md").read_text()
    assert "### The bars of issue 8" in text and "docs/checkpoints.md" in text
    assert "| kind | task | pairs | answered |" in done.stdout
    if model == shipped_model():  # issue 8's bars on the run itself (not the quality bars)
        assert report["pairs_in_bag"] >= 300 and "needs real weights" in text
        assert report["decoding"]["tokens_per_call"] >= 5.0
