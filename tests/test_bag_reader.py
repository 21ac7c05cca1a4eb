"""EvalBag reads the goal set as the node builds it: same ids, same validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer

from text4seg_ros.bag import messages as m
from text4seg_ros.bag.reader import EvalBag

START = 1_763_000_000_000_000_000


def goal_bag(path: Path, goals: list[dict]) -> Path:
    """A bag with the goal messages ``goals`` (Goal fields) and one 8 x 8 frame."""
    store = m.typestore()
    with Writer(path, version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.MCAP) as w:
        conn_goal = w.add_connection(m.GOALS_TOPIC, m.GOAL_TYPE, typestore=store)
        conn_img = w.add_connection(m.IMAGE_TOPIC, m.IMAGE_TYPE, typestore=store)
        for k, fields in enumerate(goals):
            full = {"id": "", "text": "", "task": "res", "standing": True, "classes": []}
            full["cancel"] = False
            full.update(fields)
            msg = m.msg_class(m.GOAL_TYPE)(**full)
            w.write(conn_goal, START + k, m.serialize(msg, m.GOAL_TYPE))
        image = m.rgb_to_image(np.zeros((8, 8, 3), np.uint8), START + 10**9, "camera")
        w.write(conn_img, START + 10**9, m.serialize(image, m.IMAGE_TYPE))
    return path


def read_goals(path: Path) -> list[tuple[str, str]]:
    with EvalBag(path) as bag:
        return [(g.id, g.text) for g in bag.goals]


def test_an_unnamed_goal_after_a_cancel_gets_a_fresh_id(tmp_path: Path) -> None:
    bag = goal_bag(tmp_path / "bag", [
        {"text": "a"}, {"text": "b"}, {"id": "g1", "cancel": True}, {"text": "c"},
    ])  # fmt: skip
    # The node names them g1, g2, then g3 (it never reuses g2 while b is active).
    assert read_goals(bag) == [("g2", "b"), ("g3", "c")]


def test_unnamed_goals_after_named_ones_get_the_nodes_ids(tmp_path: Path) -> None:
    bag = goal_bag(tmp_path / "bag", [{"id": "door", "text": "the door"}, {"text": "a cup"}])
    assert read_goals(bag) == [("door", "the door"), ("g1", "a cup")]


def test_goals_the_node_rejects_are_left_out(tmp_path: Path) -> None:
    bag = goal_bag(tmp_path / "bag", [
        {"id": "bad", "text": "others"}, {"id": "ok", "text": "  a cup "},
        {"id": "task", "text": "x", "task": "dance"},
    ])  # fmt: skip
    with EvalBag(bag) as reader:
        assert [(g.id, g.text) for g in reader.goals] == [("ok", "a cup")]
        assert [gid for gid, _ in reader.rejected_goals] == ["bad", "task"]
