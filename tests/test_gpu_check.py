"""tools/gpu_check.sh --dry-run: every section of the GPU check runs at tiny sizes on the CPU
through the same code as on the GPU and writes its JSON (what needs CUDA is skipped with the
reason recorded)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_writes_every_section(data_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PY": sys.executable, "TEXT4SEG_DATA": str(data_dir),
           "OMP_NUM_THREADS": "1", "MASTER_PORT": "29583"}  # fmt: skip
    proc = subprocess.run(
        ["bash", "tools/gpu_check.sh", "--dry-run", "--out", str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["dry_run"] is True and report["ok"] is True
    sections = report["sections"]
    assert set(sections) == {"pytest_gpu", "train_step", "decode", "sam"}
    for record in sections.values():
        assert record["status"] == "ok" and record["skipped_reason"]
    collected = re.match(r"(\d+)/\d+ tests collected", sections["pytest_gpu"]["last_line"])
    assert collected and int(collected.group(1)) >= 5  # the CUDA-graph tests among them
    train = sections["train_step"]["result"]
    assert train["gradient_checkpointing"] and train["per_device_batch"] == 2
    assert all(math.isfinite(x) for x in train["losses"]) and train["checkpoint_MB"] > 0
    assert train["samples_per_s"] > 0
    decode = sections["decode"]["result"]["archs"]
    assert set(decode) == {"qwen2_vl_tiny", "llava_tiny"}
    for arch in decode.values():
        for row in arch["per_goals"].values():
            assert row["identical_tokens"]  # the oracle decided every path's tokens
            for method in ("generate", "eager", "cuda_graphs"):
                assert row[method]["ms_per_goal"] > 0 and row[method]["steps"] >= 1
            assert row["generate"]["steps"] > row["eager"]["steps"]  # jump-forward + drafts
    sam = sections["sam"]["result"]
    assert sam["encode_ms_mean"] > 0 and sam["refine_ms_mean"]["box"] > 0
