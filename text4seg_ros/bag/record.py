"""Write a text4seg bag from an image folder, optional ground-truth masks and language goals.

Bag layout (ROS 2 bag, MCAP or sqlite3, CDR; see README section ``bags``):

* ``/goals`` (``text4seg_msgs/Goal``): one standing goal per ``--goal``, ids ``g0``, ``g1``, ...,
  logged at the start time, before the first frame, so a player delivers them first.
* ``/image`` (``sensor_msgs/Image``, ``rgb8``): frame ``i`` (images sorted by file name) stamped
  ``start + (i + 1) / rate`` seconds, ``header.frame_id`` = ``--frame-id``; log time = stamp.
* ``/ground_truth/segmentations`` (``text4seg_msgs/SegmentationArray``): for every frame, the
  same header as its image and one ``Segmentation`` per goal that has ground truth (``mask``
  mono8, 255 = target; ``box`` its tight box; ``empty``; ``score`` 1). The ``k``-th mask folder
  is the ground truth of the ``k``-th goal; masks are matched to images by file stem.

Goals that change from frame to frame (one-shot goals with ``KIND/FRAME/K`` ids, open-vocabulary
label maps as ground truth): :mod:`.record_frames` (``record-images --goals-file``).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from rosbags.rosbag2 import StoragePlugin, Writer

from ..descriptors.geometry import mask_to_box
from ..goals import GoalError, validate_goal
from ..model.types import Goal
from ..prompts import Task
from . import messages as m

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}


@dataclass
class RecordSummary:
    """What :func:`record_images` wrote."""

    bag: Path
    storage: str
    frames: int
    goals: list[Goal]
    ground_truth_goals: list[str]
    start_ns: int
    topics: dict[str, int] = field(default_factory=dict)  # topic -> message count


def list_images(folder: Path) -> list[Path]:
    """Image files of ``folder`` (by suffix, case-insensitive), sorted by name."""
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _masks_by_stem(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in list_images(folder):
        if path.stem in found:
            raise ValueError(f"two masks share the stem {path.stem!r} in {folder}")
        found[path.stem] = path
    return found


def load_mask(path: Path, size: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` bool mask from an image file (any mode; nonzero = target); ``size`` = (H, W)."""
    with Image.open(path) as img:
        array = np.asarray(img.convert("L") if img.mode not in ("L", "P", "1") else img)
    if array.shape[:2] != size:
        raise ValueError(
            f"mask {path} is {array.shape[1]}x{array.shape[0]}, image is {size[1]}x{size[0]}"
        )
    return array != 0


def _goal_msg(goal: Goal, standing: bool = True) -> Any:
    return m.msg_class(m.GOAL_TYPE)(
        id=goal.id,
        text=goal.text,
        task=goal.task.value,
        standing=standing,
        classes=list(goal.classes),
        cancel=False,
    )


def goal_kind(goal: Goal) -> str:
    """What ``goal`` tests: the ``KIND`` of a ``KIND/FRAME/K`` id, else the goal's task."""
    kind, sep, _ = goal.id.partition("/")
    return kind if sep and kind else goal.task.value


def ground_truth_segmentation(goal: Goal, mask: np.ndarray, hdr: Any) -> Any:
    """A ``text4seg_msgs/Segmentation`` carrying ``mask`` as the ground truth of ``goal``
    (open-vocabulary goals: ``mask`` is a label map of class indices into ``goal.classes``,
    1-based; 0 = others)."""
    stamp_ns = m.stamp_to_ns(hdr.stamp)
    if goal.task is Task.OPEN_VOCAB:
        labels = ["others", *goal.classes]
        values = np.asarray(mask)
        if values.min(initial=0) < 0 or values.max(initial=0) >= len(labels):
            raise ValueError(
                f"label map of goal {goal.id!r} has values outside 0..{len(labels) - 1}"
            )
        image = m.labels_to_image(values.astype(np.uint8), stamp_ns, hdr.frame_id)
        mask = values != 0
    else:
        labels = ["others", goal.text]
        image = m.mask_to_image(mask, stamp_ns, hdr.frame_id)
    box = mask_to_box(mask)
    return m.msg_class(m.SEGMENTATION_TYPE)(
        header=hdr,
        goal_id=goal.id,
        goal_text=goal.text,
        task=goal.task.value,
        instance=0,
        label=goal.text,
        mask=image,
        labels=labels,
        empty=box is None,
        box=np.array(box if box is not None else (0, 0, 0, 0), dtype=np.float32),
        score=1.0,
        descriptor="",
        repairs=0,
        model_steps=0,
        latency_s=0.0,
        error="",
    )


def make_goals(texts: Sequence[str], task: str | Task = Task.RES) -> list[Goal]:
    """Standing goals ``g0``, ``g1``, ... for ``texts`` (non-empty, stripped), checked with the
    node's own :func:`~text4seg_ros.goals.validate_goal` (default ``max_goal_chars``), so
    the bag holds no goal the node would reject."""
    task = Task.parse(task)
    if task is Task.OPEN_VOCAB:
        # A class list per goal does not fit one --task flag; the node would reject it anyway.
        raise ValueError(
            "open_vocab goals need a class list; record-images writes res, gres, "
            "rec, instances or reason goals"
        )
    goals = []
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"goal text {i} must be a non-empty string, got {text!r}")
        try:
            goals.append(validate_goal(text, task.value, f"g{i}"))
        except GoalError as exc:
            raise ValueError(
                f"goal text {i} ({text!r}) would be rejected by the node: {exc}"
            ) from None
    return goals


def record_images(
    image_dir: str | Path,
    out_bag: str | Path,
    *,
    goals: Sequence[Goal] = (),
    mask_dirs: Sequence[str | Path] = (),
    rate: float = 10.0,
    storage: str = "mcap",
    frame_id: str = "camera",
    start_ns: int | None = None,
    progress: bool = False,
) -> RecordSummary:
    """Write the images of ``image_dir`` (+ ground truth, goals) to a new bag at ``out_bag``.

    ``rate`` is in frames per second; ``start_ns`` defaults to now (ns since the epoch).
    ``mask_dirs[k]`` holds the ground truth of ``goals[k]``; every image must have a mask there
    (same stem, same size). Raises ``FileNotFoundError`` / ``ValueError`` on bad input; a write
    that fails part way removes the partial bag.
    """
    image_dir, out_bag = Path(image_dir), Path(out_bag)
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {sorted(STORAGES)}, got {storage!r}")
    if not rate > 0:
        raise ValueError(f"rate must be > 0 frames per second, got {rate}")
    if not frame_id:
        raise ValueError("frame_id must not be empty")
    if len(mask_dirs) > len(goals):
        raise ValueError(
            f"{len(mask_dirs)} mask folders but only {len(goals)} goals: each mask "
            "folder is the ground truth of the goal at the same position"
        )
    if len({g.id for g in goals}) != len(goals):
        raise ValueError("goal ids must be unique")
    images = list_images(image_dir)
    if not images:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {image_dir}")
    masks = [_masks_by_stem(Path(d)) for d in mask_dirs]
    for k, found in enumerate(masks):
        missing = [p.name for p in images if p.stem not in found]
        if missing:
            raise ValueError(
                f"mask folder {mask_dirs[k]} lacks masks for {len(missing)} images, "
                f"e.g. {missing[:3]}"
            )
    start_ns = time.time_ns() if start_ns is None else int(start_ns)
    period_ns = round(1e9 / rate)

    writer = Writer(out_bag, version=Writer.VERSION_LATEST, storage_plugin=STORAGES[storage])
    counts = {m.GOALS_TOPIC: 0, m.IMAGE_TOPIC: 0, m.GROUND_TRUTH_TOPIC: 0}
    try:
        _write(writer, images, goals, masks, start_ns, period_ns, frame_id, counts, progress)
    except BaseException:
        # The Writer refuses existing paths, so the folder is ours: leave no half-written bag.
        shutil.rmtree(out_bag, ignore_errors=True)
        raise
    return RecordSummary(
        bag=out_bag,
        storage=storage,
        frames=len(images),
        goals=list(goals),
        ground_truth_goals=[g.id for g in goals[: len(masks)]],
        start_ns=start_ns,
        topics={t: c for t, c in counts.items() if c or t != m.GROUND_TRUTH_TOPIC},
    )


def _write(
    writer: Writer,
    images: list[Path],
    goals: Sequence[Goal],
    masks: list[dict[str, Path]],
    start_ns: int,
    period_ns: int,
    frame_id: str,
    counts: dict[str, int],
    progress: bool,
) -> None:
    with writer:
        conn_goal, conn_img, conn_gt = open_connections(writer, truth=bool(masks))
        for goal in goals:
            writer.write(conn_goal, start_ns, m.serialize(_goal_msg(goal), m.GOAL_TYPE))
            counts[m.GOALS_TOPIC] += 1
        iterator = images
        if progress:
            from tqdm import tqdm

            iterator = tqdm(images, desc="record", unit="frame")
        for i, path in enumerate(iterator):
            stamp = start_ns + (i + 1) * period_ns
            with Image.open(path) as img:
                rgb = np.asarray(img.convert("RGB"))
            header = write_image(writer, conn_img, rgb, stamp, frame_id, counts)
            if conn_gt is not None:
                segs = [
                    ground_truth_segmentation(
                        goal, load_mask(found[path.stem], rgb.shape[:2]), header
                    )
                    for goal, found in zip(goals, masks)
                ]
                write_truth(writer, conn_gt, stamp, header, segs, counts)


def open_connections(writer: Writer, truth: bool) -> tuple[Any, Any, Any]:
    """The goal, image and (when ``truth``, else None) ground-truth connections of a bag."""
    store = m.typestore()
    conn_goal = writer.add_connection(m.GOALS_TOPIC, m.GOAL_TYPE, typestore=store)
    conn_img = writer.add_connection(m.IMAGE_TOPIC, m.IMAGE_TYPE, typestore=store)
    conn_gt = (
        writer.add_connection(m.GROUND_TRUTH_TOPIC, m.SEGMENTATION_ARRAY_TYPE, typestore=store)
        if truth
        else None
    )
    return conn_goal, conn_img, conn_gt


def write_image(
    writer: Writer, conn: Any, rgb: np.ndarray, stamp: int, frame_id: str, counts: dict[str, int]
) -> Any:
    """Write ``(H, W, 3) uint8`` RGB as a ``sensor_msgs/Image`` at ``stamp`` (ns); its header."""
    image_msg = m.rgb_to_image(rgb, stamp, frame_id)
    writer.write(conn, stamp, m.serialize(image_msg, m.IMAGE_TYPE))
    counts[m.IMAGE_TOPIC] += 1
    return image_msg.header


def write_truth(
    writer: Writer, conn: Any, stamp: int, header: Any, segs: list, counts: dict[str, int]
) -> None:
    """Write one frame's ground-truth ``SegmentationArray`` (``segs``, the frame's ``header``)."""
    array = m.msg_class(m.SEGMENTATION_ARRAY_TYPE)(header=header, segmentations=segs)
    writer.write(conn, stamp, m.serialize(array, m.SEGMENTATION_ARRAY_TYPE))
    counts[m.GROUND_TRUTH_TOPIC] += 1
