"""A bag whose goals change every frame, through the live perception_node (its own process,
real DDS, lifecycle, the params file the launch file uses): every frame is answered for exactly
its own goals, as the Segmenter answers them in this process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("torch")

from test_bag_frames import plans  # noqa: E402

from text4seg_ros.bag.evaluate import run_eval  # noqa: E402
from text4seg_ros.bag.record_frames import record_frames  # noqa: E402

DOMAIN = 20 + (os.getpid() + 53) % 80
NAMESPACE = f"/t4s_frames_{os.getpid()}"


@pytest.fixture(scope="module")
def model_grid_4(tmp_path_factory) -> Path:
    """A tiny random LLaVA that carries its grid: text4seg.json {"grid": 4}."""
    from text4seg_ros.model.meta import write_meta
    from text4seg_ros.model.tiny import build_tiny_model

    model = build_tiny_model("llava", tmp_path_factory.mktemp("model") / "llava", grid=4)
    write_meta(model, grid=4)
    return model


def test_per_frame_goals_through_the_node_match_direct(model_grid_4, tmp_path, monkeypatch):
    monkeypatch.setenv("ROS_DOMAIN_ID", str(DOMAIN))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    bag = tmp_path / "bag"
    record_frames(plans(), bag, start_ns=1_763_000_000_000_000_000)
    direct = run_eval(bag, tmp_path / "direct", model=model_grid_4, progress=False, echo=None)
    node = run_eval(
        bag, tmp_path / "node", model=model_grid_4, mode="node", progress=False, echo=None,
        node_kwargs={"ack_timeout": 60.0, "namespace": NAMESPACE},
    )  # fmt: skip
    # the node read its grid from the model (no -p grid): 4 rows in every I-SD descriptor
    assert not any(a.startswith("grid:=") for a in node["node_command"])
    assert node["pairs_in_bag"] == 5 and node["answered_pairs"] == 5 and node["failed_pairs"] == 0
    assert [(r["frame"], r["goal_id"]) for r in node["rows"]] == [
        (0, "res_attr/0/0"), (0, "openvocab/0/1"), (1, "gres_absent/1/0"), (1, "rec/1/1"),
        (2, "res_attr/2/0"),
    ]  # fmt: skip
    for a, b in zip(direct["rows"], node["rows"]):
        assert (a["goal_id"], a["descriptor"]) == (b["goal_id"], b["descriptor"])
        assert a["iou"] == pytest.approx(b["iou"]) and a["model_steps"] == b["model_steps"]
        assert b["answer_tokens"] >= b["model_steps"] >= 1
    ovoc = next(r for r in node["rows"] if r["kind"] == "openvocab")
    assert ovoc["descriptor"].count("\n") == 4  # G = 4 rows, each ending with a newline
    assert set(node["per_kind"]) == {"res_attr", "openvocab", "gres_absent", "rec"}
    for kind, values in direct["per_kind"].items():
        assert node["per_kind"][kind]["cIoU"] == pytest.approx(values["cIoU"], nan_ok=True)
    assert node["decoding"]["goals"] == 5 and node["decoding"]["tokens_per_call"] >= 1.0
