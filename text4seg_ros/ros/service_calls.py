"""Service calls to a ROS node that survive a lost response.

A node that has just started may drop the response to a client whose response reader it has
not matched yet: Fast DDS waits 100 ms for it, then discards the response
(ros2/rmw_fastrtps#467). Two rules follow, shared by ``text4seg-goal``, ``text4seg-bag eval
--through-node`` and the test harness:

- a read-only request (``GetState``, ``ListGoals``, ``clear_goals``) is sent again every
  ``resend_s`` seconds until one is answered (:func:`call_resending`);
- a lifecycle transition is never sent twice (it is not idempotent): while its response has
  not come, the node's state is polled, and reaching the transition's goal state counts as
  success (:func:`transition_once`).

Both take a ``pause(seconds)`` callable that lets time pass while responses are delivered:
``time.sleep`` when an executor spins in another thread, ``executor.spin_once`` when the
caller spins its own. ``pause`` may raise to abort the wait (say, the node process died).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

RESEND_S = 5.0  # s between repeated read-only requests and between state polls
POLL_S = 0.02  # s, the longest single pause between checks of the futures

Pause = Callable[[float], None]


def call_resending(
    client: Any, request: Any, timeout_s: float, pause: Pause, resend_s: float | None = None
) -> Any | None:
    """The first response to ``request`` on ``client`` (an rclpy service client), or None when
    none came within ``timeout_s`` s. The request is sent again every ``resend_s`` s (default
    :data:`RESEND_S`; read-only requests only); ``resend_s`` 0: it is sent once."""
    resend_s = RESEND_S if resend_s is None else resend_s
    deadline = time.monotonic() + timeout_s
    futures, sent = [client.call_async(request)], time.monotonic()
    while not any(f.done() for f in futures):
        now = time.monotonic()
        if now >= deadline:
            return None
        if resend_s > 0 and now - sent >= resend_s:
            futures.append(client.call_async(request))
            sent = now
        pause(min(POLL_S, deadline - now))
    return next(f.result() for f in futures if f.done())


def transition_once(
    change: Any,
    get: Any,
    request: Any,
    target: str,
    timeout_s: float,
    pause: Pause,
    poll_s: float | None = None,
) -> bool | None:
    """Send one ``ChangeState`` ``request`` on ``change``; True once it succeeds or ``get``
    (the node's ``GetState`` client, polled every ``poll_s`` s while no response has come)
    says the node is in ``target`` (default ``poll_s``: :data:`RESEND_S`); False when the
    node refused the transition; None when neither answer came within ``timeout_s`` s."""
    from lifecycle_msgs.srv import GetState

    poll_s = RESEND_S if poll_s is None else poll_s
    deadline = time.monotonic() + timeout_s
    future, polls, asked = change.call_async(request), [], time.monotonic()
    while not future.done():
        # the node answers get_state between transitions; during one it may not (its executor
        # is busy): an unanswered poll just means "ask again"
        if any(p.done() and p.result().current_state.label == target for p in polls):
            return True
        now = time.monotonic()
        if now >= deadline:
            return None
        if now - asked >= poll_s:
            polls.append(get.call_async(GetState.Request()))
            asked = now
        pause(min(POLL_S, deadline - now))
    return bool(future.result().success)
