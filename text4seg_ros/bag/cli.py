"""``text4seg-bag``: write, play and evaluate text4seg bags (see README section ``bags``).

Subcommands::

    text4seg-bag record-images IMAGE_DIR OUT_BAG [--masks MASK_DIR ...] [--goal TEXT ...]
                               [--task res] [--rate 10] [--format mcap|sqlite3] [--frame-id camera]
    text4seg-bag record-images IMAGE_DIR OUT_BAG --goals-file FRAMES.jsonl [--rate 10] ...
    text4seg-bag play BAG [--rate 1.0 | --as-fast-as-acked] [--remap FROM:=TO ...]
    text4seg-bag eval BAG [--model DIR] [--direct | --through-node] [--out DIR]

Exit status: 0 on success, 2 on bad arguments or input, 1 when the node or model fails at run
time (with a message on stderr). ``eval`` also exits 1 (after writing the report) when any
(frame, goal) pair failed with status ``error`` (the Segmenter raised, or a wrong-size mask) or
when no pair was answered at all; dropped frames and missing goals alone do not fail it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from . import messages as m


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="text4seg-bag", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    rec = sub.add_parser("record-images", help="image folder (+ masks, goals) -> ROS 2 bag")
    rec.add_argument("image_dir", type=Path)
    rec.add_argument("out_bag", type=Path)
    rec.add_argument(
        "--masks",
        type=Path,
        action="append",
        default=[],
        metavar="MASK_DIR",
        help="ground-truth masks (same file stem as the image, nonzero = target); "
        "the k-th --masks belongs to the k-th --goal",
    )
    rec.add_argument(
        "--goal",
        action="append",
        default=[],
        metavar="TEXT",
        help="a standing goal (repeatable); ids g0, g1, ... in order",
    )
    rec.add_argument("--task", default="res", help="task of every goal (default res)")
    rec.add_argument(
        "--goals-file",
        type=Path,
        default=None,
        metavar="FRAMES.jsonl",
        help="goals and ground truth per frame (JSON Lines, one frame a line; see "
        "text4seg_ros.bag.record_frames); instead of --goal/--masks",
    )
    rec.add_argument("--rate", type=_positive, default=10.0, help="frames per second (10)")
    rec.add_argument("--format", choices=("mcap", "sqlite3"), default="mcap")
    rec.add_argument("--frame-id", default="camera", help="header.frame_id of every frame")
    rec.add_argument(
        "--start-time",
        type=float,
        default=None,
        help="stamp of the goals in seconds since the epoch (default: now)",
    )

    play = sub.add_parser("play", help="bag -> live topics (rclpy)")
    play.add_argument("bag", type=Path)
    pace = play.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=_positive, default=1.0, help="real-time factor (1.0)")
    pace.add_argument(
        "--as-fast-as-acked",
        action="store_true",
        help="send the next image when the node answered the previous one",
    )
    play.add_argument("--ack-topic", default=m.SEGMENTATIONS_TOPIC)
    play.add_argument(
        "--ack-timeout",
        type=_positive,
        default=30.0,
        help="seconds to wait for an answer before counting the frame dropped",
    )
    play.add_argument("--remap", action="append", default=[], metavar="FROM:=TO")
    play.add_argument("--topics", nargs="+", default=None, help="bag topics to play (all)")
    play.add_argument(
        "--wait-subscribers",
        type=float,
        default=5.0,
        help="seconds to wait for subscribers of the image and goals topics",
    )

    ev = sub.add_parser("eval", help="bag with goals and ground truth -> metrics and report")
    ev.add_argument("bag", type=Path)
    ev.add_argument(
        "--model",
        default=None,
        help="model directory (Segmenter.from_pretrained); default: the shipped demo model",
    )
    how = ev.add_mutually_exclusive_group()
    how.add_argument("--direct", action="store_true", help="Segmenter in this process (default)")
    how.add_argument(
        "--through-node",
        action="store_true",
        help="start perception_node and play the bag to it as fast as it answers",
    )
    ev.add_argument("--out", type=Path, default=None, help="report folder (default BAG_eval)")
    ev.add_argument("--backbone", default=None, help="backbone name (default: from the model)")
    ev.add_argument("--device", default="cpu")
    ev.add_argument(
        "--grid",
        type=int,
        default=None,
        help="descriptor grid size G (default: the model's, from its text4seg.json, else 16)",
    )
    ev.add_argument(
        "--engine",
        default="torch",
        choices=["torch", "onnxruntime", "tensorrt"],
        help="decode engine (torch; onnxruntime/tensorrt run the exported ONNX graphs)",
    )
    ev.add_argument(
        "--params-file",
        type=Path,
        default=None,
        help="node parameters (--through-node; default config/perception.yaml)",
    )
    ev.add_argument(
        "--ack-timeout",
        type=_positive,
        default=60.0,
        help="--through-node: seconds per frame before it counts as dropped",
    )
    ev.add_argument(
        "--namespace",
        default="",
        help="--through-node: ROS namespace of the node and its topics (root)",
    )
    ev.add_argument("--montage", type=int, default=8, help="frames in the overlay montage (8)")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _record(args: argparse.Namespace) -> int:
    from .record import make_goals, record_images
    from .record_frames import read_goals_file, record_frames

    start_ns = None if args.start_time is None else round(args.start_time * 1e9)
    common = dict(
        rate=args.rate, storage=args.format, frame_id=args.frame_id, start_ns=start_ns,
        progress=True,
    )  # fmt: skip
    if args.goals_file is not None:
        if args.goal or args.masks:
            raise ValueError("--goals-file replaces --goal and --masks: give one or the other")
        summary = record_frames(
            read_goals_file(args.goals_file, args.image_dir), args.out_bag, **common
        )
    else:
        summary = record_images(
            args.image_dir,
            args.out_bag,
            goals=make_goals(args.goal, args.task),
            mask_dirs=args.masks,
            **common,
        )
    topics = ", ".join(f"{t} x{n}" for t, n in summary.topics.items())
    print(f"wrote {summary.bag} ({summary.storage}): {summary.frames} frames; {topics}")
    return 0


def _play(args: argparse.Namespace) -> int:
    import rclpy

    from .play import BagPlayer, parse_remaps

    remap = parse_remaps(args.remap)
    rclpy.init()
    try:
        node = rclpy.create_node("text4seg_bag_player")
        player = BagPlayer(node, args.bag, topics=args.topics, remap=remap)
        try:
            missing = player.wait_for_subscribers(args.wait_subscribers)
            if missing:
                print(
                    f"warning: no subscriber on {missing} after {args.wait_subscribers} s; "
                    "playing anyway",
                    file=sys.stderr,
                )
            if args.as_fast_as_acked:
                player.subscribe_acks(args.ack_topic)
            stats = player.play(
                rate=None if args.as_fast_as_acked else args.rate,
                ack_timeout=args.ack_timeout,
                progress=True,
            )
        finally:
            player.close()
            node.destroy_node()
    except KeyboardInterrupt:
        return 130
    finally:
        rclpy.try_shutdown()
    sent = ", ".join(f"{t} x{n}" for t, n in stats.published.items())
    print(f"played {args.bag} in {stats.wall_s:.2f} s: {sent}")
    if args.as_fast_as_acked:
        print(f"frames {stats.frames}, answered {stats.acked}, dropped {len(stats.dropped_stamps)}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from ..model.meta import resolve_model
    from .evaluate import run_eval

    if args.grid is not None and not 2 <= args.grid <= 64:
        raise ValueError(f"--grid must be in 2..64, got {args.grid}")
    model = resolve_model(args.model)

    out = args.out or args.bag.with_name(args.bag.name + "_eval")
    mode = "node" if args.through_node else "direct"
    seg_kwargs = {
        "backbone": args.backbone,
        "device": args.device,
        "grid": args.grid,
        "engine": args.engine,
    }
    node_kwargs = {
        "params_file": args.params_file,
        "ack_timeout": args.ack_timeout,
        "namespace": args.namespace,
        "backbone": args.backbone,
        "device": args.device,
        "grid": args.grid,
        "engine": args.engine,
    }
    report = run_eval(
        args.bag,
        out,
        model=model,
        mode=mode,
        segmenter_kwargs=seg_kwargs,
        node_kwargs=node_kwargs,
        montage=args.montage,
        progress=not args.no_progress,
    )
    return eval_exit_status(report)


def eval_exit_status(report: dict) -> int:
    """1 when a pair of ``report`` failed with status ``error`` or no pair was answered, else 0."""
    errors = sum(row["status"] == "error" for row in report["rows"])
    if errors or not report["answered_pairs"]:
        print(
            f"text4seg-bag eval: failed: {errors} pairs with status error, "
            f"{report['answered_pairs']} of {report['pairs_in_bag']} answered",
            file=sys.stderr,
        )
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``text4seg-bag`` console script."""
    args = build_parser().parse_args(argv)
    handlers = {"record-images": _record, "play": _play, "eval": _eval}
    try:
        return handlers[args.command](args)
    except (FileNotFoundError, ValueError, TypeError) as exc:
        print(f"text4seg-bag {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, TimeoutError) as exc:  # the node or the model failed at run time
        print(f"text4seg-bag {args.command}: failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
