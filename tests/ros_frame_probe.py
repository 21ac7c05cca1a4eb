"""Camera-like publisher or subscriber of rgb8 frames, run as a subprocess by DDS tests.

    python tests/ros_frame_probe.py pub TOPIC WIDTH HEIGHT COUNT RATE_HZ
    python tests/ros_frame_probe.py sub TOPIC COUNT TIMEOUT_S

Both use sensor-data QoS (best effort, depth 1), as cameras and perception_node do. Each runs in
its own process, so the Fast DDS profile in ``FASTRTPS_DEFAULT_PROFILES_FILE`` applies to it
(Fast DDS reads that file once, when a process creates its first participant). The publisher
waits for a subscriber (and 0.5 s more for the subscriber to match back) before sending frames
numbered 0..COUNT-1 in ``header.frame_id``; the subscriber prints one JSON line
``{"received": [ids...]}`` after COUNT frames or TIMEOUT_S seconds.
"""

from __future__ import annotations

import json
import sys
import time

import rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image


def publish(node, topic: str, width: int, height: int, count: int, rate_hz: float) -> None:
    """Send ``count`` rgb8 frames of ``width`` x ``height`` at ``rate_hz`` once matched."""
    pub = node.create_publisher(Image, topic, qos_profile_sensor_data)
    deadline = time.monotonic() + 20.0
    while pub.get_subscription_count() == 0:
        if time.monotonic() > deadline:
            sys.exit("no subscriber matched within 20 s")
        time.sleep(0.05)
    time.sleep(0.5)
    msg = Image(width=width, height=height, encoding="rgb8", step=3 * width)
    msg.data = bytes(3 * width * height)
    for i in range(count):
        msg.header.frame_id = str(i)
        pub.publish(msg)
        time.sleep(1.0 / rate_hz)
    time.sleep(0.5)  # let the last frame leave before the participant goes


def subscribe(node, topic: str, count: int, timeout_s: float) -> None:
    """Print the ids of the frames received within ``timeout_s`` (stops after ``count``)."""
    got: list[int] = []
    node.create_subscription(
        Image, topic, lambda m: got.append(int(m.header.frame_id)), qos_profile_sensor_data
    )
    deadline = time.monotonic() + timeout_s
    while len(got) < count and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    print(json.dumps({"received": got}), flush=True)


def main(argv: list[str]) -> None:
    """Entry point: ``pub`` or ``sub`` with the arguments in the module docstring."""
    rclpy.init()
    node = rclpy.create_node(f"frame_probe_{argv[0]}")
    try:
        if argv[0] == "pub":
            publish(node, argv[1], int(argv[2]), int(argv[3]), int(argv[4]), float(argv[5]))
        elif argv[0] == "sub":
            subscribe(node, argv[1], int(argv[2]), float(argv[3]))
        else:
            sys.exit(f"unknown mode {argv[0]!r}; use pub or sub")
    finally:
        node.destroy_node()
        rclpy.shutdown()


if __name__ == "__main__":
    main(sys.argv[1:])
