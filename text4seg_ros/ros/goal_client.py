"""``text4seg-goal``: send one goal to a running perception node and print its answers.

The first thing to try after ``ros2 launch text4seg_ros perception.launch.py``::

    text4seg-goal "the red mug"                              # one-shot: the next frame's answer
    text4seg-goal "the red mug" --standing --frames 10       # ten frames, then cancel the goal
    text4seg-goal "cups" --task gres --namespace /arm_camera --save-masks masks/
    text4seg-goal "the red mug" --activate   # a node started without autostart: activate it

It publishes a ``text4seg_msgs/Goal`` on ``<namespace>/goals`` and prints, for every
``SegmentationArray`` on ``<namespace>/segmentations`` that answers it, one line per answer:
the frame stamp, the box (pixel edges ``x1 y1 x2 y2``, ``x2``/``y2`` exclusive), the mask's
pixel count, the score and the node's latency (frame received to result ready), or the error
of a goal that failed on that frame. A standing
goal is cancelled on exit (``--keep`` leaves it). It joins the ROS domain of the environment
(``ROS_DOMAIN_ID``). Lifecycle ``get_state`` requests are resent until answered and each
transition is sent once (:mod:`text4seg_ros.ros.service_calls`).

Exit status: 0 when every expected answer arrived; 1 when no node listens, or an answer did
not arrive in time (the message says what the node's lifecycle state was); 2 on bad arguments
(the goal is checked with the node's own rules before anything is sent).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..prompts import Task
from .goals import GoalError, validate_goal
from .service_calls import call_resending, transition_once

PROG = "text4seg-goal"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``text4seg-goal``."""
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Send a language goal to a running perception_node and print its answers "
        "(box, pixels, score, latency per frame).",
    )
    p.add_argument("text", nargs="?", default="", help='the goal in words, e.g. "the red mug"')
    p.add_argument(
        "--task",
        default="res",
        choices=[t.value for t in Task],
        help="res (one target, default), gres (zero or more), rec (box), open_vocab "
        "(label map over --classes), instances (one answer per instance), reason",
    )
    p.add_argument("--classes", default="", help="open_vocab: comma-separated class names")
    p.add_argument("--id", default="", help="goal id (default: goal_<pid>)")
    p.add_argument(
        "--standing",
        action="store_true",
        help="answered on every frame until cancelled (default: one-shot, the next frame only)",
    )
    p.add_argument(
        "--frames",
        type=int,
        default=1,
        help="answers to print before exiting (standing goals; 0: until Ctrl-C). Default 1",
    )
    p.add_argument(
        "--namespace", default="", help="the node's namespace, e.g. /arm_camera (default: none)"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds to wait for the node to be discovered, and then for each answer (30)",
    )
    p.add_argument("--save-masks", type=Path, default=None, help="write each mask as PNG here")
    p.add_argument(
        "--activate",
        action="store_true",
        help="first bring the node to active through its lifecycle services (configure, "
        "activate), for a node started without autostart or ros2 lifecycle",
    )
    p.add_argument(
        "--node", default="perception_node", help="the node's name, for --activate (default: "
        "perception_node)",
    )  # fmt: skip
    p.add_argument("--keep", action="store_true", help="do not cancel a standing goal on exit")
    return p


def topic(namespace: str, name: str) -> str:
    """``<namespace>/<name>`` as an absolute topic name."""
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    return f"{ns}/{name}"


def mask_pixels(seg: Any) -> np.ndarray:
    """The ``(H, W)`` uint8 mask of a ``Segmentation`` (mono8, row padding removed)."""
    from .image import image_to_array

    return image_to_array(seg.mask)


def describe(seg: Any) -> str:
    """One line for one answer: stamp, goal, box, pixels, score, latency (or the goal's error)."""
    stamp = f"{seg.header.stamp.sec}.{seg.header.stamp.nanosec:09d}"
    what = seg.goal_id if seg.instance == 0 else f"{seg.goal_id}/{seg.instance}"
    head = f"frame {stamp} {seg.header.frame_id or '-'}  {what} ({seg.task}) '{seg.label}'  "
    if getattr(seg, "error", ""):
        return f"{head}error: {seg.error}  latency {seg.latency_s * 1e3:.1f} ms"
    if seg.empty:
        box, pixels = "none", 0
    else:
        box = "[" + " ".join(f"{v:g}" for v in seg.box) + "]"
        pixels = int(np.count_nonzero(mask_pixels(seg)))
    return (
        f"{head}box {box}  pixels {pixels}  score {seg.score:.3f}  "
        f"latency {seg.latency_s * 1e3:.1f} ms"
    )


def save_mask(seg: Any, out_dir: Path) -> Path:
    """Write the answer's mono8 mask as ``<sec>_<nsec>_<goal id>[_<instance>].png``."""
    from PIL import Image

    out_dir.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in seg.goal_id) or "goal"
    suffix = f"_{seg.instance}" if seg.instance else ""
    stamp = f"{seg.header.stamp.sec}_{seg.header.stamp.nanosec:09d}"
    path = out_dir / f"{stamp}_{safe}{suffix}.png"
    Image.fromarray(mask_pixels(seg)).save(path)
    return path


class GoalClient:
    """A node that publishes goals and collects the answers to one goal id."""

    def __init__(self, namespace: str, goal_id: str) -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from text4seg_msgs.msg import Goal, SegmentationArray

        self.goal_id = goal_id
        self.goals_topic = topic(namespace, "goals")
        self.segs_topic = topic(namespace, "segmentations")
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = Node(f"text4seg_goal_{os.getpid()}", context=self.context)
        self._Goal = Goal
        self.publisher = self.node.create_publisher(Goal, self.goals_topic, 10)
        # Best effort matches the node's results whether they are published reliable (the
        # default) or best effort; depth 10 so a burst of frames is not cut to its newest.
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
        self._answers: list[Any] = []
        self._cond = threading.Condition()
        self.node.create_subscription(SegmentationArray, self.segs_topic, self._on_segs, qos)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # noqa: BLE001  the context was shut down under the executor
            pass

    def _on_segs(self, msg: Any) -> None:
        mine = [s for s in msg.segmentations if s.goal_id == self.goal_id]
        if mine:
            with self._cond:
                self._answers.append(mine)
                self._cond.notify_all()

    def wait_for_node(self, timeout: float) -> bool:
        """True once a node subscribes to the goals topic and publishes segmentations."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if (
                self.publisher.get_subscription_count() > 0
                and self.node.count_publishers(self.segs_topic) > 0
            ):
                return True
            time.sleep(0.05)
        return False

    def send(self, goal: Any, standing: bool, cancel: bool = False) -> None:
        msg = self._Goal(
            id=goal.id, text=goal.text, task=goal.task.value, standing=standing, cancel=cancel
        )
        msg.classes = list(goal.classes)
        self.publisher.publish(msg)

    def next_answer(self, index: int, timeout: float) -> list[Any] | None:
        """The ``index``-th frame's answers to the goal (a list of Segmentation), or None."""
        with self._cond:
            self._cond.wait_for(lambda: len(self._answers) > index, timeout)
            return self._answers[index] if len(self._answers) > index else None

    def activate(self, fqn: str, timeout: float) -> str:
        """Drive node ``fqn`` to ``active`` (configure, then activate, as needed) through its
        lifecycle services; its final state label. RuntimeError saying what failed."""
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState, GetState

        get = self.node.create_client(GetState, f"{fqn}/get_state")
        change = self.node.create_client(ChangeState, f"{fqn}/change_state")
        try:
            if not get.wait_for_service(timeout_sec=timeout):
                raise RuntimeError(f"no lifecycle node {fqn} (no {fqn}/get_state service)")
            for _ in range(3):  # unconfigured -> inactive -> active
                state = call_resending(get, GetState.Request(), timeout, time.sleep)
                if state is None:
                    raise RuntimeError(f"{fqn}/get_state did not answer within {timeout:g} s")
                label = state.current_state.label
                if label == "active":
                    return label
                steps = {"unconfigured": "configure", "inactive": "activate"}
                if label not in steps:
                    raise RuntimeError(f"{fqn} is {label!r}; cannot activate it from there")
                configure = label == "unconfigured"
                req = ChangeState.Request()
                req.transition.id = (
                    Transition.TRANSITION_CONFIGURE if configure else Transition.TRANSITION_ACTIVATE
                )
                # configure loads the model: minutes for a 7B model on a slow disk
                target = "inactive" if configure else "active"
                wait = max(timeout, 600.0)
                done = transition_once(change, get, req, target, wait, time.sleep)
                if done is None:
                    raise RuntimeError(
                        f"{fqn} did not finish {steps[label]} within {wait:g} s (see its log)"
                    )
                if not done:
                    raise RuntimeError(f"{fqn} refused {steps[label]} (see the node's log)")
            return label
        finally:
            self.node.destroy_client(get)
            self.node.destroy_client(change)

    def node_states(self, timeout: float = 3.0) -> list[str]:
        """``<node>: <lifecycle state>`` for every node publishing the segmentations topic."""
        from lifecycle_msgs.srv import GetState

        out = []
        for info in self.node.get_publishers_info_by_topic(self.segs_topic):
            fqn = "/".join(p for p in (info.node_namespace.rstrip("/"), info.node_name) if p)
            fqn = fqn if fqn.startswith("/") else "/" + fqn
            client = self.node.create_client(GetState, f"{fqn}/get_state")
            state = "state unknown"
            if client.wait_for_service(timeout_sec=timeout):
                response = call_resending(client, GetState.Request(), timeout, time.sleep)
                if response is not None:
                    state = response.current_state.label
            self.node.destroy_client(client)
            out.append(f"{fqn}: {state}")
        return out

    def close(self) -> None:
        import rclpy

        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        if self.context.ok():
            rclpy.shutdown(context=self.context)
        self._thread.join(5.0)


def _timeout_message(client: GoalClient, timeout: float, received: int) -> str:
    states = client.node_states()
    why = (
        "; the node must be active (--activate, ros2 lifecycle set <node> activate, or launch "
        "with autostart) and receive camera frames (check its /diagnostics: frames_received)"
    )
    where = ", ".join(states) or "no node publishes " + client.segs_topic
    return (
        f"{PROG}: no answer to goal '{client.goal_id}' within {timeout:g} s "
        f"({received} received; {where}){why}"
    )


def run(args: argparse.Namespace) -> int:
    """Send the goal, print (and save) the answers; the exit status."""
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    goal_id = args.id or f"goal_{os.getpid()}"
    try:
        goal = validate_goal(args.text, args.task, goal_id, classes)
    except GoalError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    wanted = args.frames if args.standing else 1
    client = GoalClient(args.namespace, goal.id)
    try:
        if args.activate:
            fqn = topic(args.namespace, args.node)
            try:
                client.activate(fqn, args.timeout)
            except RuntimeError as exc:
                print(f"{PROG}: {exc}", file=sys.stderr)
                return 1
            print(f"{fqn} is active", flush=True)
        if not client.wait_for_node(args.timeout):
            print(
                f"{PROG}: no perception node on {client.goals_topic} / {client.segs_topic} "
                f"after {args.timeout:g} s (ROS_DOMAIN_ID={os.environ.get('ROS_DOMAIN_ID', '0')}"
                "): is it running and configured, in this namespace (--namespace) and domain?",
                file=sys.stderr,
            )
            return 1
        client.send(goal, args.standing)
        kind = "standing" if args.standing else "one-shot"
        print(f"sent {kind} goal '{goal.id}' ({goal.task.value}): {goal.text}", flush=True)
        received = 0
        try:
            while wanted == 0 or received < wanted:
                answer = client.next_answer(received, args.timeout)
                if answer is None:
                    print(_timeout_message(client, args.timeout, received), file=sys.stderr)
                    return 1
                for seg in answer:
                    print(describe(seg), flush=True)
                    if args.save_masks is not None:
                        print(f"  mask -> {save_mask(seg, args.save_masks)}", flush=True)
                received += 1
        except KeyboardInterrupt:
            pass
        return 0
    finally:
        if args.standing and not args.keep:
            client.send(goal, standing=True, cancel=True)
            time.sleep(0.2)  # let the cancel leave before the participant goes away
        client.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``text4seg-goal``."""
    args = build_parser().parse_args(argv)
    if args.frames < 0:
        build_parser().error("--frames must be >= 0")
    if args.timeout <= 0:
        build_parser().error("--timeout must be > 0")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
