"""Stopping a decode between model calls: the ``should_stop`` callable and its exception.

A caller that may have to abandon a decode (the node on deactivate, a watchdog) passes
``should_stop``, a cheap callable without arguments, to :func:`~.loop.constrained_generate`
(or ``Segmenter.segment``). The loop calls :func:`check_stop` once per step, before each model
forward call, so a decode stops after at most the forward call already running; it raises
:class:`DecodeCancelled`, which the caller treats as "no answer for this frame", not as a
failure of a goal.
"""

from __future__ import annotations

from collections.abc import Callable

StopCheck = Callable[[], bool]


class DecodeCancelled(Exception):
    """The decode was stopped by its ``should_stop`` callable (not an error of any goal)."""


def check_stop(should_stop: StopCheck | None) -> None:
    """Raise :class:`DecodeCancelled` when ``should_stop`` is given and returns true."""
    if should_stop is not None and should_stop():
        raise DecodeCancelled("decode stopped by its should_stop callable")
