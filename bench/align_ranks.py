"""The demo recipe's alignment stage on one process against two data-parallel gloo ranks.

``training.align`` as ``train_demo.sh`` runs it (the demo's random base model, question first,
G = 8; tabletop scenes of 1 to 6 objects; batch 64, lr 2e-3), once as one process and once
under ``torch.distributed.run`` on 2 ranks (``ALIGN_RANKS=2``), the same steps on the same
scenes. Reported per mode: steps per second between the log lines at step 101 and the last
(after scene drawing and warm-up), the whole command's seconds, and the last logged loss (of
the whole batch in one process, of rank 0's half of it on two ranks); then the ratio ``two /
one``. Ratios, not absolute times, are the result: the 2 cores are shared.

Usage: python bench/align_ranks.py [--steps 600] [--scenes 1000]   (about 3 minutes)
Writes bench/results/align_ranks.json.
"""

from __future__ import annotations

import argparse
import re
import shutil
import time
from pathlib import Path

from common import REPO, demo_base, run_python, training_env, write_speedup

LOG = re.compile(r"\[align\] step (\d+)/\d+ loss ([0-9.]+) (\d+)s")


def rate(log: str) -> dict[str, float]:
    """Steps per second between the log lines at step 101 and the last, and the last loss."""
    lines = [(int(s), float(loss), int(t)) for s, loss, t in LOG.findall(log)]
    (s0, _, t0), (s1, loss, t1) = next(x for x in lines if x[0] == 101), lines[-1]
    return {"steps_per_s": (s1 - s0) / max(t1 - t0, 1), "last_loss": loss}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--scenes", type=int, default=1000)
    ap.add_argument("--work", type=Path, default=REPO / "build" / "bench_align_ranks")
    args = ap.parse_args()
    if args.steps < 300:
        ap.error("--steps must be at least 300 (the rate is read from step 101 on)")
    start = time.perf_counter()
    env = training_env()
    base = demo_base(args.work / "base", env)
    align = ["-m", "training.align", "--model", str(base), "--steps", str(args.steps),
             "--scenes", str(args.scenes), "--probe_scenes", "0"]  # fmt: skip
    two = ["-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29661"]
    modes: dict[str, dict[str, float]] = {}
    for name, launcher in (("one_process", []), ("two_ranks", two)):
        out = args.work / name
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        log = run_python([*launcher, *align, "--out", str(out)], env)
        modes[name] = {**rate(log), "seconds": time.perf_counter() - t0}
        print(name, modes[name], flush=True)
    write_speedup(
        "align_ranks.json",
        "training.align steps/s, 2 data-parallel gloo ranks vs one process",
        modes, "steps_per_s", "one_process", "two_ranks", start,
        steps=args.steps, scenes=args.scenes,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
