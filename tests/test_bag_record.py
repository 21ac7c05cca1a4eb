"""text4seg-bag record-images: image folders (+ masks, goals) -> ROS 2 bags, MCAP and sqlite3."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rosbags.rosbag2 import Reader

from text4seg_ros.bag import messages as m
from text4seg_ros.bag.cli import main
from text4seg_ros.bag.reader import EvalBag
from text4seg_ros.bag.record import make_goals, record_images
from text4seg_ros.prompts import Task

START = 1_763_000_000_000_000_000


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path, list[np.ndarray], list[np.ndarray]]:
    """Four 24 x 40 RGB PNGs and a mask each (a moving box; frame 2 empty)."""
    rng = np.random.default_rng(1)
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    rgbs, gts = [], []
    for i in range(4):
        rgb = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
        gt = np.zeros((24, 40), np.uint8)
        if i != 2:
            gt[3 + i : 10 + i, 5 + 2 * i : 20 + 2 * i] = 255
        Image.fromarray(rgb).save(images / f"{i:05d}.png")
        Image.fromarray(gt).save(masks / f"{i:05d}.png")
        rgbs.append(rgb)
        gts.append(gt != 0)
    (images / "notes.txt").write_text("not an image")
    return images, masks, rgbs, gts


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_round_trip(tmp_path: Path, folders, storage: str) -> None:
    images, masks, rgbs, gts = folders
    goals = make_goals(["the box", "the sky"])
    summary = record_images(
        images,
        tmp_path / "bag",
        goals=goals,
        mask_dirs=[masks],
        rate=20.0,
        storage=storage,
        frame_id="cam_optical",
        start_ns=START,
    )
    assert summary.frames == 4 and summary.ground_truth_goals == ["g0"]
    with Reader(tmp_path / "bag") as reader:
        files = [p.suffix for p in (tmp_path / "bag").iterdir()]
        assert (".mcap" if storage == "mcap" else ".db3") in files
        types = {c.topic: c.msgtype for c in reader.connections}
        assert types == {
            m.GOALS_TOPIC: m.GOAL_TYPE,
            m.IMAGE_TOPIC: m.IMAGE_TYPE,
            m.GROUND_TRUTH_TOPIC: m.SEGMENTATION_ARRAY_TYPE,
        }
        by_topic: dict[str, list] = {t: [] for t in types}
        for conn, log_ns, data in reader.messages():
            by_topic[conn.topic].append((log_ns, m.deserialize(data, conn.msgtype)))
    goal_msgs = [msg for _, msg in by_topic[m.GOALS_TOPIC]]
    assert [(g.id, g.text, g.task, g.standing) for g in goal_msgs] == [
        ("g0", "the box", "res", True),
        ("g1", "the sky", "res", True),
    ]
    assert all(log == START for log, _ in by_topic[m.GOALS_TOPIC])
    frames = by_topic[m.IMAGE_TOPIC]
    assert [log for log, _ in frames] == [START + (i + 1) * 50_000_000 for i in range(4)]
    for i, (log, msg) in enumerate(frames):
        assert m.stamp_to_ns(msg.header.stamp) == log and msg.header.frame_id == "cam_optical"
        np.testing.assert_array_equal(m.image_to_rgb(msg), rgbs[i])
    truth = by_topic[m.GROUND_TRUTH_TOPIC]
    assert len(truth) == 4
    for i, (log, array) in enumerate(truth):
        assert m.stamp_to_ns(array.header.stamp) == log == frames[i][0]
        (seg,) = array.segmentations
        assert (seg.goal_id, seg.goal_text, seg.empty) == ("g0", "the box", i == 2)
        np.testing.assert_array_equal(m.image_to_mask(seg.mask), gts[i])
        expected_box = [0, 0, 0, 0] if i == 2 else [5 + 2 * i, 3 + i, 20 + 2 * i, 10 + i]
        assert seg.box.tolist() == expected_box

    with EvalBag(tmp_path / "bag") as bag:
        assert [g.id for g in bag.goals] == ["g0", "g1"] and bag.pairs == 8
        read = list(bag.frames())
    assert [f.index for f in read] == [0, 1, 2, 3]
    for f, rgb, gt in zip(read, rgbs, gts):
        np.testing.assert_array_equal(f.rgb, rgb)
        assert list(f.ground_truth) == ["g0"]
        np.testing.assert_array_equal(f.ground_truth["g0"], gt)


def test_cli_records_blackswan_in_both_formats(tmp_path: Path, data_dir: Path, capsys) -> None:
    swan = data_dir / "davis_blackswan"
    for fmt in ("mcap", "sqlite3"):
        out = tmp_path / f"swan_{fmt}"
        rc = main(
            [
                "record-images",
                str(swan / "JPEGImages"),
                str(out),
                "--masks",
                str(swan / "Annotations"),
                "--goal",
                "the black swan",
                "--format",
                fmt,
            ]
        )
        assert rc == 0
        assert f"wrote {out} ({fmt}): 50 frames" in capsys.readouterr().out
        with EvalBag(out) as bag:
            assert bag.frame_count == 50 and bag.pairs == 50 and bag.ground_truth_goals == ["g0"]
            first = next(bag.frames())
        assert first.rgb.shape == (480, 854, 3)
        share = first.ground_truth["g0"].mean()
        assert 0.05 < share < 0.2  # the README says about 10 % of pixels are swan


def test_bad_input_fails_clearly_and_leaves_no_bag(tmp_path: Path, folders) -> None:
    images, masks, _, _ = folders
    goal = make_goals(["x"])
    with pytest.raises(ValueError, match="only 0 goals"):
        record_images(images, tmp_path / "a", mask_dirs=[masks])
    with pytest.raises(ValueError, match="storage must be one of"):
        record_images(images, tmp_path / "a", storage="bag")
    with pytest.raises(ValueError, match="rate must be > 0"):
        record_images(images, tmp_path / "a", rate=0)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        record_images(tmp_path / "nope", tmp_path / "a")
    with pytest.raises(ValueError, match="non-empty string"):
        make_goals(["  "])
    with pytest.raises(ValueError, match="unknown task"):
        make_goals(["x"], task="dance")
    with pytest.raises(ValueError, match="open_vocab goals need a class list"):
        make_goals(["x"], task="open_vocab")
    assert [g.task for g in make_goals(["x", "y"], task="GRES")] == [Task.GRES, Task.GRES]
    # Goals the node's validate_goal refuses are refused here too, not recorded.
    for bad in ("others", "a | b", "cup *3", "line\nbreak", "x" * 257):
        with pytest.raises(ValueError, match="would be rejected by the node"):
            make_goals(["fine", bad])
    (masks / "00001.png").unlink()
    with pytest.raises(ValueError, match=r"lacks masks for 1 images, e.g. \['00001.png'\]"):
        record_images(images, tmp_path / "a", goals=goal, mask_dirs=[masks])
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(masks / "00001.png")
    with pytest.raises(ValueError, match="is 5x5, image is 40x24"):
        record_images(images, tmp_path / "a", goals=goal, mask_dirs=[masks])
    assert not (tmp_path / "a").exists()  # the partial bag was removed


def test_cli_reports_errors_with_exit_status_2(tmp_path: Path, capsys) -> None:
    rc = main(["record-images", str(tmp_path / "missing"), str(tmp_path / "out")])
    assert rc == 2
    assert "record-images: error: image folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["record-images", str(tmp_path), str(tmp_path / "o"), "--rate", "-1"])
