"""A ``LifecycleNode`` whose ``~/change_state`` service answers every request and never raises.

rclpy's own handler (``LifecycleNodeMixin.__on_change_state``, Jazzy) calls
``trigger_transition_by_id`` for whatever id a client sends; a transition that is not valid in
the current state (``configure`` sent to an active node, an unknown id, anything after
``finalized``) raises ``RCLError: Failed to trigger lifecycle state machine transition`` out of
the service callback, which ends ``executor.spin()`` and with it the process (ros2/rclpy#1209).
Any process on the DDS domain could take the node down that way.

:class:`GuardedLifecycleNode` replaces that handler (the mixin binds the service to the
name-mangled attribute at construction, so an override of that attribute is what it calls): a
request is checked against the transitions available in the current state first; an invalid one
gets ``success: false`` and a log line, a valid one runs rclpy's handler, and an ``RCLError``
that still escapes it is logged and answered ``success: false`` as well.
"""

from __future__ import annotations

from lifecycle_msgs.srv import ChangeState
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.lifecycle import LifecycleNode


class GuardedLifecycleNode(LifecycleNode):
    """``LifecycleNode`` whose change_state service refuses invalid transitions politely."""

    def available_transition_ids(self) -> dict[int, str]:
        """Transitions valid in the current state: ``{id: label}`` (empty when finalized)."""
        return {t[0]: t[1] for t in self._state_machine.available_transitions}

    def _LifecycleNodeMixin__on_change_state(  # noqa: N802  the name rclpy binds the service to
        self, req: ChangeState.Request, resp: ChangeState.Response
    ) -> ChangeState.Response:
        state_id, state = self._state_machine.current_state
        valid = self.available_transition_ids()
        label, tid = req.transition.label, req.transition.id
        if label:
            ok = label in valid.values()
            asked = f"transition label {label!r}"
        else:
            ok = tid in valid
            asked = f"transition id {tid}"
        if not ok:
            allowed = ", ".join(f"{i} ({name})" for i, name in sorted(valid.items())) or "none"
            self.get_logger().warning(
                f"change_state refused: {asked} is not valid in state {state!r}; allowed: {allowed}"
            )
            resp.success = False
            return resp
        try:
            return super()._LifecycleNodeMixin__on_change_state(req, resp)
        except _rclpy.RCLError as exc:  # rclpy#1209: never let a request end the process
            self.get_logger().error(f"change_state {asked} in state {state!r} failed: {exc}")
            resp.success = False
            return resp
