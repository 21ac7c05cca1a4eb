"""Test harness for real DDS: an isolated ROS context, a client node, the node as a subprocess.

Each test process uses its own ``ROS_DOMAIN_ID`` (from its pid) with
``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``, and each test its own namespace, so parallel test
runs on this host do not see each other's topics. Subprocesses are terminated, waited for with a
timeout, then killed.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import rclpy
from helpers import DOMAIN_ID
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.context import Context
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node

from text4seg_ros.ros.service_calls import call_resending

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv"
PARAMS_FILE = REPO / "config" / "perception.yaml"

TRANSITIONS = {
    "configure": Transition.TRANSITION_CONFIGURE,
    "activate": Transition.TRANSITION_ACTIVATE,
    "deactivate": Transition.TRANSITION_DEACTIVATE,
    "cleanup": Transition.TRANSITION_CLEANUP,
    "shutdown": Transition.TRANSITION_UNCONFIGURED_SHUTDOWN,
}


def ros_env(**extra: str) -> dict[str, str]:
    """Environment for a node subprocess on this process's domain, DDS on loopback only."""
    env = dict(os.environ)
    env.update(
        ROS_DOMAIN_ID=str(DOMAIN_ID),
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        AMENT_PREFIX_PATH=str(VENV),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def node_executable() -> Path:
    """``perception_node`` as launch_ros finds it (``<prefix>/lib/text4seg_ros/``), else bin/."""
    for path in (
        VENV / "lib" / "text4seg_ros" / "perception_node",
        VENV / "bin" / "perception_node",
    ):
        if path.exists():
            return path
    raise FileNotFoundError("perception_node is not installed: run `make setup`")


def node_command(
    namespace: str, params: dict[str, object], remaps: dict[str, str], name: str = "perception_node"
) -> list[str]:
    """The command line launch/perception.launch.py produces for these arguments."""
    cmd = [
        str(node_executable()),
        "--ros-args",
        "-r",
        f"__node:={name}",
        "-r",
        f"__ns:={namespace}",
    ]
    cmd += ["--params-file", str(PARAMS_FILE)]
    for key, value in params.items():
        cmd += ["-p", f"{key}:={value}"]
    for src, dst in remaps.items():
        cmd += ["-r", f"{src}:={dst}"]
    return cmd


class NodeProcess:
    """The node as a subprocess, its output in ``log_path``."""

    def __init__(self, cmd: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115  closed in stop()
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env or ros_env()
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, wait ``timeout`` s, then SIGKILL; return the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self._log.close()
        return self.proc.returncode


class RosClient:
    """A client node in its own context, spun by a background executor thread."""

    def __init__(self, name: str = "test_client") -> None:
        self.context = Context()
        rclpy.init(context=self.context, domain_id=DOMAIN_ID)
        self.node = Node(name, context=self.context)
        self.executor = MultiThreadedExecutor(num_threads=2, context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()
        self._lock = threading.Lock()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # noqa: BLE001  the context was shut down under the executor
            pass

    def collect(self, msg_type, topic: str, qos=10) -> list:
        """Subscribe ``topic``; return the list that received messages are appended to."""
        received: list = []

        def on_msg(msg) -> None:
            with self._lock:
                received.append(msg)

        self.node.create_subscription(msg_type, topic, on_msg, qos)
        return received

    def call(self, srv_type, name: str, request, timeout: float = 20.0, resend_s: float = 0.0):
        """Call a service and return the response; TimeoutError if it does not answer.

        ``resend_s`` > 0 (read-only requests only): send the request again every ``resend_s``
        seconds until one answers. A server may drop the response to a client whose response
        reader it has not discovered yet (Fast DDS waits 100 ms for it, ros2/rmw_fastrtps#467),
        which happens now and then to the first call on a node process that just started.
        """
        client = self.node.create_client(srv_type, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise TimeoutError(f"service {name} not available after {timeout} s")
            response = call_resending(client, request, timeout, time.sleep, resend_s)
            if response is None:
                raise TimeoutError(f"service {name} did not answer within {timeout} s")
            return response
        finally:
            self.node.destroy_client(client)

    def transition(self, node_fqn: str, transition: str, timeout: float = 120.0) -> bool:
        """Drive a lifecycle transition through ``<node>/change_state``; its success flag."""
        req = ChangeState.Request()
        req.transition.id = TRANSITIONS[transition]
        return bool(self.call(ChangeState, f"{node_fqn}/change_state", req, timeout).success)

    def state(self, node_fqn: str, timeout: float = 20.0) -> str:
        """The node's lifecycle state label (``unconfigured``, ``inactive``, ``active``...)."""
        return self.call(
            GetState, f"{node_fqn}/get_state", GetState.Request(), timeout, resend_s=5.0
        ).current_state.label

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        if self.context.ok():
            rclpy.shutdown(context=self.context)
        self._thread.join(5.0)


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` s passed; its last value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def diag_values(msg) -> dict[str, str]:
    """The key/value pairs of the first status of a DiagnosticArray."""
    return {kv.key: kv.value for kv in msg.status[0].values} if msg.status else {}


class LossyService:
    """A service client stand-in: request ``i`` is answered at once with ``answers[i]``; one
    past the list, or whose answer is None, is never answered (a lost response)."""

    srv_name = "/stand_in"

    def __init__(self, *answers) -> None:
        self.answers, self.sent = answers, 0

    def service_is_ready(self) -> bool:
        return True

    def call_async(self, request):
        from rclpy.task import Future

        future, i = Future(), self.sent
        self.sent += 1
        if i < len(self.answers) and self.answers[i] is not None:
            future.set_result(self.answers[i])
        return future


def state_response(label: str) -> GetState.Response:
    """A ``GetState`` response saying the node is in ``label``."""
    response = GetState.Response()
    response.current_state.label = label
    return response
