"""The node as a robot runs it: `ros2 launch text4seg_ros perception.launch.py` and the ros2 CLI.

Everything here goes through the real ROS 2 Jazzy tools (launch, launch_ros, ros2cli from
../shared/ros2_extra, installed by ``make setup``): ``ros2 launch`` with its arguments
(namespace, image remap, params file, model path, autostart on and off, DDS profile),
``ros2 lifecycle get/set``, ``ros2 topic pub`` of a goal, ``ros2 service call`` and ``ros2 param
set``, against the node as its own process over DDS (this process's domain, loopback only), with
a tiny random model. Two launches (autostart on / off) start together and serve the module's
tests. Waits are bounded; the launches are stopped with SIGINT (what Ctrl-C does), then
SIGTERM, then SIGKILL. Each ros2 CLI call costs about a second of Python start-up, so the
tests make few of them and poll the node through an in-process client instead.

Where ../shared/ros2_extra is absent (a robot has these tools from ROS 2 itself) the tests that
need them skip, saying so.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import yaml

from text4seg_ros.ros.install_layout import install_layout

REPO = Path(__file__).resolve().parents[1]
EXTRA = REPO.parent / "shared" / "ros2_extra"
PROFILE_VARIABLE = "FASTRTPS_DEFAULT_PROFILES_FILE"
GRID = 8


def require_ros2_tools() -> None:
    """Skip where the ROS 2 tools cannot be had; fail where they exist but were not installed."""
    try:
        import launch_ros  # noqa: F401
        import ros2cli  # noqa: F401
    except ImportError:
        if EXTRA.is_dir():
            pytest.fail(f"{EXTRA} exists but launch_ros/ros2cli are not installed: run make setup")
        pytest.skip(
            f"ROS 2 launch/ros2cli are not installed and {EXTRA} is absent (they have no PyPI "
            "wheels; on a robot they come with ROS 2, here make setup installs them from there)"
        )


# --- checks of the shipped files (no ROS 2 tools needed) -------------------------------------
def test_large_frame_profile_is_valid_fast_dds_xml_with_a_large_shm_segment():
    ns = {"p": "http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles"}
    root = ET.parse(REPO / "config" / "fastdds_large_frames.xml").getroot()
    kinds = {
        d.findtext("p:transport_id", namespaces=ns): d
        for d in root.iterfind("p:transport_descriptors/p:transport_descriptor", ns)
    }
    (participant,) = root.iterfind("p:participant", ns)
    assert participant.get("is_default_profile") == "true"
    used = [t.text for t in participant.iterfind("p:rtps/p:userTransports/p:transport_id", ns)]
    assert set(used) == set(kinds)
    assert participant.findtext("p:rtps/p:useBuiltinTransports", namespaces=ns) == "false"
    types = {kinds[t].findtext("p:type", namespaces=ns): kinds[t] for t in used}
    assert set(types) == {"SHM", "UDPv4"}, "UDPv4 stays for discovery and other hosts"
    segment = int(types["SHM"].findtext("p:segment_size", namespaces=ns))
    assert segment > 3840 * 2160 * 3, "one 4K rgb8 frame (the default max_image_pixels) fits"


def test_install_layout_needs_the_console_script(tmp_path):
    with pytest.raises(FileNotFoundError, match="perception_node"):
        install_layout(tmp_path / "prefix", bin_dir=tmp_path / "no_bin")


def test_installed_params_file_lists_every_default():
    pytest.importorskip("rclpy")
    from ament_index_python.packages import get_package_share_directory

    from text4seg_ros.ros.params import DEFAULTS

    share = Path(get_package_share_directory("text4seg_ros"))
    params_file = share / "config" / "perception.yaml"
    assert params_file.read_text() == (REPO / "config" / "perception.yaml").read_text()
    params = yaml.safe_load(params_file.read_text())["/**"]["ros__parameters"]
    assert params == DEFAULTS, "config/perception.yaml must list every parameter's default"
    assert (share / "launch" / "perception.launch.py").is_file()


# --- the real tools -------------------------------------------------------------------------
def ros2(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run ``ros2 ARGS`` on this process's domain; the completed process (text output)."""
    from ros_harness import VENV, ros_env

    return subprocess.run(
        [str(VENV / "bin" / "ros2"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ros_env(),
    )


class Launch:
    """``ros2 launch text4seg_ros perception.launch.py ARGS`` in its own process group."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str]) -> None:
        from ros_harness import VENV

        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115  closed in stop()
        cmd = [str(VENV / "bin" / "ros2"), "launch", "text4seg_ros", "perception.launch.py"]
        self.proc = subprocess.Popen(
            [*cmd, *args], stdout=self._log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )  # fmt: skip

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def node_pid(self) -> int:
        """The node's pid, as ``ros2 launch`` reports it."""
        pattern = r"\[perception_node-\d+\]: process started with pid \[(\d+)\]"
        found = re.search(pattern, self.log())
        assert found, self.log()[-2000:]
        return int(found.group(1))

    def stop(self) -> int | None:
        """SIGINT the launch (it shuts its node down), then SIGTERM, then SIGKILL the group."""
        for sig, wait in ((signal.SIGINT, 30.0), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
            if self.proc.poll() is not None:
                break
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(wait)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                continue
        self._log.close()
        return self.proc.returncode


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


def wait_state(rig: Rig, launch: Launch, fqn: str, ok, timeout: float = 180.0) -> None:
    """Poll the node's state until ``ok(label)``; fail at once when its launch has ended."""
    from ros_harness import wait_for

    def check() -> bool:
        if launch.proc.poll() is not None:
            pytest.fail(
                f"ros2 launch ended (exit {launch.proc.returncode}):\n{launch.log()[-3000:]}"
            )
        return ok(state_of(rig.client, fqn))

    assert wait_for(check, timeout, 0.5), launch.log()[-3000:]


def state_of(client, fqn: str) -> str:
    """The node's lifecycle state label, or "" while its service is not reachable."""
    try:
        return client.state(fqn, timeout=2.0)
    except TimeoutError:
        return ""


class Rig:
    """Two launches on this domain, a client node, the namespaces and topics of the tests.

    ``on``: autostart (default), namespace robot1, camera remapped to /front/image_raw, a
    params file of the test's own. ``off``: autostart:=false, namespace robot2, no DDS profile
    (``dds_profile:=none``).
    """

    CAMERA = "/front/image_raw"
    ON, OFF = "/robot1/perception_node", "/robot2/perception_node"

    def __init__(self, model_dir: Path, tmp: Path) -> None:
        from ros_harness import RosClient, ros_env

        params = tmp / "robot1.yaml"
        params.write_text(
            yaml.safe_dump(
                {"/**": {"ros__parameters": {"grid": GRID, "max_goals": 5, "min_mask_pixels": 2}}}
            )
        )
        env = ros_env(OMP_NUM_THREADS="1")
        env.pop(PROFILE_VARIABLE, None)  # the launch file's default profile applies
        common = [f"model_path:={model_dir}"]
        self.on = Launch(
            [*common, "namespace:=robot1", f"image:={self.CAMERA}", f"params_file:={params}"],
            tmp / "on.log",
            env,
        )
        self.off = Launch(
            [*common, "namespace:=robot2", "autostart:=false", "dds_profile:=none"],
            tmp / "off.log",
            env,
        )
        self.client = RosClient("launch_test_client")

    def close(self) -> None:
        self.client.close()
        for launch in (self.on, self.off):
            launch.stop()


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    require_ros2_tools()
    from text4seg_ros.model.tiny import build_tiny_model

    tmp = tmp_path_factory.mktemp("launch")
    model = build_tiny_model("llava", tmp / "tiny", grid=GRID)
    r = Rig(model, tmp)
    yield r
    r.close()


def test_show_args_lists_the_documented_arguments():
    require_ros2_tools()
    out = ros2("launch", "text4seg_ros", "perception.launch.py", "--show-args")
    assert out.returncode == 0, out.stderr
    names = re.findall(r"^\s+'(\w+)':", out.stdout, flags=re.M)
    assert names == [
        "params_file", "model_path", "image", "namespace", "use_sim_time", "autostart",
        "dds_profile",
    ], out.stdout  # fmt: skip


def test_autostart_brings_the_namespaced_node_to_active_with_the_params_file(rig):
    from rcl_interfaces.srv import GetParameters

    wait_state(rig, rig.on, rig.ON, lambda s: s == "active")
    out = ros2("lifecycle", "get", rig.ON, "--no-daemon", "--spin-time", "5")
    assert out.stdout.strip() == "active [3]", (out.stdout, out.stderr)
    request = GetParameters.Request(names=["grid", "max_goals", "min_mask_pixels", "model_path"])
    values = rig.client.call(GetParameters, f"{rig.ON}/get_parameters", request).values
    assert [v.integer_value for v in values[:3]] == [GRID, 5, 2]  # from the params file
    assert values[3].string_value.endswith("tiny")  # the model_path argument
    # dds_profile: only the node's process gets the package's large-frame profile
    environ = Path(f"/proc/{rig.on.node_pid()}/environ").read_bytes().split(b"\0")
    from ament_index_python.packages import get_package_share_directory

    share = get_package_share_directory("text4seg_ros")
    profile = Path(share, "config", "fastdds_large_frames.xml")
    assert f"{PROFILE_VARIABLE}={profile}".encode() in environ


def test_goal_from_ros2_topic_pub_is_answered_on_the_remapped_camera(rig):
    from rclpy.qos import qos_profile_sensor_data
    from ros_harness import wait_for
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header
    from text4seg_msgs.msg import SegmentationArray

    from text4seg_ros.ros.image import array_to_image

    wait_state(rig, rig.on, rig.ON, lambda s: s == "active")
    segs = rig.client.collect(SegmentationArray, "/robot1/segmentations")
    camera = rig.client.node.create_publisher(Image, rig.CAMERA, qos_profile_sensor_data)
    goal = "{id: cup, text: 'the cup', standing: true}"
    out = ros2(
        "topic", "pub", "--once", "-w", "1", "--max-wait-time-secs", "30",
        "/robot1/goals", "text4seg_msgs/msg/Goal", goal,
    )  # fmt: skip
    assert out.returncode == 0 and "publishing #1" in out.stdout, (out.stdout, out.stderr)
    rgb = np.full((24, 32, 3), 50, np.uint8)
    rgb[4:12, 6:20] = (200, 30, 30)

    def answered() -> bool:
        header = Header(frame_id="front_optical")
        camera.publish(array_to_image(rgb, "rgb8", header))
        return any(m.segmentations and m.segmentations[0].goal_id == "cup" for m in list(segs))

    assert wait_for(answered, 60, 0.5), rig.on.log()[-3000:]
    seg = next(m for m in list(segs) if m.segmentations).segmentations[0]
    assert seg.header.frame_id == "front_optical" and seg.goal_text == "the cup"
    assert (seg.mask.height, seg.mask.width, seg.mask.encoding) == (24, 32, "mono8")
    body = seg.descriptor.removeprefix("<seg>").removesuffix("</seg>").strip("\n")
    assert len(body.split("\n")) == GRID  # G rows, from the grammar
    # the goal is listed by the node's service
    out = ros2("service", "call", f"{rig.ON}/list_goals", "text4seg_msgs/srv/ListGoals")
    assert out.returncode == 0 and "id='cup'" in out.stdout and "standing=True" in out.stdout


def test_ros2_param_set_and_lifecycle_set_deactivate(rig):
    from rcl_interfaces.srv import GetParameters

    wait_state(rig, rig.on, rig.ON, lambda s: s == "active")
    # --spin-time: without the daemon, ros2 param discovers the node itself (1 s by default is
    # too short on a loaded machine: "Node not found")
    param_set = ("param", "set", "--no-daemon", "--spin-time", "5", rig.ON, "max_goals")
    out = ros2(*param_set, "3")
    assert out.stdout.strip() == "Set parameter successful", (out.stdout, out.stderr)
    out = ros2(*param_set, "0")  # below its range
    assert "Setting parameter failed" in out.stderr and "out of range" in out.stderr, out
    request = GetParameters.Request(names=["max_goals"])
    (value,) = rig.client.call(GetParameters, f"{rig.ON}/get_parameters", request).values
    assert value.integer_value == 3
    out = ros2("lifecycle", "set", "--no-daemon", "--spin-time", "5", rig.ON, "deactivate")
    assert out.stdout.strip() == "Transitioning successful", (out.stdout, out.stderr)
    assert state_of(rig.client, rig.ON) == "inactive"


def test_autostart_off_waits_unconfigured_for_ros2_lifecycle_set(rig):

    wait_state(rig, rig.off, rig.OFF, lambda s: s != "")
    time.sleep(1.0)  # an autostart would have configured it by now
    assert state_of(rig.client, rig.OFF) == "unconfigured"
    environ = Path(f"/proc/{rig.off.node_pid()}/environ").read_bytes().split(b"\0")
    assert not any(e.startswith(PROFILE_VARIABLE.encode()) for e in environ)  # :=none
    script = " && ".join(
        f"ros2 lifecycle set --no-daemon --spin-time 5 {rig.OFF} {t}"
        for t in ("configure", "activate")
    )  # one shell: both transitions in order, the second only if the first succeeded
    from ros_harness import VENV, ros_env

    env = ros_env()
    env["PATH"] = f"{VENV / 'bin'}:{env.get('PATH', '')}"
    out = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=240, env=env
    )
    assert out.stdout.split() == ["Transitioning", "successful"] * 2, (out.stdout, out.stderr)
    assert state_of(rig.client, rig.OFF) == "active"


def test_sigint_to_ros2_launch_ends_the_node_process(rig):
    pids = [rig.on.node_pid(), rig.off.node_pid()]
    assert all(alive(p) for p in pids)
    for launch in (rig.on, rig.off):
        os.killpg(launch.proc.pid, signal.SIGINT)
    for launch in (rig.on, rig.off):
        try:
            launch.proc.wait(30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"ros2 launch did not end 30 s after SIGINT:\n{launch.log()[-2000:]}")
    from ros_harness import wait_for

    assert wait_for(lambda: not any(alive(p) for p in pids), 10), "a node outlived its launch"
