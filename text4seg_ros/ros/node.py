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
(frames replaced by newer ones are never converted); callbacks only enqueue.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String
from std_srvs.srv import Trigger
from text4seg_msgs.msg import Goal as GoalMsg
from text4seg_msgs.msg import SegmentationArray
from text4seg_msgs.srv import ListGoals
from vision_msgs.msg import Detection2DArray

from ..model.types import GoalResult, SegmenterLike
from . import messages
from .diagnostics import ImageFlowMonitor, NodeStats
from .goals import ActiveGoal, GoalBook, GoalError, validate_goal
from .image import ImageError, compressed_to_rgb, image_to_rgb
from .model_loader import free_memory, freeze_heap, load_segmenter
from .params import DEFAULTS, LIVE, SPECS, NodeConfig, check_value, config_from_values
from .worker import Frame, InferenceWorker

SegmenterFactory = Callable[[NodeConfig], SegmenterLike]
TEXT_GOAL_ID = "text"
_RELIABILITY = {
    "best_effort": ReliabilityPolicy.BEST_EFFORT,
    "reliable": ReliabilityPolicy.RELIABLE,
}


def _qos(depth: int, reliability: str) -> QoSProfile:
    return QoSProfile(depth=depth, reliability=_RELIABILITY[reliability])


class PerceptionNode(LifecycleNode):
    """Lifecycle shell around a Segmenter; ``segmenter_factory`` replaces the model loader."""

    def __init__(
        self,
        node_name: str = "perception_node",
        segmenter_factory: SegmenterFactory = load_segmenter,
        **kwargs,
    ) -> None:
        super().__init__(node_name, **kwargs)
        for name, spec in SPECS.items():
            self.declare_parameter(name, DEFAULTS[name], spec.descriptor(name))
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.segmenter_factory = segmenter_factory
        self.config = NodeConfig()
        self.stats = NodeStats()
        self.goals = GoalBook(self.config.max_goals)
        self.segmenter: SegmenterLike | None = None
        self.worker: InferenceWorker | None = None
        self.model_state = "unloaded"
        self.lifecycle_label = "unconfigured"
        self._pubs: dict[str, object] = {}
        self._configured_entities: list = []
        self._image_sub = None
        self.image_flow = ImageFlowMonitor()
        self._last_seq: int | None = None
        self._log_times: dict[str, float] = {}
        # /diagnostics runs in every state, so from construction on; on_configure restarts the
        # timer when the validated diagnostics_period_s differs (non-live: read on configure).
        period = max(0.05, float(self.get_parameter("diagnostics_period_s").value))
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(period, self.publish_diagnostics)

    # ---------------------------------------------------------------- lifecycle transitions

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Validate parameters, load the model, create result publishers, goal inputs, services.

        Also applies ``diagnostics_period_s`` (the /diagnostics timer runs in every state).

        Goals can be sent once configured (they wait for frames); FAILURE, with the reason
        logged and in /diagnostics, when a parameter is invalid or the model does not load.
        """
        try:
            self.config = config_from_values(
                {name: self.get_parameter(name).value for name in SPECS}
            )
        except ValueError as exc:
            self.get_logger().error(f"configure failed: {exc}")
            self.model_state = f"failed: {exc}"
            return TransitionCallbackReturn.FAILURE
        self.goals.max_goals = self.config.max_goals
        self._set_diagnostics_period(self.config.diagnostics_period_s)
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
        self.get_logger().info(
            f"model {self.config.model_path!r} loaded in {time.monotonic() - t0:.1f} s"
        )
        out_qos = _qos(self.config.output_qos_depth, self.config.output_qos_reliability)
        for topic, kind in (
            ("segmentations", SegmentationArray),
            ("detections", Detection2DArray),
            ("mask", Image),
            ("overlay", Image),
        ):
            self._pubs[topic] = self.create_lifecycle_publisher(kind, topic, out_qos)
        events = SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_qos)
        self._configured_entities = [
            self.create_subscription(GoalMsg, "goals", self._on_goal, 10, event_callbacks=events),
            self.create_subscription(
                String, "goal_text", self._on_goal_text, 10, event_callbacks=events
            ),
            self.create_service(ListGoals, "~/list_goals", self._on_list_goals),
            self.create_service(Trigger, "~/clear_goals", self._on_clear_goals),
        ]
        self.lifecycle_label = "inactive"
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Start the inference thread, subscribe to the camera, enable the result publishers."""
        self.worker = InferenceWorker(
            self.segmenter,
            self.goals,
            self._on_result,
            self._on_error,
            on_skip=self._on_skip,
            on_reject=self._on_bad_image,
        )
        self.worker.start()
        self._last_seq = None
        events = SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_qos)
        qos = _qos(self.config.image_qos_depth, self.config.image_qos_reliability)
        if self.config.compressed:
            self._image_sub = self.create_subscription(
                CompressedImage, "image/compressed", self._on_compressed, qos,
                event_callbacks=events,
            )  # fmt: skip
        else:
            self._image_sub = self.create_subscription(
                Image, "image", self._on_image, qos, event_callbacks=events
            )
        self.image_flow.start(time.monotonic())
        self.lifecycle_label = "active"
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unsubscribe the camera and stop the inference thread (after its current frame).

        Goals stay; one-shot goals not yet answered are answered after the next activation.
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

    def _stop_inputs(self) -> None:
        if self._image_sub is not None:
            self.destroy_subscription(self._image_sub)
            self._image_sub = None
        self.image_flow.stop()
        if self.worker is not None:
            if not self.worker.stop(timeout=30.0):
                self.get_logger().warning("inference thread still busy after 30 s; detached")
            self.worker = None

    def _release(self) -> None:
        for entity in self._configured_entities:
            if hasattr(entity, "srv_type"):
                self.destroy_service(entity)
            else:
                self.destroy_subscription(entity)
        self._configured_entities = []
        for pub in self._pubs.values():
            self.destroy_lifecycle_publisher(pub)
        self._pubs = {}
        dropped = self.goals.clear()
        if dropped:
            self.get_logger().info(f"cleanup: {dropped} goals removed")
        self.segmenter = None
        free_memory()
        self.model_state = "unloaded"

    # ---------------------------------------------------------------- inputs

    def _on_image(self, msg: Image, info: dict) -> None:
        self._count_missed(info)
        self._enqueue(msg.header, lambda: image_to_rgb(msg, self.config.max_image_pixels))

    def _on_compressed(self, msg: CompressedImage, info: dict) -> None:
        self._count_missed(info)
        self._enqueue(msg.header, lambda: compressed_to_rgb(msg, self.config.max_image_pixels))

    def _count_missed(self, info: dict) -> None:
        """Count frames that never reached the callback: gaps in the publication sequence.

        With sensor-data QoS (best effort, depth 1) DDS replaces a frame not yet taken by a
        newer one; those are dropped before the node sees them. Exact for one camera publisher;
        a sequence going back (another publisher, a restarted camera) only resets the count.
        """
        seq = info.get("publication_sequence_number") if isinstance(info, dict) else None
        if not seq:
            return
        last, self._last_seq = self._last_seq, seq
        if last is not None and seq > last + 1:
            self.stats.add("frames_missed", seq - last - 1)

    def _enqueue(self, header, convert: Callable) -> None:
        """Hand the frame to the worker; it converts it (``convert``) only if it takes it."""
        received = time.monotonic()
        self.image_flow.frame(received)
        self.stats.add("frames_received")
        worker = self.worker
        if worker is None:
            return
        if worker.submit(Frame(None, header, received, decode=convert)):
            self.stats.add("frames_dropped")

    def _on_goal(self, msg: GoalMsg) -> None:
        if msg.cancel:
            if self.goals.cancel(msg.id.strip()):
                self.get_logger().info(f"goal {msg.id.strip()!r} cancelled")
            else:
                self._reject("goals_rejected", f"cancel rejected: no active goal {msg.id!r}")
            return
        self._add_goal(msg.text, msg.task, msg.id, list(msg.classes), msg.standing)

    def _on_goal_text(self, msg: String) -> None:
        self._add_goal(msg.data, "res", TEXT_GOAL_ID, [], True)

    def _add_goal(self, text: str, task: str, goal_id: str, classes: list, standing: bool) -> None:
        try:
            goal = validate_goal(text, task, goal_id, classes, self.config.max_goal_chars)
            self._check_with_model(goal)
            entry = self.goals.add(goal, standing)
        except GoalError as exc:
            self._reject("goals_rejected", f"goal {goal_id!r} rejected: {exc}")
            return
        kind = "standing" if standing else "one-shot"
        g = entry.goal
        self.get_logger().info(f"goal {g.id!r} accepted ({g.task.value}, {kind}): {g.text!r}")

    def _check_with_model(self, goal) -> None:
        """Let the Segmenter refuse a goal now (if it can plan goals), not on every frame."""
        plan = getattr(self.segmenter, "plan", None)
        if callable(plan):
            try:
                plan([goal])
            except (TypeError, ValueError) as exc:
                raise GoalError(str(exc)) from None

    def _on_list_goals(self, request, response):
        response.goals = [messages.goal_msg(entry) for entry in self.goals.snapshot()]
        return response

    def _on_clear_goals(self, request, response):
        count = self.goals.clear()
        response.success = True
        response.message = f"cleared {count} goals"
        self.get_logger().info(response.message)
        return response

    def _on_incompatible_qos(self, event) -> None:
        self.get_logger().error(
            f"a publisher's QoS is incompatible with this subscription "
            f"(policy {event.last_policy_kind}); it gets no messages: check reliability/durability"
        )

    def _reject(self, counter: str, reason: str) -> None:
        """Count a rejection; log each distinct reason at most every 2 s (floods stay readable)."""
        self.stats.reject(counter, reason)
        now = time.monotonic()
        if now - self._log_times.get(reason, -1e9) >= 2.0:
            if len(self._log_times) > 256:
                self._log_times.clear()
            self._log_times[reason] = now
            self.get_logger().warning(reason)

    # ---------------------------------------------------------------- outputs (worker thread)

    def _on_result(
        self, frame: Frame, active: list[ActiveGoal], results: list[GoalResult], latency: float
    ) -> None:
        cfg = self.config
        items = [
            answer
            for entry, result in zip(active, results)
            for answer in messages.answers(entry, result, cfg.min_mask_pixels)
        ]
        header = frame.header
        pubs = self._pubs
        pubs["segmentations"].publish(messages.segmentation_array(header, items, latency))
        pubs["detections"].publish(messages.detection_array(header, items, cfg.score_threshold))
        shape = frame.rgb.shape[:2]
        pubs["mask"].publish(messages.mask_image(header, items, shape, cfg.mask_mode))
        if cfg.publish_overlay:
            pubs["overlay"].publish(messages.overlay_image(header, frame.rgb, items))
        self.goals.answered(active)
        self.stats.add("goals_answered", len(active))
        self.stats.processed(latency)

    def _on_bad_image(self, frame: Frame, exc: Exception) -> None:
        detail = str(exc) if isinstance(exc, ImageError) else f"{type(exc).__name__}: {exc}"
        self._reject("images_rejected", f"image rejected: {detail}")

    def _on_skip(self, frame: Frame) -> None:
        self.stats.add("frames_skipped")

    def _on_error(self, frame: Frame, active: list[ActiveGoal], exc: BaseException) -> None:
        self.stats.add("inference_errors")
        retired = self.goals.answered(active)
        names = ", ".join(repr(e.goal.id) for e in retired)
        dropped = f"; one-shot goals {names} dropped" if retired else ""
        self._reject("goals_rejected", f"inference failed: {type(exc).__name__}: {exc}{dropped}")

    def _set_diagnostics_period(self, period_s: float) -> None:
        """Restart the /diagnostics timer with ``period_s`` seconds (if it differs)."""
        if self._diag_timer.timer_period_ns != round(period_s * 1e9):
            self.destroy_timer(self._diag_timer)
            self._diag_timer = self.create_timer(period_s, self.publish_diagnostics)

    def _check_image_flow(self) -> str:
        """Warn once per episode (logged, counted) when a matched camera sends no frame.

        Returns the diagnostics warning while the camera stays silent, else ``""``.
        """
        sub, flow, now = self._image_sub, self.image_flow, time.monotonic()
        if sub is None:
            return ""
        limit = self.config.image_stall_warn_s
        if flow.check(now, sub.get_publisher_count(), limit):
            self.stats.add("image_stalls")
            self.get_logger().warning(flow.stall_log(sub.topic_name, limit))
        return flow.warning(now)

    def publish_diagnostics(self) -> None:
        """Publish the node's ``DiagnosticArray`` on /diagnostics (timer callback)."""
        warning = self._check_image_flow()
        flow, now = self.image_flow, time.monotonic()
        msg = self.stats.array(
            self.get_clock().now().to_msg(),
            name=f"{self.get_fully_qualified_name()}: perception",
            hardware_id=self.config.device,
            state=self.lifecycle_label,
            model=self.model_state,
            goals_active=len(self.goals),
            extra={"image_publishers": flow.publishers, "image_silent_s": flow.silent_s(now)},
            warning=warning,
        )
        self._diag_pub.publish(msg)

    # ---------------------------------------------------------------- parameters

    def _on_set_parameters(self, params) -> SetParametersResult:
        """Refuse invalid values; apply LIVE parameters at once, the rest on next configure."""
        live = {}
        for param in params:
            if param.name not in SPECS:
                continue
            try:
                value = check_value(param.name, param.value)
            except ValueError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
            if param.name in LIVE:
                live[param.name] = value
        if live:
            self.config = dataclasses.replace(self.config, **live)
            self.goals.max_goals = self.config.max_goals
        return SetParametersResult(successful=True)


def main(args: list[str] | None = None) -> None:
    """Console script ``perception_node``: spin the node until SIGINT / SIGTERM."""
    rclpy.init(args=args)
    node = None
    try:
        node = PerceptionNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
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
