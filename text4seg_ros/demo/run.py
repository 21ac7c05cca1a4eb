"""``make demo`` (``python -m text4seg_ros.demo``): the whole product on recorded data.

Steps, each with a progress bar, all in ``--out`` (default ``demo_out/``):

1. ``scenes/``: held-out tabletop scenes, their ground truth and goals file (:mod:`.scenes`);
2. ``tabletop.bag``: ``text4seg-bag record-images scenes tabletop.bag --goals-file ...``;
3. ``tabletop/``: ``text4seg-bag eval tabletop.bag --through-node --params-file P``: a
   ``perception_node`` process with the model, configured from ``P``, the params file the launch
   file uses (``share/text4seg_ros/config/perception.yaml``), fed the bag over DDS;
4. ``davis.bag`` and ``davis/``: the same for the DAVIS blackswan frames of
   ``../shared/data/davis_blackswan`` (real camera frames, goal "the black swan");
5. ``report.md``: per-kind metrics, the bars of issue 8, calls against tokens per goal, wall
   times and figures (:mod:`.summary`); the per-kind table is printed too.

Exit status: 0 when every step ran (bars not met are reported, not failures), 1 when a step
failed, 2 on bad arguments or missing input (e.g. no model).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ..bag import cli as bag_cli
from ..bag.report import per_kind_table
from ..model.meta import REPO, default_model_dir, resolve_model, resolve_refiner
from .scenes import GOALS_FILE, write_heldout_scenes
from .summary import bars_table, write_summary

DAVIS = REPO.parent / "shared" / "data" / "davis_blackswan"
DAVIS_GOAL = "the black swan"
NAMESPACE = "/text4seg_demo"  # apart from other nodes on the ROS domain


def launch_params_file() -> Path:
    """The params file the launch file uses: ``<share of text4seg_ros>/config/perception.yaml``
    (found through the ament index, as ``FindPackageShare`` does), else the source tree's."""
    try:
        from ament_index_python.packages import get_package_share_directory

        path = Path(get_package_share_directory("text4seg_ros")) / "config" / "perception.yaml"
        if path.is_file():
            return path
    except (ImportError, LookupError, ValueError, OSError):  # OSError: no AMENT_PREFIX_PATH
        pass
    from ..bag.node_eval import default_params_file

    return default_params_file()


def refiner_in_use(params: Path, model: Path) -> str:
    """What the node refines masks with: the params file's ``refiner`` (the last node entry
    that sets it; ``auto``, the default, is the refiner the model names in text4seg.json)."""
    import yaml

    value = "auto"
    doc = yaml.safe_load(params.read_text()) or {}
    for entry in doc.values() if isinstance(doc, dict) else ():
        if isinstance(entry, dict):
            value = (entry.get("ros__parameters") or {}).get("refiner", value)
    if value != "auto":
        return f"`{value}` (the params file)"
    return f"`{resolve_refiner(model, value)}` (`auto` in the params file: the one the model names)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m text4seg_ros.demo", description=__doc__.split("\n")[0]
    )
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (demo_out)")
    p.add_argument(
        "--model", default=None, help="model directory (default: the shipped demo model)"
    )
    p.add_argument("--frames", type=int, default=40, help="held-out tabletop frames (40)")
    p.add_argument("--first", type=int, default=0, help="first held-out scene index (0)")
    p.add_argument("--size", type=int, default=128, help="scene side in pixels (128)")
    p.add_argument("--davis", type=Path, default=DAVIS, help="DAVIS blackswan folder")
    p.add_argument(
        "--davis-frames", type=int, default=0, help="DAVIS frames, evenly spaced (0: all 50)"
    )
    p.add_argument("--no-davis", action="store_true", help="skip the real-camera run")
    p.add_argument("--params-file", type=Path, default=None, help="node parameters (launch's)")
    p.add_argument("--device", default="cpu", help="torch device of the node (cpu)")
    # Just above the node's inference_timeout_s (30 s in config/perception.yaml): a frame the
    # node cancels gets no answer, and waiting longer for it would only add to the wall time.
    p.add_argument("--ack-timeout", type=float, default=35.0, help="seconds per frame (35)")
    p.add_argument("--namespace", default=NAMESPACE, help=f"node namespace ({NAMESPACE})")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _step(number: int, text: str) -> None:
    print(f"\n[{number}/5] {text}", flush=True)


def _bag_cli(argv: list[str], what: str) -> None:
    rc = bag_cli.main(argv)
    if rc != 0:
        raise RuntimeError(f"{what} failed: text4seg-bag {' '.join(argv[:1])} exit status {rc}")


def davis_subset(davis: Path, out: Path, count: int) -> Path:
    """``davis`` itself (``count`` 0 or all), else ``out`` with ``count`` evenly spaced frames
    and their masks linked (symlinks: the data stays in ../shared/data)."""
    images = sorted((davis / "JPEGImages").glob("*.jpg"))
    if count <= 0 or count >= len(images):
        return davis
    picked = [images[round(i * (len(images) - 1) / max(count - 1, 1))] for i in range(count)]
    for sub in ("JPEGImages", "Annotations"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for image in picked:
        (out / "JPEGImages" / image.name).symlink_to(image.resolve())
        mask = davis / "Annotations" / f"{image.stem}.png"
        (out / "Annotations" / mask.name).symlink_to(mask.resolve())
    return out


def _is_shipped(model: Path) -> bool:
    """True when ``model`` is the shipped demo model."""
    try:
        return model.resolve() == default_model_dir().resolve()
    except FileNotFoundError:
        return False


def _eval_argv(
    args: argparse.Namespace, bag: Path, out: Path, model: Path, params: Path
) -> list[str]:
    argv = ["eval", str(bag), "--through-node", "--model", str(model), "--out", str(out)]
    argv += ["--params-file", str(params), "--device", args.device, "--namespace", args.namespace]
    argv += ["--ack-timeout", str(args.ack_timeout)]
    return argv + (["--no-progress"] if args.no_progress else [])


def cpu_threads(device: str) -> str | None:
    """On the CPU, run the node with one intra-op thread (``OMP_NUM_THREADS=1``, inherited by the
    node process) unless the environment sets a count; returns the count used (None on a GPU).

    Measured here on the 2-core machine with other jobs running: one instances goal of the demo
    model (173 sequential calls) took 1.5 s with one thread and 14.3 s with torch's default two,
    whose threads wait on each other when another process holds a core.
    """
    if device != "cpu":
        return None
    return os.environ.setdefault("OMP_NUM_THREADS", "1")


def run(args: argparse.Namespace) -> dict:
    """Run every step (see module doc); returns the tabletop report dict."""
    threads = cpu_threads(args.device)
    model = resolve_model(args.model)
    if not (model / "config.json").is_file():
        raise FileNotFoundError(f"{model} is not a model directory (no config.json)")
    params = args.params_file or launch_params_file()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    for name in ("scenes", "tabletop.bag", "tabletop", "davis.bag", "davis", "davis_frames"):
        shutil.rmtree(out / name, ignore_errors=True)  # ours from a previous run
    timings: dict[str, float] = {}
    start = time.monotonic()

    _step(1, f"held-out tabletop scenes ({args.frames} frames) -> {out / 'scenes'}")
    write_heldout_scenes(
        out / "scenes", args.frames, first=args.first, size=(args.size, args.size),
        progress=not args.no_progress,
    )  # fmt: skip
    _step(2, "text4seg-bag record-images --goals-file -> tabletop.bag")
    scenes = out / "scenes"
    _bag_cli(
        ["record-images", str(scenes), str(out / "tabletop.bag"), "--goals-file",
         str(scenes / GOALS_FILE)],
        "recording the tabletop bag",
    )  # fmt: skip
    timings["scenes and bag"] = time.monotonic() - start
    _step(3, f"text4seg-bag eval --through-node (model {model}, params {params}, "
             f"OMP_NUM_THREADS={threads or 'unset'})")  # fmt: skip
    t = time.monotonic()
    argv = _eval_argv(args, out / "tabletop.bag", out / "tabletop", model, params)
    rc = bag_cli.main([*argv, "--montage", "12"])  # 12 tiles: the nine goal kinds show up
    report_path = out / "tabletop" / "report.json"
    if not report_path.is_file():
        raise RuntimeError(f"the tabletop evaluation wrote no report (exit status {rc})")
    tabletop = json.loads(report_path.read_text())
    timings["tabletop through the node"] = time.monotonic() - t

    davis, note = None, ""
    if args.no_davis:
        note = "Skipped (--no-davis)."
    elif not (args.davis / "JPEGImages").is_dir():
        note = f"Skipped: {args.davis} is missing (the DAVIS frames live in ../shared/data)."
    else:
        _step(4, f"DAVIS blackswan frames ({args.davis}) through the node")
        t = time.monotonic()
        davis_dir = davis_subset(args.davis, out / "davis_frames", args.davis_frames)
        _bag_cli(
            ["record-images", str(davis_dir / "JPEGImages"), str(out / "davis.bag"),
             "--masks", str(davis_dir / "Annotations"), "--goal", DAVIS_GOAL],
            "recording the DAVIS bag",
        )  # fmt: skip
        bag_cli.main(_eval_argv(args, out / "davis.bag", out / "davis", model, params))
        if (out / "davis" / "report.json").is_file():
            davis = json.loads((out / "davis" / "report.json").read_text())
        else:
            note = "The DAVIS evaluation failed; see davis/node.log."
        timings["DAVIS through the node"] = time.monotonic() - t
    if note:
        print(note)

    _step(5, f"report -> {out / 'report.md'}")
    timings["total"] = time.monotonic() - start
    write_summary(
        out / "report.md", tabletop, davis, model=str(model), params_file=str(params),
        threads=threads, refiner=refiner_in_use(Path(params), model),
        timings_s=timings, davis_note=note, shipped=_is_shipped(model),
    )  # fmt: skip
    print("\nPer goal kind (held-out tabletop scenes, through the node):\n")
    print(per_kind_table(tabletop))
    print("\nBars of issue 8:\n")
    print(bars_table(tabletop))
    print(f"\nreport: {out / 'report.md'}  ({timings['total']:.0f} s)")
    return tabletop


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point (``make demo``); see the module doc for the exit status."""
    args = build_parser().parse_args(argv)
    if args.frames < 1 or args.size < 32:
        print("error: --frames must be >= 1 and --size >= 32", file=sys.stderr)
        return 2
    try:
        run(args)
    except (FileNotFoundError, ValueError) as exc:
        print(f"make demo: error: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, TimeoutError) as exc:
        print(f"make demo: failed: {exc}", file=sys.stderr)
        return 1
    return 0
