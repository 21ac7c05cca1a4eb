"""Soak (issue 9, item 4; ``slow``, about 6 minutes): the node process with standing goals of all
six tasks (an ``instances`` goal answered box-wise, B-SD) on a 10 Hz camera for 3,000 frames.

The node runs as launch starts it, with the real Segmenter and a tiny random model (grid 8).
Frames vary (random pixels), so the model's answers, the B-SD boxes and the grammar states
reached vary from frame to frame. Checks: resident memory (``rss_mb`` in /diagnostics) grows less
than 5 % from the end of the warm-up (the first 300 frames) to the end; every frame sent is
accounted for (received or missed in transport; every received frame processed, dropped in
favour of a newer one, skipped or rejected, and none failed); every answer holds all six goals
and no error result.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("transformers")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from ros_harness import NodeProcess, RosClient, diag_values, node_command, wait_for  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from text4seg_msgs.msg import Goal, SegmentationArray  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]
NS = "/soak"
FQN = f"{NS}/perception_node"
GRID = 8
FRAMES, WARMUP, RATE_HZ = 3000, 300, 10.0
GOALS = [
    Goal(id="res", text="the red mug", task="res", standing=True),
    Goal(id="gres", text="cups", task="gres", standing=True),
    Goal(id="rec", text="the laptop", task="rec", standing=True),
    Goal(id="ov", task="open_vocab", classes=["cup", "table", "floor"], standing=True),
    Goal(id="inst", text="box", task="instances", standing=True),
    Goal(id="why", text="something to drink from", task="reason", standing=True),
]
FRAME_KEYS = (
    "frames_processed", "frames_dropped", "frames_skipped", "frames_cancelled",
    "images_rejected", "inference_errors",
)  # fmt: skip


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from text4seg_ros.model.tiny import build_tiny_model

    return build_tiny_model("llava", tmp_path_factory.mktemp("tiny") / "llava", grid=GRID)


def test_six_standing_goals_on_a_10hz_camera_for_3000_frames_memory_flat(tiny_model, tmp_path):
    params = {"model_path": tiny_model, "grid": GRID, "diagnostics_period_s": 1.0}
    node = NodeProcess(node_command(NS, params, {}), tmp_path / "node.log")
    client = RosClient("soak_client")
    try:
        diags = client.collect(DiagnosticArray, "/diagnostics")
        answers: list[list[tuple[str, str]]] = []

        def on_answer(msg: SegmentationArray) -> None:  # keep only ids and errors: bounded
            answers.append([(s.goal_id, s.error) for s in msg.segmentations if s.instance == 0])

        client.node.create_subscription(SegmentationArray, f"{NS}/segmentations", on_answer, 50)
        camera = client.node.create_publisher(Image, f"{NS}/image", qos_profile_sensor_data)
        goals = client.node.create_publisher(Goal, f"{NS}/goals", 10)

        def diag() -> dict[str, str]:
            mine = [m for m in list(diags) if m.status and m.status[0].name.startswith(FQN)]
            return diag_values(mine[-1]) if mine else {}

        assert client.state(FQN, timeout=60) == "unconfigured", node.log()[-3000:]
        assert client.transition(FQN, "configure") and client.transition(FQN, "activate")
        assert wait_for(lambda: goals.get_subscription_count() == 1, 10)
        assert wait_for(lambda: camera.get_subscription_count() == 1, 10)
        for g in GOALS:
            goals.publish(g)
        assert wait_for(lambda: diag().get("goals_active") == str(len(GOALS)), 10), diag()
        rng = np.random.default_rng(0)
        rss: list[tuple[int, float]] = []
        t0 = time.monotonic()
        for k in range(FRAMES):
            rgb = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            header = Header(frame_id="soak_camera")
            header.stamp.sec = k
            camera.publish(
                Image(header=header, height=48, width=64, encoding="rgb8", step=192,
                      data=rgb.tobytes())
            )  # fmt: skip
            if k % 100 == 0 and diag().get("rss_mb"):
                rss.append((k, float(diag()["rss_mb"])))
            time.sleep(max(0.0, t0 + (k + 1) / RATE_HZ - time.monotonic()))

        def settled() -> bool:
            d = diag()
            return bool(d) and sum(int(d[key]) for key in FRAME_KEYS) == int(d["frames_received"])

        assert wait_for(settled, 60), diag()
        time.sleep(2.5)  # a fresh /diagnostics after the last frame
        d = diag()
        rss.append((FRAMES, float(d["rss_mb"])))
        after_warmup = next(v for k, v in rss if k >= WARMUP)
        peak = max(v for k, v in rss if k >= WARMUP)
        counts = {key: int(d[key]) for key in (*FRAME_KEYS, "frames_received", "frames_missed")}
        print(
            f"\nsoak: {FRAMES} frames in {time.monotonic() - t0:.0f} s; {counts}; "
            f"{len(answers)} answers; rss after warm-up {after_warmup:.1f} MiB, "
            f"end {rss[-1][1]:.1f}, peak {peak:.1f}; samples {rss}"
        )
        assert node.alive()
        assert counts["frames_received"] + counts["frames_missed"] == FRAMES
        assert counts["inference_errors"] == 0 and counts["frames_cancelled"] == 0
        assert counts["images_rejected"] == 0 and counts["frames_skipped"] == 0
        assert counts["frames_processed"] >= 100, "the model answered many frames"
        assert int(d["goal_errors"]) == 0 and int(d["callback_errors"]) == 0
        assert wait_for(lambda: len(answers) == counts["frames_processed"], 10)
        ids = {g.id for g in GOALS}
        assert all({gid for gid, _ in a} == ids and not any(e for _, e in a) for a in answers)
        assert peak < 1.05 * after_warmup, (after_warmup, peak, rss)
    finally:
        client.close()
        node.stop()
