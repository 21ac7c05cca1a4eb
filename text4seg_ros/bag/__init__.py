"""ROS 2 bag tools on the ``rosbags`` library: record, play and evaluate (CLI ``text4seg-bag``).

* :mod:`.messages`: typestore with our interface packages; image <-> numpy (no rclpy).
* :mod:`.record`: image folder (+ ground-truth masks, goals) -> bag (MCAP or sqlite3).
* :mod:`.reader`: bag -> goals, frames and per-goal ground truth for evaluation.
* :mod:`.play`: bag -> live topics with rclpy (real time or as fast as acknowledged).
* :mod:`.evaluate`, :mod:`.node_eval`: evaluation directly or through ``perception_node``.
* :mod:`.scoring`, :mod:`.report`, :mod:`.plots`: rows, metrics, JSON/Markdown, figures.

Only :mod:`.play`, :mod:`.node_eval` and the CLI's ``play`` import rclpy.
"""
