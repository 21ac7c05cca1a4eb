"""Counters and timings of the perception node, published as ``diagnostic_msgs/DiagnosticArray``.

Keys of the one ``DiagnosticStatus`` (name ``<node name>: perception``), all values strings:

* ``state``: lifecycle state; ``model``: unloaded | loading | loaded | failed: <reason>
* ``frames_received``, ``frames_processed``, ``frames_dropped`` (replaced in the node's
  mailbox before inference), ``frames_missed`` (published by the camera but replaced in the DDS
  queue before the callback took them: gaps in the publication sequence numbers),
  ``frames_skipped`` (no goal active; such frames are never converted), ``frames_cancelled``
  (a decode stopped by deactivate or the stuck-inference watchdog), ``images_rejected``,
  ``goals_accepted``, ``goals_rejected``, ``goals_cancelled``, ``goals_active``,
  ``goals_answered``, ``goal_errors`` (goals that failed alone on a frame and got an error
  result), ``inference_errors`` (frames that failed as a whole), ``worker_restarts`` (dead
  inference thread restarted), ``callback_errors`` (exceptions caught out of executor callbacks)
* every frame received is accounted for: ``frames_received`` = ``frames_processed`` +
  ``frames_dropped`` + ``frames_skipped`` + ``frames_cancelled`` + ``images_rejected`` +
  ``inference_errors`` (+ the frame in flight)
* ``worker_alive``, ``worker_busy_s``: the inference thread's liveness and how long it has been
  on its current frame; ``worker_callback_errors``: exceptions its callbacks raised (caught)
* ``rate_hz``: processed frames per second over the last ``window`` frames
* ``latency_mean_s``, ``latency_p50_s``, ``latency_p95_s``, ``latency_max_s``: frame arrival to
  results ready (measured before publishing, as ``Segmentation.latency_s``), over the same window
* ``rss_mb``: resident memory of the process
* ``last_rejection``: the newest rejection reason
* ``image_publishers``: publishers matched with the camera subscription (while active);
  ``image_silent_s``: seconds since the last frame (or since a publisher matched, or the node
  activated, whichever is latest); ``image_stalls``: times the camera went silent for more
  than ``image_stall_warn_s`` while a publisher was matched (see :class:`ImageFlowMonitor`)

Level: OK; WARN while no model is loaded, after new inference or goal errors, or while the
camera is silent with a publisher matched; ERROR when the model failed to load, or the inference
thread died or is stuck (the node passes ``error``).
"""

from __future__ import annotations

import resource
import threading
import time
from collections import deque
from collections.abc import Mapping

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue


def rss_mb() -> float:
    """Resident set size of this process in MiB (from /proc; peak RSS where /proc is absent)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * resource.getpagesize() / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class NodeStats:
    """Thread-safe counters (executor and inference threads both write)."""

    COUNTERS = (
        "frames_received",
        "frames_processed",
        "frames_dropped",
        "frames_missed",
        "frames_skipped",
        "frames_cancelled",
        "images_rejected",
        "goals_accepted",
        "goals_rejected",
        "goals_cancelled",
        "goals_answered",
        "goal_errors",
        "inference_errors",
        "image_stalls",
        "worker_restarts",
        "callback_errors",
    )

    def __init__(self, window: int = 100) -> None:
        self._lock = threading.Lock()
        self.counts = dict.fromkeys(self.COUNTERS, 0)
        self.latencies: deque[float] = deque(maxlen=window)
        self.done_times: deque[float] = deque(maxlen=window)
        self.last_rejection = ""
        self._errors_at_last_report = 0

    def add(self, name: str, n: int = 1) -> None:
        """Increase counter ``name`` by ``n``."""
        with self._lock:
            self.counts[name] += n

    def reject(self, name: str, reason: str) -> None:
        """Count a rejection (``images_rejected`` or ``goals_rejected``) and keep its reason."""
        with self._lock:
            self.counts[name] += 1
            self.last_rejection = reason

    def processed(self, latency_s: float) -> None:
        """Record one processed frame and its latency in seconds."""
        with self._lock:
            self.counts["frames_processed"] += 1
            self.latencies.append(latency_s)
            self.done_times.append(time.monotonic())

    def values(self) -> dict[str, float | int | str]:
        """A consistent copy of all counters and derived timings."""
        with self._lock:
            out: dict[str, float | int | str] = dict(self.counts)
            lat = np.array(self.latencies, dtype=np.float64)
            times = list(self.done_times)
            out["last_rejection"] = self.last_rejection
        rate = 0.0
        if len(times) >= 2 and times[-1] > times[0]:
            rate = (len(times) - 1) / (times[-1] - times[0])
        out["rate_hz"] = rate
        if lat.size:
            out["latency_mean_s"] = float(lat.mean())
            out["latency_p50_s"] = float(np.percentile(lat, 50))
            out["latency_p95_s"] = float(np.percentile(lat, 95))
            out["latency_max_s"] = float(lat.max())
        out["rss_mb"] = rss_mb()
        return out

    def status(
        self,
        name: str,
        hardware_id: str,
        state: str,
        model: str,
        goals_active: int,
        extra: Mapping[str, float | int | str] | None = None,
        warning: str = "",
        error: str = "",
    ) -> DiagnosticStatus:
        """The node's ``DiagnosticStatus`` (see the module docstring for keys and levels).

        ``extra`` adds key/value pairs; a non-empty ``warning`` makes a loaded, error-free
        node report WARN with that message, a non-empty ``error`` ERROR.
        """
        values = self.values()
        values = {
            "state": state, "model": model, "goals_active": goals_active, **values,
            **(extra or {}),
        }  # fmt: skip
        errors = int(values["inference_errors"]) + int(values["goal_errors"])
        new_errors = errors > self._errors_at_last_report
        self._errors_at_last_report = errors
        if model.startswith("failed"):
            level, message = DiagnosticStatus.ERROR, f"model {model}"
        elif error:
            level, message = DiagnosticStatus.ERROR, error
        elif model != "loaded":
            level, message = DiagnosticStatus.WARN, f"model {model}"
        elif new_errors:
            level, message = DiagnosticStatus.WARN, "inference errors since the last report"
        elif warning:
            level, message = DiagnosticStatus.WARN, warning
        else:
            level, message = DiagnosticStatus.OK, f"{state}, {values['rate_hz']:.2f} Hz"
        status = DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id)
        for key, value in values.items():
            text = f"{value:.6g}" if isinstance(value, float) else str(value)
            status.values.append(KeyValue(key=key, value=text))
        return status

    def array(self, stamp, **kwargs) -> DiagnosticArray:
        """A ``DiagnosticArray`` stamped ``stamp`` holding :meth:`status` (same arguments)."""
        out = DiagnosticArray()
        out.header.stamp = stamp
        out.status.append(self.status(**kwargs))
        return out


class ImageFlowMonitor:
    """Notices a camera subscription that is matched with a publisher but receives nothing.

    Typical causes: frames above ~0.5 MB sent best effort between processes with Fast DDS's
    default 512 kB shared-memory segment (every frame loses a fragment; see
    config/fastdds_large_frames.xml), or a camera that is matched but publishes nothing.
    An incompatible QoS is not this case: such a publisher never matches (the node logs that
    separately). Times are ``time.monotonic()`` seconds; the node calls :meth:`frame` from the
    image callback and :meth:`check` from its diagnostics timer (both on the executor thread).
    """

    def __init__(self) -> None:
        self.since: float | None = None  # silence measured from here; None: not subscribed
        self.publishers = 0
        self.stalled = False

    def start(self, now: float) -> None:
        """The image subscription was (re)created at ``now``."""
        self.since, self.publishers, self.stalled = now, 0, False

    def stop(self) -> None:
        """The image subscription is gone: nothing to watch."""
        self.since, self.publishers, self.stalled = None, 0, False

    def frame(self, now: float) -> None:
        """A frame arrived at ``now``."""
        if self.since is not None:
            self.since, self.stalled = now, False

    def silent_s(self, now: float) -> float:
        """Seconds without a frame while a publisher was matched (0 when not watching)."""
        if self.since is None or self.publishers == 0:
            return 0.0
        return max(0.0, now - self.since)

    def check(self, now: float, publishers: int, limit_s: float, busy: bool = False) -> bool:
        """Update with the matched publisher count; True exactly when a new stall begins.

        A stall is ``publishers > 0`` and more than ``limit_s`` seconds without a frame since
        the later of: the last frame, the subscription's start, the first publisher matching,
        the last check while ``busy`` (the node was still working on a frame). A player that
        waits for each answer before sending the next frame (``text4seg-bag eval
        --through-node``) is silent for as long as inference takes: that is not a transport
        loss. Frames lost in transport leave the node idle, so they still show.
        """
        if self.since is None:
            return False
        if busy or publishers == 0 or self.publishers == 0:
            self.since = now  # silence counts only while someone could publish and is not waiting
            self.stalled = False
        self.publishers = publishers
        if publishers == 0 or now - self.since <= limit_s:  # busy: since is now
            self.stalled = False
            return False
        began = not self.stalled
        self.stalled = True
        return began

    def stall_log(self, topic: str, limit_s: float) -> str:
        """The log line for a stall that began on ``topic`` (what to do about it)."""
        return (
            f"no camera frame on {topic} for {limit_s:g} s although {self.publishers} "
            "publisher(s) matched: frames are lost in transport. Large best-effort frames need "
            "the Fast DDS profile config/fastdds_large_frames.xml on the camera and the node "
            "(launch argument dds_profile), or set image_qos_reliability: reliable"
        )

    def warning(self, now: float) -> str:
        """The diagnostics warning while stalled, else ``""``."""
        if not self.stalled:
            return ""
        return (
            f"no camera frame for {self.silent_s(now):.0f} s with {self.publishers} "
            "publisher(s) matched (large-frame transport or QoS?)"
        )
