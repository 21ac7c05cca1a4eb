"""Service calls that survive a lost response (text4seg_ros.ros.service_calls).

The clients are stand-ins (tests/ros_harness.py ``LossyService``) whose responses can be lost,
as Fast DDS loses the first response of a node that has just started (ros2/rmw_fastrtps#467).
The real node paths are covered by tests/test_goal_client.py and tests/test_bag_eval.py.
"""

from __future__ import annotations

import time

import pytest

pytest.importorskip("rclpy")
pytest.importorskip("lifecycle_msgs")

from lifecycle_msgs.srv import ChangeState  # noqa: E402
from ros_harness import LossyService, state_response  # noqa: E402

from text4seg_ros.ros import service_calls as sc  # noqa: E402


def test_read_only_calls_are_resent_until_answered_and_others_sent_once() -> None:
    lost_once = LossyService(None, state_response("inactive"))  # the first response is lost
    answer = sc.call_resending(lost_once, None, 5.0, time.sleep, resend_s=0.05)
    assert answer.current_state.label == "inactive" and lost_once.sent == 2
    never = LossyService()
    assert sc.call_resending(never, None, 0.2, time.sleep, resend_s=0) is None
    assert never.sent == 1  # resend_s 0: sent once
    never = LossyService()
    assert sc.call_resending(never, None, 0.2, time.sleep, resend_s=0.05) is None
    assert 3 <= never.sent <= 5


def test_the_default_resend_interval_is_read_at_call_time(monkeypatch) -> None:
    monkeypatch.setattr(sc, "RESEND_S", 0.05)
    lost_once = LossyService(None, state_response("active"))
    assert sc.call_resending(lost_once, None, 2.0, time.sleep).current_state.label == "active"


def test_a_transition_whose_response_is_lost_is_seen_in_the_state() -> None:
    get = LossyService(state_response("configuring"), state_response("inactive"))
    change = LossyService()
    assert sc.transition_once(change, get, None, "inactive", 5.0, time.sleep, 0.05) is True
    assert change.sent == 1 and get.sent == 2  # never sent twice: not idempotent
    refused = LossyService(ChangeState.Response(success=False))
    assert sc.transition_once(refused, LossyService(), None, "inactive", 5.0, time.sleep) is False
    done = LossyService(ChangeState.Response(success=True))
    assert sc.transition_once(done, LossyService(), None, "inactive", 5.0, time.sleep) is True
    # no answer and the state never reaches the target: None after the timeout
    stuck = LossyService(*[state_response("unconfigured")] * 100)
    never = LossyService()
    assert sc.transition_once(never, stuck, None, "inactive", 0.3, time.sleep, 0.05) is None


def test_a_pause_that_raises_aborts_the_wait() -> None:
    def dead(_seconds: float) -> None:
        raise RuntimeError("the node exited")

    with pytest.raises(RuntimeError, match="the node exited"):
        sc.call_resending(LossyService(), None, 5.0, dead)
    with pytest.raises(RuntimeError, match="the node exited"):
        sc.transition_once(LossyService(), LossyService(), None, "active", 5.0, dead)
