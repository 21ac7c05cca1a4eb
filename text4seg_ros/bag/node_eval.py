"""Evaluate a bag through the running ``perception_node`` (a subprocess), over real DDS.

Steps, as a robot would run the node:

1. start ``perception_node --ros-args --params-file config/perception.yaml -p model_path:=DIR``
   with a reliable image subscription (see :func:`node_command`; stdout and stderr go to
   ``log_path``);
2. lifecycle ``configure`` (loads the model) and ``activate`` via
   ``/perception_node/change_state``;
3. play the bag's goals and images in log order, as fast as the node acknowledges: before a
   frame's new goals go out, wait until the node's private ``~/list_goals`` service lists
   exactly the goals the bag still holds (the previous frame's one-shot goals retired); before
   each image, until it lists exactly that frame's goals (:class:`GoalSync`); each image then
   waits for the ``segmentations`` message with its header stamp (``ack_timeout`` seconds,
   else dropped). So every frame is answered for exactly the goals the bag gives it;
4. score every frame against the bag's ground truth; stop the node (SIGINT, then SIGKILL).

The eval process joins the ROS domain of its environment (``ROS_DOMAIN_ID``); the node
inherits it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import rclpy
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from std_srvs.srv import Trigger

from ..ros.service_calls import call_resending, transition_once
from . import messages as m
from .play import BagPlayer, ros_message_class
from .reader import EvalBag, PackedMask
from .report import montage_frames
from .scoring import Answer, Scorer, percentiles

NODE_NAME = "perception_node"
# the state a lifecycle node is in once each transition this module sends has succeeded
TRANSITION_GOAL_STATE = {
    Transition.TRANSITION_CONFIGURE: "inactive",
    Transition.TRANSITION_ACTIVATE: "active",
    Transition.TRANSITION_DEACTIVATE: "inactive",
    Transition.TRANSITION_CLEANUP: "unconfigured",
}


def default_params_file() -> Path:
    """``config/perception.yaml`` of the source tree, else of the installed share folder."""
    for path in (
        Path(__file__).resolve().parents[2] / "config" / "perception.yaml",
        Path(sys.prefix) / "share" / "text4seg_ros" / "config" / "perception.yaml",
    ):
        if path.is_file():
            return path
    raise FileNotFoundError("config/perception.yaml not found; pass --params-file")


def check_namespace(namespace: str) -> str:
    """``""`` (root) or an absolute ROS namespace such as ``/eval_1``; ValueError otherwise."""
    if namespace and not re.fullmatch(r"(/[A-Za-z_][A-Za-z0-9_]*)+", namespace):
        raise ValueError(f"namespace must be empty or like /name or /a/b, got {namespace!r}")
    return namespace


def node_command(
    model: str | Path,
    params_file: Path,
    *,
    backbone: str | None,
    device: str,
    grid: int | None = None,
    namespace: str = "",
    engine: str | None = None,
) -> list[str]:
    """The node's command line, exactly as the launch file starts it, plus model parameters
    (and ``-r __ns:=NAMESPACE``: the params file's ``/**`` key applies in any namespace).
    ``grid`` None leaves the params file's value (0: the model's own grid)."""
    exe = Path(sys.executable).parent / "perception_node"
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "text4seg_ros.ros.node"]
    cmd += ["--ros-args", "--params-file", str(params_file), "-p", f"model_path:={model}"]
    cmd += ["-p", f"device:={device}"]
    if grid is not None:
        cmd += ["-p", f"grid:={grid}"]
    # Best effort loses almost every ~1 MB frame between processes here (Fast DDS sends it as
    # UDP fragments; one lost fragment drops the frame, and nothing resends it). The player waits
    # for each answer, so reliable delivery cannot build a backlog: every frame gets evaluated.
    cmd += ["-p", "image_qos_reliability:=reliable"]
    if backbone:
        cmd += ["-p", f"backbone:={backbone}"]
    if engine:
        cmd += ["-p", f"engine:={engine}"]
    if check_namespace(namespace):
        cmd += ["-r", f"__ns:={namespace}"]
    return cmd


class NodeProcess:
    """The node subprocess and the client side of its lifecycle and goal services."""

    def __init__(
        self, cmd: list[str], log_path: Path, ros: Node, spin: Callable, namespace: str = ""
    ) -> None:
        self.cmd, self.log_path, self.ros, self.spin = cmd, log_path, ros, spin
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)
        # Lifecycle and goal services are private to the node: <namespace>/<node>/<service>.
        node = f"{namespace}/{NODE_NAME}"
        self._change = ros.create_client(ChangeState, f"{node}/change_state")
        self._get = ros.create_client(GetState, f"{node}/get_state")
        self._list = ros.create_client(
            ros_message_class("text4seg_msgs/srv/ListGoals"), f"{node}/list_goals"
        )
        self._clear = ros.create_client(Trigger, f"{node}/clear_goals")

    def log_tail(self, lines: int = 30) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def _check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"perception_node exited with status {self.proc.returncode}; log "
                f"{self.log_path}:\n{self.log_tail()}"
            )

    def _wait_ready(self, client: Any, deadline: float, what: str) -> None:
        while not client.service_is_ready():
            self._check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: service {client.srv_name} not available")
            self.spin(0.1)

    def _pause(self, seconds: float) -> None:
        """Spin for up to ``seconds`` (the service calls' pause); RuntimeError if the node died."""
        self._check_alive()
        self.spin(min(seconds, 0.1))

    def _call(self, client: Any, request: Any, timeout_s: float, what: str) -> Any:
        """The response of an idempotent service (list, clear), resent until answered
        (:func:`~text4seg_ros.ros.service_calls.call_resending`); TimeoutError after
        ``timeout_s`` s."""
        deadline = time.monotonic() + timeout_s
        self._wait_ready(client, deadline, what)
        response = call_resending(client, request, deadline - time.monotonic(), self._pause)
        if response is None:
            raise TimeoutError(f"{what}: no reply within {timeout_s} s")
        return response

    def transition(self, transition_id: int, label: str, timeout_s: float) -> None:
        """Drive one lifecycle transition; RuntimeError (with the node's log) on failure.

        The request is sent once (a transition is not idempotent); a lost response is seen as
        the node reaching the transition's goal state
        (:func:`~text4seg_ros.ros.service_calls.transition_once`).
        """
        deadline = time.monotonic() + timeout_s
        self._wait_ready(self._change, deadline, label)
        request = ChangeState.Request()
        request.transition.id = transition_id
        target = TRANSITION_GOAL_STATE[transition_id]
        left = deadline - time.monotonic()
        done = transition_once(self._change, self._get, request, target, left, self._pause)
        if done is None:
            raise TimeoutError(f"{label}: no reply within {timeout_s} s")
        if not done:
            raise RuntimeError(f"perception_node refused {label}; log:\n{self.log_tail()}")

    def clear_goals(self, timeout_s: float = 10.0) -> None:
        """Remove every goal of the node (its private ``~/clear_goals`` service)."""
        self._call(self._clear, Trigger.Request(), timeout_s, "clear_goals")

    def wait_goals(self, ids: set[str], timeout_s: float, exact: bool = False) -> None:
        """Poll ``list_goals`` until every id in ``ids`` is active (``exact``: and no other)."""
        deadline = time.monotonic() + timeout_s
        request = self._list.srv_type.Request()
        while True:
            active = {g.id for g in self._call(self._list, request, timeout_s, "list_goals").goals}
            if active == ids or (not exact and ids <= active):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"node lists goals {sorted(active)[:10]}, expected {sorted(ids)[:10]}; "
                    f"log:\n{self.log_tail()}"
                )
            self.spin(0.005)

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGINT, wait, then SIGKILL (a node under load may ignore SIGINT)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


class GoalSync:
    """The ``before_publish`` hook of the player: keeps the node's goals in step with the bag.

    ``frame_goals[k]``: ids the bag's frame ``k`` answers; ``goals_before[k]``: ids active
    before frame ``k``'s new goal messages (see :class:`~text4seg_ros.bag.reader.EvalBag`).
    When the node does not reach the expected goal set within ``timeout_s`` (say one-shot goals
    it kept because a frame failed as a whole, e.g. cancelled by its ``inference_timeout_s``),
    the run goes on and :attr:`out_of_step` records the frame and the reason; when no goal should
    be left before a frame's new goals, the stale ones are cleared (``~/clear_goals``) so the
    frame still gets its own goals. Goals the node lacks on a frame count as ``missing``.
    """

    def __init__(
        self,
        node: NodeProcess,
        frame_goals: list[set[str]],
        goals_before: list[set[str]],
        timeout_s: float = 15.0,
        retire_timeout_s: float = 5.0,
    ) -> None:
        self.node, self.frame_goals, self.goals_before = node, frame_goals, goals_before
        self.timeout_s, self.retire_timeout_s = timeout_s, retire_timeout_s
        self.frame = 0
        self.out_of_step: list[tuple[int, str]] = []  # (frame index, what the node listed)
        self._goals_started = False

    def _wait(self, ids: set[str], timeout_s: float) -> bool:
        try:
            self.node.wait_goals(ids, timeout_s, exact=True)
            return True
        except TimeoutError as exc:
            self.out_of_step.append((self.frame, str(exc).split("; log:")[0]))
            return False

    def __call__(self, topic: str, log_ns: int) -> None:
        if self.frame >= len(self.frame_goals):
            return  # goals after the last frame: nothing waits for them
        if topic == m.GOALS_TOPIC and not self._goals_started:
            # The previous frame's one-shot goals must be retired before new ones arrive, or
            # they would count against max_goals.
            before = self.goals_before[self.frame]
            if not self._wait(before, self.retire_timeout_s) and not before:
                self.node.clear_goals()
            self._goals_started = True
        elif topic == m.IMAGE_TOPIC:
            self._wait(self.frame_goals[self.frame], self.timeout_s)
            self.frame += 1
            self._goals_started = False


def _answers(array: Any) -> tuple[dict[str, Answer], float]:
    """Goal id -> answer (the whole goal, ``instance == 0``) and the frame's node latency, from a
    decoded ``SegmentationArray`` (the player already deserialized it).

    The masks are kept bit-packed (:class:`PackedMask`) until the frame is scored, so a long bag
    does not hold every full-size mask in memory; :func:`_unpacked` restores them.
    """
    answers, latency = {}, 0.0
    for seg in array.segmentations:
        latency = max(latency, float(seg.latency_s))
        if seg.instance == 0:
            # open_vocab: pixel values are class indices (kept); else 255 = target
            labels = m.image_to_labels(seg.mask) if str(seg.task) == "open_vocab" else None
            answers[str(seg.goal_id)] = Answer(
                PackedMask.pack(m.image_to_mask(seg.mask)), float(seg.score),
                int(seg.model_steps), int(seg.repairs), str(seg.descriptor), labels,
                str(getattr(seg, "error", "")),
            )  # fmt: skip
    return answers, latency


def _unpacked(answers: dict[str, Answer] | None) -> dict[str, Answer] | None:
    if answers is None:
        return None
    return {gid: dataclasses.replace(a, mask=a.mask.unpack()) for gid, a in answers.items()}


def evaluate_through_node(
    bag: EvalBag,
    model: str | Path,
    *,
    params_file: Path | None = None,
    backbone: str | None = None,
    device: str = "cpu",
    grid: int | None = None,
    engine: str | None = None,
    ack_timeout: float = 60.0,
    startup_timeout: float = 300.0,
    log_path: Path | None = None,
    namespace: str = "",
    montage: int = 8,
    progress: bool = True,
) -> tuple[Scorer, dict]:
    """Play ``bag`` to a fresh ``perception_node`` and score its answers (see module doc).

    Returns the scorer and extra report fields (``roundtrip_s`` percentiles, ``node_command``,
    ``node_log``, ``play_wall_s``). ``namespace`` (e.g. ``/eval_1``) puts the node and its
    topics there, apart from other nodes on the domain. Raises RuntimeError/TimeoutError when
    the node does not start, configure or activate (with the tail of its log).
    """
    if not bag.goals:
        raise ValueError(f"bag {bag.path} has no goals: record it with --goal TEXT")
    cmd = node_command(model, params_file or default_params_file(), backbone=backbone,
                       device=device, grid=grid, namespace=namespace, engine=engine)  # fmt: skip
    ns = {t: namespace + t for t in (m.GOALS_TOPIC, m.IMAGE_TOPIC, m.SEGMENTATIONS_TOPIC)}
    log_path = log_path or Path(f"/tmp/text4seg_bag_node_{os.getpid()}.log")
    context = Context()
    rclpy.init(context=context)
    ros = rclpy.create_node("text4seg_bag_eval", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(ros)

    def spin(timeout_s: float) -> None:
        executor.spin_once(timeout_sec=timeout_s)

    node = NodeProcess(cmd, log_path, ros, spin, namespace)
    collected: dict[int, tuple[dict[str, Answer], float]] = {}
    try:
        node.transition(Transition.TRANSITION_CONFIGURE, "configure", startup_timeout)
        node.transition(Transition.TRANSITION_ACTIVATE, "activate", 60.0)
        player = BagPlayer(ros, bag.path, topics=[m.GOALS_TOPIC, m.IMAGE_TOPIC], remap=ns)
        try:
            missing = player.wait_for_subscribers(10.0)
            if missing:
                raise TimeoutError(f"perception_node did not subscribe {missing}")
            player.subscribe_acks(ns[m.SEGMENTATIONS_TOPIC])
            sync = GoalSync(
                node,
                [{g.id for g in goals} for goals in bag.frame_goals],
                bag.goals_before,
            )
            stats = player.play(
                rate=None, ack_timeout=ack_timeout, spin=spin, progress=progress,
                on_ack=lambda stamp, msg, _rt: collected.__setitem__(stamp, _answers(msg)),
                before_publish=sync,
            )  # fmt: skip
        finally:
            player.close()
    finally:
        node.stop()
        executor.shutdown()
        ros.destroy_node()
        rclpy.try_shutdown(context=context)

    scorer = Scorer(bag.goals, montage_frames(bag.frame_count, montage))
    for frame in bag.frames():
        answers, latency = collected.pop(frame.stamp_ns, (None, None))
        # A goal the node did not answer on an acknowledged frame is "missing", not dropped.
        scorer.add_frame(frame, _unpacked(answers), latency)
    extra = {
        "roundtrip_s": percentiles(stats.roundtrip_s),
        "play_wall_s": stats.wall_s,
        "node_command": cmd,
        "node_log": str(log_path),
    }
    if sync.out_of_step:
        frames = sorted({k for k, _ in sync.out_of_step})
        extra["notes"] = [
            f"the node's goals were out of step with the bag at {len(frames)} frames "
            f"(first {frames[:5]}): {sync.out_of_step[0][1]}"
        ]
    return scorer, extra
