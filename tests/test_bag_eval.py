"""text4seg-bag eval on the DAVIS blackswan frames with a real (tiny, random) model.

* the full 50-frame blackswan bag through ``text4seg-bag eval`` (directly through the
  Segmenter): a row for every (frame, goal) pair, every report file, the metric table printed;
* a 4-frame subset through the live ``perception_node`` (subprocess, real DDS, lifecycle): no
  frame dropped, and the node's masks score exactly as the direct path's.

A tiny random model gives near-zero-to-low IoU; these tests check the pipeline, not accuracy.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")

from text4seg_ros.bag.cli import main  # noqa: E402
from text4seg_ros.bag.evaluate import REPORT_FILES, run_eval  # noqa: E402
from text4seg_ros.bag.record import make_goals, record_images  # noqa: E402

NAMESPACE = f"/t4s_eval_{os.getpid()}"  # apart from other test processes on the domain
METRICS = ("cIoU", "gIoU", "N-acc", "T-acc", "Acc@0.5")


@pytest.fixture(scope="module")
def tiny_model(tiny_model_factory) -> Path:
    import torch

    torch.set_num_threads(1)
    return tiny_model_factory("llava")


@pytest.fixture(scope="module")
def swan(data_dir: Path) -> Path:
    return data_dir / "davis_blackswan"


@pytest.fixture(scope="module")
def subset_bag(swan: Path, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("subset")
    for sub in ("JPEGImages", "Annotations"):
        (root / sub).mkdir()
        for src in sorted((swan / sub).iterdir())[:4]:
            shutil.copy(src, root / sub / src.name)
    record_images(root / "JPEGImages", root / "bag", goals=make_goals(["the black swan"]),
                  mask_dirs=[root / "Annotations"], start_ns=10**18)  # fmt: skip
    return root / "bag"


def check_report(out: Path, frames: int, goals: int) -> dict:
    for name in REPORT_FILES.values():
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    report = json.loads((out / "report.json").read_text())
    assert report["pairs_in_bag"] == frames * goals == len(report["rows"])
    assert {(r["frame"], r["goal_id"]) for r in report["rows"]} == {
        (f, f"g{g}") for f in range(frames) for g in range(goals)
    }
    for name in METRICS:
        assert name in report
    assert set(report["latency_s"]) == {"p50", "p90", "p99", "mean", "max"}
    return report


def test_full_blackswan_bag_through_the_cli(swan: Path, tiny_model: Path, tmp_path: Path,
                                            capsys) -> None:  # fmt: skip
    bag, out = tmp_path / "blackswan", tmp_path / "report"
    assert main(["record-images", str(swan / "JPEGImages"), str(bag), "--masks",
                 str(swan / "Annotations"), "--goal", "the black swan"]) == 0  # fmt: skip
    assert main(["eval", str(bag), "--model", str(tiny_model), "--out", str(out),
                 "--no-progress"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    report = check_report(out, frames=50, goals=1)
    assert report["dropped_frames"] == 0 and report["answered_pairs"] == 50
    assert report["scored_pairs"] == 50 and report["T-acc"] is not None
    assert 0.0 <= report["cIoU"] <= 1.0 and 0.0 <= report["gIoU"] <= 1.0
    assert report["N-acc"] is None  # the swan is in every frame: no empty target
    assert all(r["iou"] is not None and r["descriptor"] for r in report["rows"])
    assert f"| cIoU | {report['cIoU']:.4f} |" in printed
    assert "| frames (dropped) | 50 (0) |" in printed


def test_through_node_matches_direct(subset_bag: Path, tiny_model: Path, tmp_path: Path,
                                     ros_domain) -> None:  # fmt: skip
    direct = run_eval(subset_bag, tmp_path / "direct", model=tiny_model, progress=False,
                      echo=None)  # fmt: skip
    node = run_eval(
        subset_bag, tmp_path / "node", model=tiny_model, mode="node", progress=False, echo=None,
        node_kwargs={"ack_timeout": 60.0, "namespace": NAMESPACE},
    )  # fmt: skip
    check_report(tmp_path / "node", frames=4, goals=1)
    assert node["dropped_frames"] == 0 and node["failed_pairs"] == 0
    assert (tmp_path / "node" / "node.log").is_file()
    assert f"__ns:={NAMESPACE}" in node["node_command"]
    assert node["roundtrip_s"]["p50"] >= node["latency_s"]["p50"] > 0
    # The node runs the same Segmenter on the same frames: same masks, same scores.
    for a, b in zip(direct["rows"], node["rows"]):
        assert (a["frame"], a["goal_id"]) == (b["frame"], b["goal_id"])
        assert a["iou"] == pytest.approx(b["iou"]) and a["pred_box"] == b["pred_box"]
        assert a["descriptor"] == b["descriptor"]
    for name in ("cIoU", "gIoU", "Acc@0.5"):
        assert direct[name] == pytest.approx(node[name])


def test_through_node_reports_a_model_that_does_not_load(subset_bag: Path, tmp_path: Path,
                                                         ros_domain, capsys) -> None:  # fmt: skip
    rc = main([
        "eval", str(subset_bag), "--model", str(tmp_path / "no_model"), "--through-node",
        "--out", str(tmp_path / "r"), "--no-progress", "--namespace", NAMESPACE,
    ])  # fmt: skip
    assert rc == 1
    err = capsys.readouterr().err
    assert "perception_node refused configure" in err and "is not a directory" in err


def test_node_command_is_the_launch_files_plus_model_parameters(tmp_path: Path) -> None:
    from text4seg_ros.bag.node_eval import check_namespace, default_params_file, node_command

    params = default_params_file()
    assert params.name == "perception.yaml" and params.is_file()
    cmd = node_command(tmp_path, params, backbone="llava", device="cpu", grid=24, namespace="/a/b")
    assert cmd[0].endswith("perception_node") or cmd[1:3] == ["-m", "text4seg_ros.ros.node"]
    args = cmd[cmd.index("--ros-args") + 1 :]
    assert args[:2] == ["--params-file", str(params)]
    pairs = {args[i + 1] for i, a in enumerate(args) if a in ("-p", "-r")}
    assert pairs == {
        f"model_path:={tmp_path}", "device:=cpu", "grid:=24", "backbone:=llava",
        "image_qos_reliability:=reliable", "__ns:=/a/b",
    }  # fmt: skip
    for bad in ("a", "/1a", "/a/", "/a b"):
        with pytest.raises(ValueError, match="namespace must be"):
            check_namespace(bad)


def test_node_answers_are_read_from_the_decoded_message() -> None:
    """The player decodes each answer once and hands over the message; no second decode."""
    import numpy as np

    from text4seg_ros.bag import messages as m
    from text4seg_ros.bag.node_eval import _answers
    from text4seg_ros.bag.record import ground_truth_segmentation

    mask = np.zeros((6, 9), bool)
    mask[1:4, 2:5] = True
    (goal,) = make_goals(["a cup"])
    hdr = m.header(10**18, "camera")
    seg = ground_truth_segmentation(goal, mask, hdr)
    seg.latency_s = 0.25
    array = m.msg_class(m.SEGMENTATION_ARRAY_TYPE)(header=hdr, segmentations=[seg])
    answers, latency = _answers(array)
    assert list(answers) == ["g0"] and latency == 0.25
    assert (answers["g0"].mask.unpack() == mask).all() and answers["g0"].score == 1.0


def _stand_in_node(monkeypatch, **clients):
    """A NodeProcess without a process: its services are ``clients``; spinning sleeps."""
    import time

    from text4seg_ros.bag import node_eval
    from text4seg_ros.ros import service_calls

    monkeypatch.setattr(service_calls, "RESEND_S", 0.05)
    node = object.__new__(node_eval.NodeProcess)
    node.proc = type("Running", (), {"poll": lambda self: None})()
    node.spin = time.sleep
    node.log_tail = lambda lines=30: "(log)"
    for name, client in clients.items():
        setattr(node, name, client)
    return node


def test_node_eval_survives_lost_service_responses(monkeypatch) -> None:
    """A just-started node may drop a response (ros2/rmw_fastrtps#467): read-only calls are
    resent; a transition is sent once and its outcome read from the node's state."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState
    from ros_harness import LossyService, state_response
    from std_srvs.srv import Trigger

    get = LossyService(state_response("configuring"), state_response("inactive"))
    change = LossyService()
    node = _stand_in_node(monkeypatch, _change=change, _get=get)
    node.transition(Transition.TRANSITION_CONFIGURE, "configure", 5.0)
    assert change.sent == 1 and get.sent == 2  # sent once; done when the state says so
    clear = LossyService(None, Trigger.Response(success=True))
    node = _stand_in_node(monkeypatch, _clear=clear)
    node.clear_goals(5.0)
    assert clear.sent == 2
    refused = LossyService(ChangeState.Response(success=False))
    node = _stand_in_node(monkeypatch, _change=refused, _get=LossyService())
    with pytest.raises(RuntimeError, match="refused activate"):
        node.transition(Transition.TRANSITION_ACTIVATE, "activate", 5.0)
    stuck = LossyService(*[state_response("unconfigured")] * 100)
    node = _stand_in_node(monkeypatch, _change=LossyService(), _get=stuck)
    with pytest.raises(TimeoutError, match="configure: no reply within 0.3 s"):
        node.transition(Transition.TRANSITION_CONFIGURE, "configure", 0.3)
