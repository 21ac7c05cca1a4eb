"""In-process perception node over real DDS with a stand-in Segmenter, and a client beside it.

Used by tests/test_ros_node.py and tests/test_ros_image_flow.py. The node gets its own context
and executor thread on this process's domain (tests/ros_harness.py) and its own namespace.
"""

from __future__ import annotations

import threading

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import qos_profile_sensor_data
from ros_fakes import ColourSegmenter
from ros_harness import DOMAIN_ID, RosClient, diag_values, wait_for
from sensor_msgs.msg import Image
from std_msgs.msg import Header, String
from text4seg_msgs.msg import Goal, SegmentationArray
from text4seg_msgs.srv import ListGoals
from vision_msgs.msg import Detection2DArray

from text4seg_ros.ros.image import array_to_image
from text4seg_ros.ros.node import PerceptionNode


def red_square(h: int = 48, w: int = 64, box=(10, 8, 30, 20)) -> np.ndarray:
    """RGB image, red inside ``box`` (x1, y1, x2, y2 exclusive), grey elsewhere."""
    img = np.full((h, w, 3), 60, dtype=np.uint8)
    x1, y1, x2, y2 = box
    img[y1:y2, x1:x2] = (220, 20, 20)
    return img


def frame(img: np.ndarray, seq: int, encoding: str = "rgb8") -> Image:
    header = Header(frame_id="camera_optical")
    header.stamp.sec, header.stamp.nanosec = 1000 + seq, 7
    return array_to_image(img, encoding, header)


class Harness:
    """Node (own context + executor thread) and a client, on this process's domain."""

    def __init__(
        self,
        ns: str,
        delay_s: float = 0.0,
        params: dict | None = None,
        node_name: str = "perception_node",
    ) -> None:
        self.fake = ColourSegmenter(delay_s)
        self.ctx = Context()
        rclpy.init(context=self.ctx, domain_id=DOMAIN_ID)
        overrides = [rclpy.parameter.Parameter(k, value=v) for k, v in (params or {}).items()]
        self.node = PerceptionNode(
            node_name,
            segmenter_factory=lambda cfg: self.fake,
            namespace=ns,
            context=self.ctx,
            parameter_overrides=[
                rclpy.parameter.Parameter("model_path", value="unused"),
                *overrides,
            ],
        )
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()
        self.client = RosClient(f"client_{ns.strip('/')}_{node_name}")
        self.fqn = self.node.get_fully_qualified_name()
        self.ns = ns
        c = self.client
        self.segs = c.collect(SegmentationArray, f"{ns}/segmentations")
        self.dets = c.collect(Detection2DArray, f"{ns}/detections")
        self.masks = c.collect(Image, f"{ns}/mask")
        self.overlays = c.collect(Image, f"{ns}/overlay")
        self.diags = c.collect(DiagnosticArray, "/diagnostics")
        self.images = c.node.create_publisher(Image, f"{ns}/image", qos_profile_sensor_data)
        self.goals = c.node.create_publisher(Goal, f"{ns}/goals", 10)
        self.goal_text = c.node.create_publisher(String, f"{ns}/goal_text", 10)

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # noqa: BLE001  context shut down under the executor
            pass

    def start(self) -> None:
        assert self.client.transition(self.fqn, "configure")
        assert self.client.transition(self.fqn, "activate")
        assert self.client.state(self.fqn) == "active"
        # the node's subscriptions must be matched before anything is sent
        assert wait_for(lambda: self.images.get_subscription_count() > 0, 10)
        assert wait_for(lambda: self.goals.get_subscription_count() > 0, 10)

    def diag(self, key: str) -> str | None:
        mine = [m for m in list(self.diags) if m.status and m.status[0].name.startswith(self.fqn)]
        return diag_values(mine[-1]).get(key) if mine else None

    def list_goals(self) -> list:
        return self.client.call(ListGoals, f"{self.fqn}/list_goals", ListGoals.Request()).goals

    def close(self) -> None:
        self.client.close()
        self.node._stop_inputs()
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)
        self.thread.join(5.0)
