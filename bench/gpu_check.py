"""The GPU check: every GPU measurement of the project in one run, one JSON file.

Sections, each a subprocess with its own time limit (a crash or an out-of-memory in one leaves
the others' results):

* ``pytest_gpu``: ``pytest -m gpu`` over the test files holding GPU tests, and the
  ``AutoProcessor`` test of saved folders (it needs torchvision, which the GPU image has);
* ``train_step``: one DeepSpeed ZeRO-2 LoRA step of LLaVA-1.5-7B (:mod:`gpu_train_step`);
* ``decode``: ``generate`` vs our decoder eager vs CUDA graphs (:mod:`gpu_decode`);
* ``sam``: the SAM refiner at ViT-H size, random weights (``bench/refine_sam.py``).

``--dry-run`` runs the same sections at tiny sizes on the CPU (pytest collects only; DeepSpeed on
gloo in fp32; decoding without graphs; SAM at a tiny width), recording per section what a GPU
would add. Usage: python bench/gpu_check.py --out FILE [--dry-run] [--budget-s 450]
[--sections pytest_gpu train_step decode sam]. tools/gpu_check.sh wraps it for the GPU image.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
GPU_TEST_FILES = (
    "tests/test_cuda_graphs.py",
    "tests/test_model_segmenter.py",
    "tests/test_refine.py",
)
SECTIONS = ("pytest_gpu", "train_step", "decode", "sam")
# Seconds each section may take on the GPU (the whole check must stay under 8 minutes).
LIMITS = {"pytest_gpu": 100, "train_step": 130, "decode": 200, "sam": 50}


def _cuda() -> tuple[bool, str]:
    try:
        import torch
    except ImportError as err:  # pragma: no cover (torch is a dependency)
        return False, f"torch not importable: {err}"
    if not torch.cuda.is_available():
        return False, "no CUDA device"
    return True, torch.cuda.get_device_name(0)


def _run(cmd: list[str], timeout: float, out: Path | None = None) -> dict[str, Any]:
    """Run ``cmd`` from the repository root; its JSON result (``out``), status and the last
    line it printed."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        tail = (err.stdout or b"")[-1500:]
        return {
            "status": "timeout",
            "seconds": round(time.perf_counter() - start, 1),
            "log_tail": tail.decode(errors="replace") if isinstance(tail, bytes) else tail,
        }
    record: dict[str, Any] = {
        "status": "ok" if proc.returncode == 0 else "failed",
        "seconds": round(time.perf_counter() - start, 1),
        "command": " ".join(cmd[1:]),
    }
    lines = proc.stdout.strip().splitlines()
    record["last_line"] = lines[-1] if lines else ""
    if proc.returncode != 0:
        record["log_tail"] = (proc.stdout + proc.stderr)[-3000:]
    if out is not None and out.is_file():
        record["result"] = json.loads(out.read_text())
    return record


def _junit(path: Path) -> dict[str, int]:
    """Counts of a pytest JUnit XML report."""
    if not path.is_file():
        return {}
    suite = ET.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    keys = ("tests", "failures", "errors", "skipped")
    return {k: int(suite.get(k, 0)) for k in keys} if suite is not None else {}


def pytest_gpu(work: Path, timeout: float, dry: bool) -> dict[str, Any]:
    """``pytest -m gpu`` (dry run: collection only) and the torchvision processor test."""
    base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    gpu = [*base, "-m", "gpu", f"--junitxml={work / 'gpu.xml'}", *GPU_TEST_FILES]
    if dry:
        gpu.append("--collect-only")
    record = _run(gpu, timeout * 0.8)
    record["counts"] = _junit(work / "gpu.xml")  # collection only: no test cases in it
    if dry:
        record["skipped_reason"] = "dry run: GPU tests collected, not run (they need CUDA)"
        return record
    auto = [*base, "-k", "auto_processor", f"--junitxml={work / 'auto.xml'}",
            "tests/test_processor_settings.py"]  # fmt: skip
    record["auto_processor"] = _run(auto, timeout * 0.2)
    record["auto_processor"]["counts"] = _junit(work / "auto.xml")
    if record["auto_processor"]["status"] != "ok":
        record["status"] = "failed"
    return record


def script(name: str, args: list[str], work: Path, timeout: float) -> dict[str, Any]:
    out = work / f"{name}.json"
    return _run([sys.executable, str(BENCH / f"{name}.py"), "--out", str(out), *args], timeout, out)


def train_step(work: Path, timeout: float, dry: bool) -> dict[str, Any]:
    record = script("gpu_train_step", ["--dry-run"] if dry else [], work, timeout)
    if dry:
        record["skipped_reason"] = (
            "dry run: tiny LLaVA, fp32 on gloo; bf16 and peak memory need CUDA"
        )
    return record


def decode(work: Path, timeout: float, dry: bool) -> dict[str, Any]:
    record = script("gpu_decode", ["--dry-run"] if dry else [], work, timeout)
    if dry:
        record["skipped_reason"] = (
            "dry run: tiny architectures on CPU; CUDA graphs need CUDA, so that path ran its "
            "static cache eagerly; no copy bandwidth, so no weight-streaming floor"
        )
    return record


def sam(work: Path, timeout: float, dry: bool) -> dict[str, Any]:
    out = work / "sam.json"
    kind, device, dtype = ("tiny", "cpu", "float32") if dry else ("vit_h", "cuda", "bfloat16")
    cmd = [sys.executable, str(BENCH / "refine_sam.py"), "--random", kind, "--device", device,
           "--dtype", dtype, "--limit", "2", "--prompts", "box", "--out", str(out)]  # fmt: skip
    record = _run(cmd, timeout, out)
    if dry:
        record["skipped_reason"] = "dry run: a tiny random SAM on CPU; ViT-H timing needs CUDA"
    return record


RUNNERS = {"pytest_gpu": pytest_gpu, "train_step": train_step, "decode": decode, "sam": sam}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path, help="the JSON report")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes on CPU, same code paths")
    p.add_argument("--budget-s", type=float, default=450.0, help="time for all sections")
    p.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    args = p.parse_args(argv)
    cuda, device = _cuda()
    work = args.out.parent / (args.out.stem + "_parts")
    work.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "dry_run": args.dry_run,
        "device": device,
        "python": platform.python_version(),
        "versions": _versions(),
        "data": os.environ.get("TEXT4SEG_DATA", "../shared/data"),
        "sections": {},
    }
    start = time.perf_counter()
    for name in args.sections:
        left = args.budget_s - (time.perf_counter() - start)
        if not cuda and not args.dry_run:
            record = {"status": "skipped", "skipped_reason": f"{device}: run with --dry-run"}
        elif left < 10:
            record = {"status": "skipped", "skipped_reason": "time budget spent"}
        else:
            limit = LIMITS[name] * (3 if args.dry_run else 1)
            record = RUNNERS[name](work, min(limit, left), args.dry_run)
        report["sections"][name] = record
        args.out.write_text(json.dumps(report, indent=2) + "\n")  # partial reports survive
        print(f"[gpu_check] {name}: {record['status']} ({record.get('seconds', 0)} s)", flush=True)
    report["seconds"] = round(time.perf_counter() - start, 1)
    report["ok"] = all(r["status"] == "ok" for r in report["sections"].values())
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"[gpu_check] wrote {args.out} in {report['seconds']} s; ok={report['ok']}")
    return 0 if report["ok"] else 1


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "transformers", "peft", "deepspeed", "triton"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


if __name__ == "__main__":
    sys.exit(main())
