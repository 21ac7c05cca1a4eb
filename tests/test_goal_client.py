"""text4seg-goal: argument checks, output format, and the real node process over DDS.

The node is started as the launch file starts it (tests/ros_harness.py) with the real Segmenter
and a tiny random LLaVA; the client runs as its console script in a subprocess, on this test
process's ROS domain. A camera thread publishes frames while the client waits.
"""

from __future__ import annotations

import re
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

pytest.importorskip("rclpy")
pytest.importorskip("text4seg_msgs")

from ros_harness import (  # noqa: E402
    VENV,
    NodeProcess,
    RosClient,
    node_command,
    ros_env,
    wait_for,
)
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from text4seg_msgs.msg import Segmentation, SegmentationArray  # noqa: E402
from text4seg_msgs.srv import ListGoals  # noqa: E402

from text4seg_ros.ros.goal_client import build_parser, describe, main, save_mask, topic  # noqa: E402
from text4seg_ros.ros.image import array_to_image, image_to_array  # noqa: E402

GRID = 8
NS = "/goal_client_t"
FQN = f"{NS}/perception_node"
LINE = re.compile(
    r"^frame (\d+)\.(\d{9}) cam  (\S+) \((\w+)\) '(.*)'  box (none|\[[\d. ]+\])  pixels (\d+)  "
    r"score ([\d.]+)  latency ([\d.]+) ms$"
)


def _seg(mask: np.ndarray, box=(1, 2, 4, 5), instance: int = 0) -> Segmentation:
    header = Header(frame_id="cam")
    header.stamp.sec, header.stamp.nanosec = 12, 5
    seg = Segmentation(header=header, goal_id="g:1", goal_text="cup", task="res", label="cup")
    seg.instance = instance
    seg.mask = array_to_image(np.where(mask, 255, 0).astype(np.uint8), "mono8", header)
    seg.empty = not mask.any()
    seg.box = [float(v) for v in box]
    seg.score, seg.latency_s = 0.5, 0.0123
    return seg


def test_parser_and_topics() -> None:
    args = build_parser().parse_args(["the red mug"])
    assert (args.task, args.standing, args.frames, args.timeout, args.namespace) == (
        "res", False, 1, 30.0, ""
    )  # fmt: skip
    assert topic("", "goals") == "/goals" and topic("arm_camera/", "goals") == "/arm_camera/goals"
    assert topic("/a/b", "segmentations") == "/a/b/segmentations"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["a|b"], "must not contain"),
        (["", "--task", "open_vocab"], "classes"),
        (["cup", "--classes", "a,b"], "only allowed for open_vocab"),
        (["others"], "background"),
    ],
)
def test_bad_goals_exit_2_before_anything_is_sent(argv, message, capsys) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_bad_numbers_are_argparse_errors() -> None:
    for argv in (["cup", "--frames", "-1"], ["cup", "--timeout", "0"], ["cup", "--task", "x"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2


def test_describe_and_save_mask(tmp_path: Path) -> None:
    mask = np.zeros((6, 7), bool)
    mask[2:5, 1:4] = True
    line = describe(_seg(mask))
    m = LINE.match(line)
    assert m, line
    assert m.group(1, 2, 3, 6, 7, 8, 9) == (
        "12", "000000005", "g:1", "[1 2 4 5]", "9", "0.500", "12.3"
    )  # fmt: skip
    assert " box none  pixels 0 " in describe(_seg(np.zeros((6, 7), bool)))
    assert " g:1/2 (res)" in describe(_seg(mask, instance=2))
    failed = _seg(np.zeros((6, 7), bool))
    failed.error = "decoding failed: boom"
    assert describe(failed).endswith("'cup'  error: decoding failed: boom  latency 12.3 ms")
    path = save_mask(_seg(mask, instance=2), tmp_path / "m")
    assert path.name == "12_000000005_g-1_2.png"
    assert np.array_equal(np.asarray(PILImage.open(path)) == 255, mask)


@pytest.mark.ros
def test_no_node_is_a_clear_error_with_status_1(ros_domain, capsys) -> None:
    assert main(["cup", "--namespace", "/nobody_here", "--timeout", "1"]) == 1
    err = capsys.readouterr().err
    assert "no perception node on /nobody_here/goals" in err and "--namespace" in err


# -- against the real node process ---------------------------------------------------------


@pytest.fixture(scope="module")
def rig(tiny_model_factory, tmp_path_factory):
    model = tiny_model_factory("llava", grid=GRID)
    params = {"model_path": model, "grid": GRID, "image_qos_reliability": "reliable"}
    log = tmp_path_factory.mktemp("log") / "node.log"
    node = NodeProcess(node_command(NS, params, {}), log)
    client = RosClient("goal_client_test")
    segs = client.collect(SegmentationArray, f"{NS}/segmentations")
    camera = client.node.create_publisher(Image, f"{NS}/image", 1)
    assert client.state(FQN, timeout=90) == "unconfigured", node.log()[-3000:]
    assert client.transition(FQN, "configure"), node.log()[-3000:]
    yield node, client, segs, camera
    client.close()
    node.stop()


class Camera:
    """Publishes a 48 x 64 frame every ``period`` s until stopped (stamps sec = 100 + n)."""

    def __init__(self, publisher, period: float = 0.3) -> None:
        self.publisher, self.period = publisher, period
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        rgb = np.full((48, 64, 3), 40, np.uint8)
        rgb[10:30, 8:40] = (220, 30, 30)
        while not self.stop.is_set():
            header = Header(frame_id="cam")
            header.stamp.sec = 100 + n
            self.publisher.publish(array_to_image(rgb, "rgb8", header))
            n += 1
            self.stop.wait(self.period)

    def __enter__(self) -> Camera:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(5)


def _goal_cli(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    exe = VENV / "bin" / "text4seg-goal"
    return subprocess.run(
        [str(exe), *argv], env=ros_env(), capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.ros
def test_1_inactive_node_times_out_naming_its_state(rig) -> None:
    node, client, _, _ = rig
    out = _goal_cli("cup", "--namespace", NS, "--timeout", "3")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "sent one-shot goal" in out.stdout
    assert f"{FQN}: inactive" in out.stderr and "must be active" in out.stderr
    assert client.call(Trigger, f"{FQN}/clear_goals", Trigger.Request()).success  # the one-shot


@pytest.mark.ros
def test_2_standing_goal_prints_each_answer_saves_masks_and_cancels(rig, tmp_path) -> None:
    node, client, segs, camera = rig
    assert client.state(FQN) == "inactive"
    with Camera(camera):  # --activate: the client activates the node through change_state
        out = _goal_cli(
            "the red mug", "--namespace", NS, "--standing", "--frames", "2", "--activate",
            "--id", "mug", "--save-masks", str(tmp_path), "--timeout", "60",
        )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr + node.log()[-3000:]
    assert client.state(FQN) == "active"
    lines = out.stdout.splitlines()
    assert lines[0] == f"{FQN} is active"
    assert lines[1] == "sent standing goal 'mug' (res): the red mug"
    answers = [LINE.match(line) for line in lines if line.startswith("frame ")]
    assert len(answers) == 2 and all(answers), lines
    published = {
        (a.header.stamp.sec, a.header.stamp.nanosec): s
        for a in list(segs)
        for s in a.segmentations
        if s.goal_id == "mug"
    }
    for m in answers:
        seg = published[(int(m.group(1)), int(m.group(2)))]  # what the node published
        assert m.group(3, 4, 5) == ("mug", "res", "the red mug")
        mask = image_to_array(seg.mask)
        assert int(m.group(7)) == int(np.count_nonzero(mask))
        box = "none" if seg.empty else "[" + " ".join(f"{v:g}" for v in seg.box) + "]"
        assert m.group(6) == box and float(m.group(8)) == pytest.approx(seg.score, abs=1e-3)
        saved = tmp_path / f"{m.group(1)}_{m.group(2)}_mug.png"
        assert np.array_equal(np.asarray(PILImage.open(saved)), mask)
    # the standing goal was cancelled on exit
    assert wait_for(
        lambda: client.call(ListGoals, f"{FQN}/list_goals", ListGoals.Request()).goals == [], 10
    )


@pytest.mark.ros
def test_activate_without_such_node_is_a_clear_error(ros_domain, capsys) -> None:
    argv = ["cup", "--activate", "--namespace", "/nobody_here", "--timeout", "1"]
    assert main(argv) == 1
    assert "no lifecycle node /nobody_here/perception_node" in capsys.readouterr().err


@pytest.mark.ros
def test_3_one_shot_goal_prints_one_answer(rig) -> None:
    node, client, _, camera = rig
    with Camera(camera):
        out = _goal_cli("cups", "--task", "gres", "--namespace", NS, "--timeout", "60")
    assert out.returncode == 0, out.stdout + out.stderr + node.log()[-3000:]
    answers = [line for line in out.stdout.splitlines() if line.startswith("frame ")]
    assert len(answers) == 1 and LINE.match(answers[0]) and "(gres) 'cups'" in answers[0]
