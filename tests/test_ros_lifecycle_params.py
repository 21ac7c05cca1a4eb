"""No lifecycle request and no parameter value a client can send ends the node (issue 9, 1 + 2).

perception_node runs as its own process (as launch starts it) with the real Segmenter and a tiny
model, over real DDS:

* every ``lifecycle_msgs/srv/ChangeState`` transition id (0..255, the whole ``uint8`` range)
  and some labels, in every primary state: valid ones transition, invalid ones are answered
  ``success: false`` with a log line, and the process lives (rclpy#1209 raised out of the
  service callback and ended it);
* integers for float parameters in a params file, with ``-p`` and through the set_parameters
  service (``ros2 param set`` sends an INTEGER for ``0``) are accepted as floats;
* an override of the wrong kind or out of range makes configure fail with a message naming it
  (the process lives) until a valid value is set; non-live parameters set while configured
  take effect at the next configure, which the node logs when they are set.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("transformers")

from lifecycle_msgs.srv import ChangeState  # noqa: E402
from rcl_interfaces.msg import Parameter as ParameterMsg  # noqa: E402
from rcl_interfaces.msg import ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import GetParameters, SetParameters  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from ros_harness import NodeProcess, RosClient, node_command, wait_for  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from text4seg_msgs.msg import Goal, SegmentationArray  # noqa: E402
from text4seg_msgs.srv import ListGoals  # noqa: E402

from text4seg_ros.descriptors import decode_mask  # noqa: E402
from text4seg_ros.refine import GrabCutRefiner  # noqa: E402
from text4seg_ros.ros.image import array_to_image, image_to_array  # noqa: E402

pytestmark = pytest.mark.ros
GRID = 16
# Transitions valid from each primary state and the state they lead to (lifecycle_msgs ids).
VALID = {
    "unconfigured": {1: "inactive", 5: "finalized"},
    "inactive": {2: "unconfigured", 3: "active", 6: "finalized"},
    "active": {4: "inactive", 7: "finalized"},
    "finalized": {},
}
# How to get back to a state after a valid transition left it: (from, to) -> transition ids.
BACK = {
    ("inactive", "unconfigured"): [2],
    ("active", "unconfigured"): [4, 2],
    ("unconfigured", "inactive"): [1],
    ("active", "inactive"): [4],
    ("unconfigured", "active"): [1, 3],
    ("inactive", "active"): [3],
}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from text4seg_ros.model.tiny import build_tiny_model

    return build_tiny_model("llava", tmp_path_factory.mktemp("tiny") / "llava", grid=GRID)


def params_file(tmp_path, name: str, values: dict) -> str:
    """A ROS 2 params file for any node name with ``values`` written as YAML literals."""
    lines = ["/**:", "  ros__parameters:"]
    lines += [f"    {k}: {v}" for k, v in values.items()]
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


class Lifecycle:
    """One persistent change_state client (a fresh client per call would cost discovery)."""

    def __init__(self, client: RosClient, fqn: str) -> None:
        self.client, self.fqn = client, fqn
        self.change = client.node.create_client(ChangeState, f"{fqn}/change_state")
        assert self.change.wait_for_service(timeout_sec=60), "change_state never appeared"

    def request(self, tid: int = 0, label: str = "", timeout: float = 120.0) -> bool:
        req = ChangeState.Request()
        req.transition.id, req.transition.label = tid, label
        future = self.change.call_async(req)
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        assert done.wait(timeout), f"change_state {tid}/{label!r} was not answered"
        return bool(future.result().success)


def start(tmp_path, ns: str, model_dir, extra_files=(), params=None, base_file=True):
    """The node with ``-p model_path`` and ``params`` (``-p`` wins over every params file);
    ``base_file=False`` leaves config/perception.yaml out."""
    cmd = node_command(
        ns, {"model_path": model_dir, **({"grid": GRID} if params is None else params)}, {}
    )
    if not base_file:
        i = cmd.index("--params-file")
        del cmd[i : i + 2]
    for f in extra_files:
        cmd += ["--params-file", f]
    node = NodeProcess(cmd, tmp_path / f"{ns.strip('/')}.log")
    client = RosClient(f"client_{ns.strip('/')}")
    return node, client, f"{ns}/perception_node"


def test_every_transition_id_in_every_state_is_answered_and_the_node_survives(tiny_model, tmp_path):
    node, client, fqn = start(tmp_path, "/lc_all", tiny_model)
    try:
        lc = Lifecycle(client, fqn)
        state = client.state(fqn, timeout=60)
        assert state == "unconfigured"
        refused = 0
        for target in ("unconfigured", "inactive", "active"):
            for tid in BACK.get((state, target), []):
                assert lc.request(tid), node.log()[-3000:]
            state = target
            for tid in range(256):
                expect = VALID[state].get(tid)
                if expect == "finalized":
                    continue  # shutdown is terminal: tried last, below
                ok = lc.request(tid)
                assert node.alive(), f"died on transition {tid} in {state}: {node.log()[-3000:]}"
                assert ok == (expect is not None), (state, tid)
                if expect is None:
                    refused += 1
                    continue
                assert client.state(fqn) == expect
                for back in BACK[(expect, state)]:
                    assert lc.request(back)
                assert client.state(fqn) == state
            # labels: an unknown one and a known one that is not valid here
            assert not lc.request(label="bogus")
            wrong = "activate" if state == "active" else "deactivate"
            assert not lc.request(label=wrong)
            assert client.state(fqn) == state and node.alive()
        assert lc.request(label="deactivate")  # a valid label still works
        assert lc.request(3)
        assert lc.request(7)  # active shutdown
        assert client.state(fqn) == "finalized"
        for tid in range(256):
            assert not lc.request(tid), tid
        assert not lc.request(label="configure")
        assert node.alive() and client.state(fqn) == "finalized"
        log = node.log()
        assert "change_state refused: transition id 1 is not valid in state 'active'" in log
        assert "change_state refused: transition id 255 is not valid in state 'finalized'" in log
        assert log.count("change_state refused") >= refused + 256
        assert "Traceback" not in log and "RCLError" not in log
    finally:
        client.close()
        node.stop()


def _param(client, fqn, names):
    got = client.call(GetParameters, f"{fqn}/get_parameters", GetParameters.Request(names=names))
    return got.values


def _set(client, fqn, name, value) -> tuple[bool, str]:
    if isinstance(value, bool):
        v = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value)
    elif isinstance(value, int):
        v = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)
    elif isinstance(value, float):
        v = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
    else:
        v = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
    req = SetParameters.Request(parameters=[ParameterMsg(name=name, value=v)])
    (res,) = client.call(SetParameters, f"{fqn}/set_parameters", req).results
    return res.successful, res.reason


def test_integers_for_floats_from_file_command_line_and_param_set(tiny_model, tmp_path):
    ints = params_file(tmp_path, "ints.yaml", {"score_threshold": 0, "diagnostics_period_s": 1})
    node, client, fqn = start(
        tmp_path, "/p_ints", tiny_model, [ints], params={"grid": GRID, "image_stall_warn_s": 3}
    )
    try:
        assert client.state(fqn, timeout=60) == "unconfigured", node.log()[-3000:]
        names = ["score_threshold", "diagnostics_period_s", "image_stall_warn_s"]
        values = _param(client, fqn, names)
        assert [v.type for v in values] == [ParameterType.PARAMETER_DOUBLE] * 3
        assert [v.double_value for v in values] == [0.0, 1.0, 3.0]
        assert client.transition(fqn, "configure"), node.log()[-3000:]
        # `ros2 param set <node> score_threshold 1` sends an INTEGER
        assert _set(client, fqn, "score_threshold", 1) == (True, "")
        (v,) = _param(client, fqn, ["score_threshold"])
        assert (v.type, v.double_value) == (ParameterType.PARAMETER_DOUBLE, 1.0)
        ok, reason = _set(client, fqn, "score_threshold", "high")
        assert not ok and reason
        ok, reason = _set(client, fqn, "score_threshold", 5)
        assert not ok and "score_threshold" in reason
        assert node.alive()
    finally:
        client.close()
        node.stop()


def _rgb() -> np.ndarray:
    rgb = np.full((48, 64, 3), 40, np.uint8)
    rgb[10:30, 8:40] = (220, 30, 30)
    return rgb


def _frame(seq: int) -> Image:
    header = Header(frame_id="cam")
    header.stamp.sec = seq
    return array_to_image(_rgb(), "rgb8", header)


def test_bad_overrides_fail_configure_not_the_process_and_non_live_apply_next_configure(
    tiny_model, tmp_path
):
    # rcl keeps the first value when a later file or -p changes a parameter's type, so this
    # node gets its parameters from one file only
    bad = params_file(tmp_path, "bad.yaml", {"grid": '"sixteen"', "score_threshold": 7})
    node, client, fqn = start(tmp_path, "/p_bad", tiny_model, [bad], {}, base_file=False)
    try:
        assert client.state(fqn, timeout=60) == "unconfigured", node.log()[-3000:]
        assert not client.transition(fqn, "configure")
        assert node.alive()
        log = node.log()
        assert "configure failed" in log and "grid must be int, got 'sixteen'" in log
        assert "score_threshold=7.0 outside [0.0, 1.0]" in log
        assert _set(client, fqn, "grid", GRID)[0]
        assert not client.transition(fqn, "configure"), "score_threshold is still wrong"
        assert _set(client, fqn, "score_threshold", 0)[0]
        assert client.transition(fqn, "configure"), node.log()[-3000:]
        # a non-live parameter set while configured: logged, applied at the next configure
        assert _set(client, fqn, "grid", 8)[0]
        assert _set(client, fqn, "refiner", "grabcut")[0]  # the tiny model names none
        assert wait_for(lambda: "takes effect at the next configure" in node.log(), 10)
        segs = client.collect(SegmentationArray, "/p_bad/segmentations")
        goals = client.node.create_publisher(Goal, "/p_bad/goals", 10)
        camera = client.node.create_publisher(Image, "/p_bad/image", qos_profile_sensor_data)

        def n_goals() -> int:
            return len(client.call(ListGoals, f"{fqn}/list_goals", ListGoals.Request()).goals)

        def answer(seq: int):
            assert client.transition(fqn, "activate")
            assert wait_for(lambda: goals.get_subscription_count() == 1, 10)
            assert wait_for(lambda: camera.get_subscription_count() == 1, 10)
            n = len(segs)
            goals.publish(Goal(id=f"m{seq}", text="red mug"))
            assert wait_for(lambda: n_goals() == 1, 10)
            camera.publish(_frame(seq))
            assert wait_for(lambda: len(segs) > n, 30), node.log()[-3000:]
            assert client.transition(fqn, "deactivate")
            return segs[-1].segmentations[0]

        assert f"(grid {GRID}, refiner none)" in node.log()  # auto: the tiny model names none
        seg = answer(1)  # still the configured grid
        assert np.array_equal(
            image_to_array(seg.mask) == 255, decode_mask(seg.descriptor, "red mug", (48, 64), GRID)
        )
        assert client.transition(fqn, "cleanup") and client.transition(fqn, "configure")
        assert "(grid 8, refiner GrabCutRefiner)" in node.log()
        seg = answer(2)  # grid 8 and GrabCut, for that grid, on the decoded descriptor
        coarse = decode_mask(seg.descriptor, "red mug", (48, 64), 8)
        assert np.array_equal(
            image_to_array(seg.mask) == 255, GrabCutRefiner(8).refine(_rgb(), coarse)
        )
        assert node.alive()
    finally:
        client.close()
        node.stop()
