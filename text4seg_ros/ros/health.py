"""The node's /diagnostics timer and what it watches: camera flow and the inference thread.

Runs on the executor thread in every lifecycle state. Each tick checks that a matched camera
still delivers frames (:class:`.diagnostics.ImageFlowMonitor`) and that the inference thread
lives and is not stuck (the watchdog: a dead thread is reported as ERROR and restarted; a frame
running longer than ``inference_timeout_s`` is reported as ERROR and its decode cancelled at
the next model call), then publishes the node's ``DiagnosticArray``.
"""

from __future__ import annotations

import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray

from .diagnostics import ImageFlowMonitor


class Health:
    """/diagnostics publisher and timer of ``node`` (a ``PerceptionNode``)."""

    def __init__(self, node: Any, period_s: float) -> None:
        self.node = node
        self.image_flow = ImageFlowMonitor()
        self.publisher = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.timer = node.create_timer(max(0.05, period_s), self.publish)

    def set_period(self, period_s: float) -> None:
        """Restart the timer with ``period_s`` seconds (if it differs)."""
        if self.timer.timer_period_ns != round(period_s * 1e9):
            self.node.destroy_timer(self.timer)
            self.timer = self.node.create_timer(period_s, self.publish)

    def check_image_flow(self, now: float) -> str:
        """Warn once per episode (logged, counted) when a matched camera sends no frame.

        Returns the diagnostics warning while the camera stays silent, else ``""``.
        """
        node, flow = self.node, self.image_flow
        sub = node.camera.sub
        if sub is None:
            return ""
        limit = node.config.image_stall_warn_s
        busy = node.worker is not None and node.worker.busy_s() > 0  # a frame in progress
        if flow.check(now, sub.get_publisher_count(), limit, busy=busy):
            node.stats.add("image_stalls")
            node.get_logger().warning(flow.stall_log(sub.topic_name, limit))
        return flow.warning(now)

    def check_worker(self, now: float) -> str:
        """Watchdog: the error text for /diagnostics, or ``""`` while the thread is healthy.

        A dead inference thread (it cannot die of an Exception, but it could of anything else)
        is restarted; one busy with a frame for longer than ``inference_timeout_s`` is reported
        and its decode asked to stop at the next model call.
        """
        node = self.node
        worker = node.worker
        if worker is None or node.lifecycle_label != "active":
            return ""
        if not worker.alive():
            node.stats.add("worker_restarts")
            node.get_logger().error("the inference thread died; restarting it")
            node.worker = node.start_worker()
            return "inference thread died (restarted)"
        busy = worker.busy_s(now)
        if busy > node.config.inference_timeout_s:
            worker.cancel_current()
            message = f"inference stuck on one frame for {busy:.1f} s (cancelling it)"
            node.log_limited(message)
            return message
        return ""

    def publish(self) -> None:
        """Publish the node's ``DiagnosticArray`` on /diagnostics (timer callback)."""
        node, flow, now = self.node, self.image_flow, time.monotonic()
        warning = self.check_image_flow(now)
        error = self.check_worker(now)
        worker = node.worker
        msg = node.stats.array(
            node.get_clock().now().to_msg(),
            name=f"{node.get_fully_qualified_name()}: perception",
            hardware_id=node.config.device,
            state=node.lifecycle_label,
            model=node.model_state,
            goals_active=len(node.goals),
            extra={
                "image_publishers": flow.publishers,
                "image_silent_s": flow.silent_s(now),
                "worker_alive": worker is not None and worker.alive(),
                "worker_busy_s": worker.busy_s(now) if worker is not None else 0.0,
                "worker_callback_errors": worker.callback_errors if worker is not None else 0,
            },
            warning=warning,
            error=error,
        )
        self.publisher.publish(msg)
