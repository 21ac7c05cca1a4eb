"""Helpers shared by the bench scripts: where the real data lives, how results are written."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def data_dir() -> Path:
    """../shared/data next to the repository, or $TEXT4SEG_DATA."""
    return Path(os.environ.get("TEXT4SEG_DATA", REPO.parent / "shared" / "data"))


def require_data(*parts: str) -> Path:
    """Path under the data dir; exits with a clear message (code 0: skipped) when absent."""
    path = data_dir().joinpath(*parts)
    if not path.exists():
        print(f"SKIPPED: real data not found at {path} (set TEXT4SEG_DATA)", file=sys.stderr)
        raise SystemExit(0)
    return path


def load_mask(path: Path) -> np.ndarray:
    """A {0, 255} PNG as an ``(H, W)`` bool mask."""
    return np.asarray(Image.open(path).convert("L")) > 127


def real_masks() -> dict[str, list[tuple[str, str, np.ndarray]]]:
    """Every real mask by dataset: ``(name, referring label, (H, W) bool mask)``.

    COCO tiny: one query per instance, labelled with its class name (underscores as spaces).
    DAVIS blackswan: one query per frame, labelled "the black swan" (our text, not DAVIS').
    """
    coco = require_data("coco_tiny16", "masks_derived")
    davis = require_data("davis_blackswan", "Annotations")
    out: dict[str, list[tuple[str, str, np.ndarray]]] = {"coco_tiny16": [], "davis_blackswan": []}
    for p in sorted(coco.glob("*.png")):
        label = p.stem.split("_", 2)[2].replace("_", " ")
        out["coco_tiny16"].append((p.name, label, load_mask(p)))
    for p in sorted(davis.glob("*.png")):
        out["davis_blackswan"].append((p.name, "the black swan", load_mask(p)))
    return out


def frame_name(dataset: str, name: str) -> str:
    """The image file that mask ``name`` of :func:`real_masks` belongs to (several COCO
    instance masks share one image)."""
    if dataset == "coco_tiny16":
        return name.split("_", 1)[0] + ".jpg"
    return name.rsplit(".", 1)[0] + ".jpg"


def image_of(dataset: str, name: str) -> np.ndarray:
    """The ``(H, W, 3)`` uint8 RGB frame that mask ``name`` of :func:`real_masks` belongs to."""
    folder = "images" if dataset == "coco_tiny16" else "JPEGImages"
    path = require_data(dataset, folder, frame_name(dataset, name))
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8)


def write_json(name: str, payload: dict) -> Path:
    """Write ``bench/results/<name>`` with machine facts added; returns the path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": {
            "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
        },
        **payload,
    }
    path = RESULTS / name
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    return path


def training_env() -> dict[str, str]:
    """The environment of the training benches' commands: one OpenMP thread per process (as
    ``train_demo.sh`` runs them), the hub offline, the repository importable."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}


def demo_base(path: Path, env: dict[str, str]) -> Path:
    """The demo model's random base (``training.demo_base``: question first, G = 8) at
    ``path``, built when it is not there yet."""
    if not path.exists():
        run_python(["-m", "training.demo_base", "--out", str(path), "--grid", "8",
                    "--prompt", "question_first"], env)  # fmt: skip
    return path


def run_python(args: list[str], env: dict[str, str]) -> str:
    """Run ``python ARGS`` in the repository (check=True); its stdout and stderr as text."""
    proc = subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, check=True, capture_output=True, text=True
    )
    return proc.stdout + proc.stderr


def write_speedup(
    name: str,
    what: str,
    modes: dict[str, dict[str, float]],
    metric: str,
    baseline: str,
    candidate: str,
    start: float,
    **fields: object,
) -> float:
    """Write ``bench/results/<name>`` for a two-mode comparison run in one process tree:
    ``what``, ``fields``, the ``modes`` measured, ``speedup_<candidate>_over_<baseline>`` (the
    ratio of their ``metric``) and the seconds since ``start`` (``time.perf_counter()``);
    prints and returns the ratio."""
    ratio = modes[candidate][metric] / modes[baseline][metric]
    write_json(
        name,
        {
            "what": what,
            **fields,
            "modes": modes,
            f"speedup_{candidate}_over_{baseline}": ratio,
            "seconds": time.perf_counter() - start,
        },
    )
    print(f"{candidate} / {baseline} {metric}: {ratio:.2f}")
    return ratio
