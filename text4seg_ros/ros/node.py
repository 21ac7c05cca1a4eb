"""``perception_node``: a managed (lifecycle) node answering language goals on camera frames.

Topics (relative names; remap and namespace them at launch):

* in ``image`` (``sensor_msgs/Image``) or ``image/compressed`` (``CompressedImage``, when the
  ``compressed`` parameter is true): sensor-data QoS, only the newest frame is kept;
* in ``goals`` (``text4seg_msgs/Goal``) and ``goal_text`` (``std_msgs/String``: a standing RES
  goal with id ``text``, each message replacing the previous one);
* out ``segmentations`` (``text4seg_msgs/SegmentationArray``), ``detections``
  (``vision_msgs/Detection2DArray``), ``mask`` (mono8 union or label map), ``overlay`` (rgb8),
  all stamped with the camera frame's header; ``/diagnostics`` (``DiagnosticArray``, always on);
* private services ``~/list_goals`` (``text4seg_msgs/ListGoals``) and ``~/clear_goals``
  (``std_srvs/Trigger``), i.e. ``<namespace>/<node name>/list_goals``: they belong to this node
  like its lifecycle services, so two nodes in one namespace do not clash. The goal topics stay
  namespace-level inputs (one goal stream may drive every node of a namespace; remap them to
  separate nodes).

Inference runs on its own thread (:mod:`.worker`), which also converts the frames it takes
(frames replaced by newer ones, and frames taken while no goal is active, are never converted);
callbacks only enqueue. The /diagnostics timer watches that thread: a dead one is reported as
ERROR and restarted, a stuck one (a frame running longer than ``inference_timeout_s``) is
reported as ERROR and its decode cancelled. Results are published by :mod:`.publishing`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import rclpy
from rcl_interfaces.msg import SetParametersResult
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy

from ..model.types import GoalResult, SegmenterLike
from .camera_input import CameraInput
from .diagnostics import NodeStats
from .goal_inputs import TEXT_GOAL_ID, GoalInputs
from .goals import ActiveGoal, GoalBook
from .health import Health
from .image import ImageError
from .lifecycle import GuardedLifecycleNode
from .model_loader import free_memory, freeze_heap, load_segmenter
from .params import (
    LIVE,
    SPECS,
    NodeConfig,
    check_value,
    coerce_numbers,
    config_from_values,
    declare_all,
)
from .publishing import ResultPublisher
from .worker import Frame, InferenceWorker

SegmenterFactory = Callable[[NodeConfig], SegmenterLike]
__all__ = ["TEXT_GOAL_ID", "PerceptionNode", "main"]
STOP_TIMEOUT_S = 0.9  # deactivate waits this long for the inference thread, then detaches it
_RELIABILITY = {
    "best_effort": ReliabilityPolicy.BEST_EFFORT,
    "reliable": ReliabilityPolicy.RELIABLE,
}


def _qos(depth: int, reliability: str) -> QoSProfile:
    return QoSProfile(depth=depth, reliability=_RELIABILITY[reliability])


class PerceptionNode(GuardedLifecycleNode):
    """Lifecycle shell around a Segmenter; ``segmenter_factory`` replaces the model loader."""

    def __init__(
        self,
        node_name: str = "perception_node",
        segmenter_factory: SegmenterFactory = load_segmenter,
        **kwargs,
    ) -> None:
        super().__init__(node_name, **kwargs)
        # bad overrides (wrong kind, out of range) make configure fail, not the constructor
        self._param_errors = declare_all(self)
        for error in self._param_errors.values():
            self.get_logger().error(f"{error}; configure will fail until it is set correctly")
        self.add_pre_set_parameters_callback(coerce_numbers)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.segmenter_factory = segmenter_factory
        self.config = NodeConfig()
        self.stats = NodeStats()
        self.goals = GoalBook(self.config.max_goals)
        self.segmenter: SegmenterLike | None = None
        self.worker: InferenceWorker | None = None
        self._detached: InferenceWorker | None = None  # stopped late; may still be running
        self.model_state = "unloaded"
        self.lifecycle_label = "unconfigured"
        self._outputs: ResultPublisher | None = None
        self._configured_entities: list = []
        self._log_times: dict[str, float] = {}
        self.goal_inputs = GoalInputs(
            self, self.goals, self.stats, self._reject,
            lambda: self.segmenter, lambda: self.config.max_goal_chars,
        )  # fmt: skip
        # /diagnostics runs in every state, so from construction on; on_configure restarts the
        # timer when the validated diagnostics_period_s differs (non-live: read on configure).
        self.health = Health(self, float(self.get_parameter("diagnostics_period_s").value))
        self.image_flow = self.health.image_flow
        self.camera = CameraInput(self, self.stats, self.image_flow, lambda: self.worker)

    # ---------------------------------------------------------------- lifecycle transitions

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Validate parameters, load the model, create result publishers, goal inputs, services.

        Also applies ``diagnostics_period_s`` (the /diagnostics timer runs in every state).

        Goals can be sent once configured (they wait for frames); FAILURE, with the reason
        logged and in /diagnostics, when a parameter is invalid or the model does not load.
        """
        try:
            if self._param_errors:
                raise ValueError("; ".join(self._param_errors.values()))
            self.config = config_from_values(
                {name: self.get_parameter(name).value for name in SPECS}
            )
        except ValueError as exc:
            self.get_logger().error(f"configure failed: {exc}")
            self.model_state = f"failed: {exc}"
            return TransitionCallbackReturn.FAILURE
        self.goals.max_goals = self.config.max_goals
        self.health.set_period(self.config.diagnostics_period_s)
        self.model_state = "loading"
        t0 = time.monotonic()
        try:
            self.segmenter = self.segmenter_factory(self.config)
        except Exception as exc:  # noqa: BLE001  any load error fails the transition, not the node
            self.get_logger().error(f"configure failed: cannot load model: {exc}")
            self.model_state = f"failed: {exc}"
            return TransitionCallbackReturn.FAILURE
        self.model_state = "loaded"
        freeze_heap()
        refiner = getattr(self.segmenter, "refiner", None)  # what refiner "auto" resolved to
        self.get_logger().info(
            f"model {self.config.model_path!r} loaded in {time.monotonic() - t0:.1f} s (grid "
            f"{getattr(self.segmenter, 'grid', '?')}, refiner "
            f"{'none' if refiner is None else type(refiner).__name__})"
        )
        out_qos = _qos(self.config.output_qos_depth, self.config.output_qos_reliability)
        self._outputs = ResultPublisher(self, out_qos)
        events = SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_qos)
        self._configured_entities = self.goal_inputs.create(events)
        self.lifecycle_label = "inactive"
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Start the inference thread, subscribe to the camera, enable the result publishers.

        FAILURE when the thread of an earlier activation is still stuck in a model call on the
        model loaded now (cleanup and configure load a fresh one, which it does not touch)."""
        old = self._detached
        if old is not None and not old.stop(timeout=2.0):
            if old.segmenter is self.segmenter:
                self.get_logger().error(
                    "activate failed: the previous inference thread is still inside a model call "
                    "on this model; wait, or cleanup and configure to load a fresh model"
                )
                return TransitionCallbackReturn.FAILURE
            self.get_logger().warning(
                "the previous inference thread is still inside a call to the model loaded "
                "before cleanup; it ends after that call and publishes nothing"
            )
        self._detached = None
        self.worker = self.start_worker()
        events = SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_qos)
        qos = _qos(self.config.image_qos_depth, self.config.image_qos_reliability)
        self.camera.subscribe(self.config, qos, events)
        self.lifecycle_label = "active"
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unsubscribe the camera and stop the inference thread; returns within about 1 s.

        An in-flight decode stops at its next model call (its frame is not answered). Goals
        stay; one-shot goals not yet answered are answered after the next activation.
        """
        self._stop_inputs()
        self.lifecycle_label = "inactive"
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Drop goals, publishers, services and the model, and free its memory."""
        self._release()
        self.lifecycle_label = "unconfigured"
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop inference and release everything, from any state."""
        self._stop_inputs()
        self._release()
        self.lifecycle_label = "finalized"
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release everything after a failed transition and go back to unconfigured."""
        self._stop_inputs()
        self._release()
        self.lifecycle_label = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def start_worker(self) -> InferenceWorker:
        """A started inference thread over the current segmenter and goal book."""
        worker = InferenceWorker(
            self.segmenter,
            self.goals,
            self._on_result,
            self._on_error,
            on_skip=lambda frame: self.stats.add("frames_skipped"),
            on_reject=self._on_bad_image,
            on_cancel=lambda frame: self.stats.add("frames_cancelled"),
        )
        worker.start()
        return worker

    def _stop_inputs(self) -> None:
        self.camera.unsubscribe()
        if self.worker is not None:
            if not self.worker.stop(timeout=STOP_TIMEOUT_S):
                self.get_logger().warning(
                    f"inference thread still busy after {STOP_TIMEOUT_S} s (inside a model "
                    "call); detached: it ends after that call"
                )
                self._detached = self.worker
            self.worker = None

    def _release(self) -> None:
        for entity in self._configured_entities:
            if hasattr(entity, "srv_type"):
                self.destroy_service(entity)
            else:
                self.destroy_subscription(entity)
        self._configured_entities = []
        if self._outputs is not None:
            self._outputs.destroy()
            self._outputs = None
        dropped = self.goals.clear()
        if dropped:
            self.get_logger().info(f"cleanup: {dropped} goals removed")
        self.segmenter = None
        free_memory()
        self.model_state = "unloaded"

    def _on_incompatible_qos(self, event) -> None:
        self.get_logger().error(
            f"a publisher's QoS is incompatible with this subscription "
            f"(policy {event.last_policy_kind}); it gets no messages: check reliability/durability"
        )

    def _reject(self, counter: str, reason: str) -> None:
        """Count a rejection (``counter``) and log it (:meth:`log_limited`)."""
        self.stats.reject(counter, reason)
        self.log_limited(reason)

    def log_limited(self, reason: str) -> None:
        """Log a warning, each distinct text at most every 2 s (floods stay readable)."""
        now = time.monotonic()
        if now - self._log_times.get(reason, -1e9) >= 2.0:
            if len(self._log_times) > 256:
                self._log_times.clear()
            self._log_times[reason] = now
            self.get_logger().warning(reason)

    # ---------------------------------------------------------------- outputs (worker thread)

    def _on_result(
        self,
        frame: Frame,
        active: list[ActiveGoal],
        outcomes: Sequence[GoalResult | Exception],
        latency: float,
    ) -> None:
        """Publish a frame's answers and error results; retire the one-shot goals among them."""
        outputs = self._outputs
        if outputs is None:
            raise RuntimeError("results after cleanup: no publishers")
        done = outputs.publish(frame.header, frame.rgb, active, outcomes, latency, self.config)
        for entry, reason in done.failed:
            self._reject("goal_errors", f"goal {entry.goal.id!r} failed on a frame: {reason}")
        self.goals.answered(active)  # answered or failed themselves: both retire one-shots
        self.stats.add("goals_answered", len(done.answered))
        self.stats.processed(latency)

    def _on_bad_image(self, frame: Frame, exc: Exception) -> None:
        detail = str(exc) if isinstance(exc, ImageError) else f"{type(exc).__name__}: {exc}"
        self._reject("images_rejected", f"image rejected: {detail}")

    def _on_error(self, frame: Frame, active: list[ActiveGoal], exc: BaseException) -> None:
        """A frame failed as a whole: counted and logged; its goals stay (none was answered)."""
        self._reject("inference_errors", f"inference failed: {type(exc).__name__}: {exc}")

    # ---------------------------------------------------------------- parameters

    def _on_set_parameters(self, params) -> SetParametersResult:
        """Refuse invalid values; apply LIVE parameters at once, the rest on next configure."""
        live, later = {}, []
        for param in params:
            if param.name not in SPECS:
                continue
            try:
                value = check_value(param.name, param.value)
            except ValueError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
            if param.name in LIVE:
                live[param.name] = value
            else:
                later.append(f"{param.name}={value!r}")
        for param in params:  # a valid value replaces a refused override
            self._param_errors.pop(param.name, None)
        if later and self.lifecycle_label in ("inactive", "active"):
            self.get_logger().info(
                f"parameter {', '.join(later)} set; it takes effect at the next configure "
                "(deactivate, cleanup, configure, activate)"
            )
        if live:
            self.config = dataclasses.replace(self.config, **live)
            self.goals.max_goals = self.config.max_goals
        return SetParametersResult(successful=True)


def spin(node: PerceptionNode, executor: SingleThreadedExecutor) -> None:
    """Spin until shutdown; an exception out of any callback is logged, never ends the node."""
    while rclpy.ok(context=executor.context):
        try:
            executor.spin_once(timeout_sec=0.5)
        except (KeyboardInterrupt, ExternalShutdownException):
            raise
        except Exception as exc:  # noqa: BLE001  no message a client sends may end the process
            node.stats.add("callback_errors")
            node.get_logger().error(f"callback failed: {type(exc).__name__}: {exc}")


def main(args: list[str] | None = None) -> None:
    """Console script ``perception_node``: spin the node until SIGINT / SIGTERM."""
    rclpy.init(args=args)
    node = None
    try:
        node = PerceptionNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        spin(node, executor)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node._stop_inputs()
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == "__main__":
    main()
