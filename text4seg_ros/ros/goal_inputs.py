"""The node's goal inputs: ``goals`` / ``goal_text`` topics and the private goal services.

Each goal is validated (:func:`.goals.validate_goal`), then prepared by the segmenter once,
when it is admitted (grammar and prompt, reused on every frame; a goal that cannot be prepared
is rejected at once, logged and counted), then booked in the :class:`.goals.GoalBook` the
inference thread reads. Runs on the executor thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rclpy.event_handler import SubscriptionEventCallbacks
from std_msgs.msg import String
from std_srvs.srv import Trigger
from text4seg_msgs.msg import Goal as GoalMsg
from text4seg_msgs.srv import ListGoals

from ..model.types import Goal
from . import messages
from .diagnostics import NodeStats
from .goals import GoalBook, GoalError, validate_goal

TEXT_GOAL_ID = "text"  # the standing RES goal set through the goal_text topic


class GoalInputs:
    """Goal topics and services of ``node``; ``reject(counter, reason)`` counts and logs.

    ``segmenter()`` and ``max_chars()`` read the node's current model and limit.
    """

    def __init__(
        self,
        node: Any,
        book: GoalBook,
        stats: NodeStats,
        reject: Callable[[str, str], None],
        segmenter: Callable[[], Any],
        max_chars: Callable[[], int],
    ) -> None:
        self.node, self.book, self.stats, self.reject = node, book, stats, reject
        self.segmenter, self.max_chars = segmenter, max_chars

    def create(self, events: SubscriptionEventCallbacks) -> list:
        """Subscribe the goal topics and offer the services (on configure); the entities."""
        n = self.node
        return [
            n.create_subscription(GoalMsg, "goals", self.on_goal, 10, event_callbacks=events),
            n.create_subscription(
                String, "goal_text", self.on_goal_text, 10, event_callbacks=events
            ),
            n.create_service(ListGoals, "~/list_goals", self.on_list_goals),
            n.create_service(Trigger, "~/clear_goals", self.on_clear_goals),
        ]

    def on_goal(self, msg: GoalMsg) -> None:
        """A ``text4seg_msgs/Goal``: add or replace it, or cancel its id."""
        if msg.cancel:
            if self.book.cancel(msg.id.strip()):
                self.stats.add("goals_cancelled")
                self.node.get_logger().info(f"goal {msg.id.strip()!r} cancelled")
            else:
                self.reject("goals_rejected", f"cancel rejected: no active goal {msg.id!r}")
            return
        self.add(msg.text, msg.task, msg.id, list(msg.classes), msg.standing)

    def on_goal_text(self, msg: String) -> None:
        """``goal_text``: the standing RES goal ``text``, replaced by each message."""
        self.add(msg.data, "res", TEXT_GOAL_ID, [], True)

    def add(self, text: str, task: str, goal_id: str, classes: list, standing: bool) -> None:
        """Validate, prepare and book one goal; a refused goal is logged and counted."""
        try:
            goal = validate_goal(text, task, goal_id, classes, self.max_chars())
            entry = self.book.add(goal, standing, self.prepare(goal))
        except GoalError as exc:
            self.reject("goals_rejected", f"goal {goal_id!r} rejected: {exc}")
            return
        self.stats.add("goals_accepted")
        kind = "standing" if standing else "one-shot"
        g = entry.goal
        self.node.get_logger().info(f"goal {g.id!r} accepted ({g.task.value}, {kind}): {g.text!r}")

    def prepare(self, goal: Goal) -> Any:
        """The segmenter's prepared goal (grammar and prompt built once, now), or None when the
        segmenter cannot prepare goals; any failure rejects the goal here, not on every frame."""
        prepare = getattr(self.segmenter(), "prepare", None)
        if not callable(prepare):
            return None
        try:
            return prepare(goal)
        except Exception as exc:  # noqa: BLE001  whatever fails, the goal alone is refused
            raise GoalError(f"cannot be prepared: {type(exc).__name__}: {exc}") from None

    def on_list_goals(self, request, response):
        """``~/list_goals``: the active goals in arrival order."""
        response.goals = [messages.goal_msg(entry) for entry in self.book.snapshot()]
        return response

    def on_clear_goals(self, request, response):
        """``~/clear_goals``: remove every goal."""
        count = self.book.clear()
        response.success = True
        response.message = f"cleared {count} goals"
        self.node.get_logger().info(response.message)
        return response
