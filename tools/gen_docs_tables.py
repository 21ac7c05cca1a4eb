"""Write every generated table of README.md and docs/*.md (``make docs``).

A table lives between two marker comments in a Markdown file::

    <!-- table:oracle -->
    ... generated, do not edit ...
    <!-- /table:oracle -->

and is rebuilt from its source: a benchmark's JSON in ``bench/results/`` (figures are never
typed by hand) or the code itself (the node's parameters from ``text4seg_ros/ros/params.py``).
``--check`` writes nothing and exits 1 naming each table that differs from what this script
writes (tests/test_docs.py runs it). A table whose JSON is absent says which script makes it.

To add a table: write a function ``(results_dir) -> str`` returning Markdown lines, add it to
:data:`TABLES`, and put the two markers where it belongs.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
MARKER = re.compile(
    r"(<!-- table:(?P<name>[a-z0-9_]+) -->\n)(?P<body>.*?)(<!-- /table:(?P=name) -->)", re.S
)


class MissingResult(Exception):
    """The JSON a table is built from does not exist (yet)."""


def _load(results: Path, name: str, script: str) -> dict[str, Any]:
    path = results / name
    if not path.is_file():
        raise MissingResult(
            f"_No results yet: run `python {script}` (writes bench/results/{name})._"
        )
    return json.loads(path.read_text())


def _f(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def table_oracle(results: Path) -> str:
    """Perfect descriptors: I-SD (centre / area sampling) against B-SD, per data set and G."""
    d = _load(results, "oracle.json", "bench/oracle.py")
    lines = [
        _row(
            [
                "data",
                "G",
                "I-SD centre cIoU / gIoU / chars",
                "I-SD area cIoU / gIoU",
                "B-SD cIoU / gIoU / chars",
                "B-SD bricks chars",
            ]
        ),
        _row(["---"] * 6),
    ]
    for data, per_grid in d["results"].items():
        for grid in d["grids"]:
            r = per_grid[str(grid)]
            c, a, b, k = r["isd_center"], r["isd_area"], r["bsd"], r["bsd_bricks"]
            lines.append(
                _row(
                    [
                        data,
                        str(grid),
                        f"{_f(c['cIoU'])} / {_f(c['gIoU'])} / {c['chars']:.0f}",
                        f"{_f(a['cIoU'])} / {_f(a['gIoU'])}",
                        f"{_f(b['cIoU'])} / {_f(b['gIoU'])} / {b['chars']:.0f}",
                        f"{k['chars']:.0f}",
                    ]
                )
            )
    return "\n".join(lines)


def _steps_rows(d: dict[str, Any]) -> list[str]:
    lines = [
        _row(
            [
                "data",
                "form",
                "goals",
                "tokens/goal",
                "steps/goal, jump-forward",
                "ratio",
                "steps/goal, + drafts",
                "ratio",
            ]
        ),
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    groups = [(name, per) for name, per in d["datasets"].items()] + [("all", d["totals"])]
    for name, per in groups:
        for form, label in (("rrle", "R-RLE"), ("bsd", "B-SD")):
            r = per[form]
            lines.append(
                _row(
                    [
                        name,
                        label,
                        str(r["goals"]),
                        f"{r['tokens_per_goal']:.1f}",
                        f"{r['steps_per_goal_jump_forward_only']:.1f}",
                        f"{r['ratio_jump_forward_only']:.2f}x",
                        f"{r['steps_per_goal']:.1f}",
                        f"{r['ratio']:.2f}x",
                    ]
                )
            )
    return lines


def table_decode_steps(results: Path) -> str:
    """Answer tokens against sequential model calls, Qwen2-shaped byte-level BPE."""
    return "\n".join(_steps_rows(_load(results, "decode_steps.json", "bench/decode_steps.py")))


def table_decode_steps_sentencepiece(results: Path) -> str:
    """The same with a Llama-2-shaped SentencePiece tokenizer."""
    d = _load(results, "decode_steps_sentencepiece.json", "bench/decode_steps_sentencepiece.py")
    return "\n".join(_steps_rows(d))


def table_batch_decode(results: Path) -> str:
    """Batched decoding: the old fixed batch, the shrinking batch, single calls."""
    d = _load(results, "batch_decode.json", "bench/batch_decode.py")
    lines = [
        _row(
            [
                "batch",
                "model",
                "kept (before)",
                "shrinking",
                "singles",
                "kept / shrinking",
                "rows fed, kept -> shrinking",
                "same tokens",
            ]
        ),
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for s in d["scenarios"].values():
        lines.append(
            _row(
                [
                    s["batch"],
                    s["model"],
                    f"{s['kept']['seconds']:.2f} s",
                    f"{s['shrink']['seconds']:.2f} s",
                    f"{s['singles']['seconds']:.2f} s",
                    f"{s['kept_over_shrink_time']:.1f}x",
                    f"{s['kept']['rows_fed']} -> {s['shrink']['rows_fed']}",
                    "yes" if s["identical_tokens"] else "**no**",
                ]
            )
        )
    return "\n".join(lines)


def table_engines(results: Path) -> str:
    """Engines on the demo model: ms per goal, calls, tokens/s; the official way as baseline."""
    d = _load(results, "engines.json", "bench/engines.py")["engines"]
    lines = [
        _row(["frames", "goals / frame", "engine", "ms / goal", "calls / goal", "tokens / s",
              "vs torch", "vs torch, decode only", "vs official (1 goal)",
              "same descriptors as torch", "one batch vs goal after goal"]),
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]  # fmt: skip
    for frames, workload in d["workloads"].items():
        for k, row in workload["per_goals"].items():
            for name, v in row.items():
                speed = v.get("speedup_vs_torch")
                decode = v.get("decode_only_speedup_vs_torch")
                official = v.get("speedup_vs_official")
                same = v.get("same_descriptors_as_torch")
                batched = v.get("batched_speedup_vs_goal_after_goal")
                differ = "" if v.get("goal_after_goal_same_descriptors", True) else ", **differ**"
                lines.append(
                    _row(
                        [
                            frames,
                            k,
                            f"`{name}`",
                            f"{v['ms_per_goal']:.1f}",
                            f"{v['calls_per_goal']:.1f}",
                            f"{v['tokens_per_s']:.0f}",
                            f"{speed:.2f}x" if speed else "",
                            f"{decode:.2f}x" if decode else "",
                            f"{official:.1f}x" if official else "",
                            "" if same is None else ("yes" if same else "**no**"),
                            (
                                f"{batched:.2f}x ({v['decoder_calls_per_frame']:.0f} vs "
                                f"{v['decoder_calls_per_frame_goal_after_goal']:.0f} calls / "
                                f"frame){differ}"
                            )
                            if batched
                            else "",
                        ]
                    )
                )
    return "\n".join(lines)


def table_engines_real_width(results: Path) -> str:
    """Real widths, oracle-decided tokens: ours against token-by-token decoding."""
    d = _load(results, "engines.json", "bench/engines.py")["real_width"]
    lines = [
        _row(["language model", "layers", "mode", "ms / goal", "calls / goal",
              "vs token-by-token", "same answers"]),
        "| --- | ---: | --- | ---: | ---: | ---: | --- |",
    ]  # fmt: skip
    for name, row in d["models"].items():
        for mode, v in row.items():
            speed = v.get("speedup_vs_token_by_token")
            lines.append(
                _row(
                    [
                        name,
                        str(d["layers"]),
                        mode,
                        f"{v['ms_per_goal']:.0f}",
                        f"{v['calls_per_goal']:.1f}",
                        f"{speed:.1f}x" if speed else "1.0x",
                        "yes" if v["same"] else "**no**",
                    ]
                )
            )
    return "\n".join(lines)


def table_engines_loop(results: Path) -> str:
    """The decode loop's own cost per sequential step (zero-cost step), by answer length."""
    d = _load(results, "engines.json", "bench/engines.py")["loop"]
    lines = [
        _row(["answers", "G", "goals / batch", "tokens / goal", "steps", "loop ms / step (wall)",
              "loop ms / step (CPU)", "loop ms / goal and step (CPU)", "first pass ms / step"]),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]  # fmt: skip
    for key, v in d.items():
        kind, grid, batch = key.split("_")
        lines.append(
            _row(
                [
                    "R-RLE" if kind == "rrle" else "B-SD",
                    grid[1:],
                    batch[1:],
                    f"{v['tokens_per_goal']:.0f}",
                    f"{v['sequential_steps']:.0f}",
                    f"{v['loop_ms_per_step']:.3f}",
                    f"{v['loop_cpu_ms_per_step']:.3f}",
                    f"{v['loop_cpu_ms_per_goal_step']:.3f}" if "goal_steps" in v else "",
                    f"{v['first_pass_loop_ms_per_step']:.3f}",
                ]
            )
        )
    return "\n".join(lines)


def table_speed_summary(results: Path) -> str:
    """README's short speed table: the headline ratios of bench/engines.py's one run."""
    d = _load(results, "engines.json", "bench/engines.py")
    lines = [_row(["what (bench/engines.py, this CPU)", "figure"]), "| --- | ---: |"]
    table = d["engines"]["workloads"].get("tabletop", {}).get("per_goals", {})
    for k, row in table.items():
        ort = row.get("onnxruntime", {})
        if ort.get("speedup_vs_torch"):
            lines.append(
                _row([f"`onnxruntime` vs `torch` per goal, demo model (goals per frame: {k})",
                      f"{ort['speedup_vs_torch']:.2f}x"])
            )  # fmt: skip
    batched = {n: v for n, v in table.get("8", {}).items()
               if v.get("batched_speedup_vs_goal_after_goal")}  # fmt: skip
    if batched:
        any_row = next(iter(batched.values()))
        times = ", ".join(
            f"`{n}` {v['batched_speedup_vs_goal_after_goal']:.2f}x" for n, v in batched.items()
        )
        lines.append(
            _row(["8 goals per frame in one batch vs goal after goal, demo model: decoder calls "
                  "per frame; time",
                  f"{any_row['decoder_calls_per_frame']:.0f} vs "
                  f"{any_row['decoder_calls_per_frame_goal_after_goal']:.0f}; {times}"])
        )  # fmt: skip
    for name, row in d["real_width"]["models"].items():
        best = row.get("jump_forward+drafts", {})
        if best.get("speedup_vs_token_by_token"):
            lines.append(
                _row([f"ours vs token-by-token decoding, {name} width, same answers",
                      f"{best['speedup_vs_token_by_token']:.1f}x"])
            )  # fmt: skip
    for key, v in d["loop"].items():
        if key.startswith("rrle_") and key.endswith("_b1"):
            lines.append(
                _row([f"decode loop's own cost per step, R-RLE G = {key.split('_')[1][1:]}",
                      f"{v['loop_cpu_ms_per_step']:.2f} ms"])
            )  # fmt: skip
    return "\n".join(lines)


def table_bench_machines(results: Path) -> str:
    """Where each result file was measured (from its own ``machine`` record)."""
    lines = [_row(["result file", "machine", "seconds"]), _row(["---"] * 3)]
    for path in sorted(results.glob("*.json")):
        d = json.loads(path.read_text())
        m = d.get("machine", {}) if isinstance(d, dict) else {}
        where = ", ".join(f"{k} {v}" for k, v in m.items()) if isinstance(m, dict) else str(m)
        secs = d.get("seconds") if isinstance(d, dict) else None
        secs_text = f"{secs:.1f}" if isinstance(secs, (int, float)) else ""
        lines.append(_row([f"`{path.name}`", where or "not recorded", secs_text]))
    return "\n".join(lines)


def _default_text(value: Any) -> str:
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, str):
        return f'`"{value}"`' if value == "" else f"`{value}`"
    return f"`{value}`"


def table_node_params(results: Path) -> str:
    """The node's parameters, from text4seg_ros/ros/params.py (defaults, ranges, live)."""
    from dataclasses import fields

    sys.path.insert(0, str(REPO))
    from text4seg_ros.ros.params import SPECS, NodeConfig

    defaults = {f.name: f.default for f in fields(NodeConfig)}
    lines = [_row(["parameter", "default", "live", "meaning"]), _row(["---"] * 4)]
    for name, spec in SPECS.items():
        allowed = ""
        if spec.choices:
            allowed = " (" + " \\| ".join(spec.choices) + ")"
        elif spec.int_range:
            allowed = f" ({spec.int_range[0]}..{spec.int_range[1]})"
        elif spec.float_range:
            allowed = f" ({spec.float_range[0]:g}..{spec.float_range[1]:g})"
        meaning = spec.description.replace("|", "\\|") + allowed
        live = "yes" if spec.live else ""
        lines.append(_row([f"`{name}`", _default_text(defaults.get(name, "")), live, meaning]))
    return "\n".join(lines)


def table_refine_grabcut(results: Path) -> str:
    """GrabCut on perfect G x G answers: cIoU before and after per set, grid and band."""
    d = _load(results, "refine_grabcut.json", "bench/refine_grabcut.py")
    bands = d["bands"]
    head = ["set", "G", "masks", "perfect answer cIoU"]
    head += [f"band {b:g}: cIoU (x), ms/mask" for b in bands]
    lines = [_row(head), _row(["---"] * len(head))]
    for key, r in d["metrics"].items():
        name, grid = key.rsplit(" G=", 1)
        cells = [name, grid, str(r["masks"]), _f(r["coarse"]["cIoU"])]
        for b in bands:
            m = r[f"band_{b:g}"]
            cells.append(f"{_f(m['cIoU'])} ({m['cIoU_ratio']:.2f}x), {m['ms_per_mask']:.0f}")
        lines.append(_row(cells))
    return "\n".join(lines)


def _gpu_check(results: Path) -> dict[str, Any]:
    d = _load(results, "gpu_check/gpu_check.json", "bench/gpu_check.py (tools/gpu_check.sh)")
    if d.get("dry_run"):
        raise MissingResult("_Only a CPU dry run is recorded: run the GPU check on a GPU._")
    return d


def table_gpu_check(results: Path) -> str:
    """docs/gpu.md: every section of the GPU check's one run (bench/results/gpu_check/)."""
    d = _gpu_check(results)
    s = d["sections"]
    versions = ", ".join(f"{k} {v}" for k, v in d["versions"].items())
    lines = [_row(["section", f"{d['device']} ({versions})"]), "| --- | --- |"]
    tests = s["pytest_gpu"]
    auto = tests.get("auto_processor", {})
    lines.append(_row(["`pytest_gpu`", f"{tests['last_line']}; AutoProcessor of saved folders: "
                       f"{auto.get('last_line', 'not run')}"]))  # fmt: skip
    t = s["train_step"]["result"]
    lines.append(
        _row(["`train_step` (LLaVA-1.5-7B, ZeRO-2, LoRA r64, world 1)",
              f"{t['precision']}, batch {t['per_device_batch']} of {t['tokens_per_sample']:.0f} "
              f"tokens, checkpointing {'on' if t['gradient_checkpointing'] else 'off'}: "
              f"{t['samples_per_s']:.2f} samples/s, peak {t['peak_memory_GiB']:.1f} GiB, "
              f"checkpoint {t['checkpoint_MB']:.0f} MB, loss {t['losses'][0]:.2f} -> "
              f"{t['losses'][-1]:.2f} in {len(t['losses'])} steps"])
    )  # fmt: skip
    sam = s["sam"]["result"]
    lines.append(
        _row(["`sam` (ViT-H, random weights, bf16)",
              f"encode {sam['encode_ms_mean']:.0f} ms per image, "
              f"{sam['refine_ms_mean']['box']:.0f} ms per box-prompted mask"])
    )  # fmt: skip
    return "\n".join(lines)


def table_gpu_decode(results: Path) -> str:
    """docs/gpu.md: generate vs ours eager vs CUDA graphs per model and goals per frame."""
    d = _gpu_check(results)["sections"]["decode"]["result"]
    head = ["model", "goals per frame", "answer tokens per goal",
            "sequential calls: `generate` / ours", "`generate` ms per goal", "ours eager",
            "ours CUDA graphs",
            "`generate` / graphs", "eager / graphs", "graphs step / weight floor"]  # fmt: skip
    lines = [_row(head), _row(["---"] * len(head))]
    for arch, a in d["archs"].items():
        for goals, r in a["per_goals"].items():
            if not r.get("identical_tokens"):
                raise ValueError(f"gpu_check: {arch} at {goals} goals decoded different tokens")
            lines.append(
                _row([arch, goals, f"{r['answer_tokens_per_goal']:.1f}",
                      f"{r['generate']['steps']} / {r['cuda_graphs']['steps']}",
                      f"{r['generate']['ms_per_goal']:.0f}", f"{r['eager']['ms_per_goal']:.1f}",
                      f"{r['cuda_graphs']['ms_per_goal']:.1f}",
                      f"{r['generate_over_cuda_graphs']:.1f}x",
                      f"{r['eager_over_cuda_graphs']:.2f}x",
                      f"{r['cuda_graphs']['step_over_floor']:.1f}x"])
            )  # fmt: skip
    return "\n".join(lines)


TABLES: dict[str, Callable[[Path], str]] = {
    "oracle": table_oracle,
    "decode_steps": table_decode_steps,
    "decode_steps_sentencepiece": table_decode_steps_sentencepiece,
    "batch_decode": table_batch_decode,
    "engines": table_engines,
    "engines_real_width": table_engines_real_width,
    "engines_loop": table_engines_loop,
    "bench_machines": table_bench_machines,
    "speed_summary": table_speed_summary,
    "node_params": table_node_params,
    "refine_grabcut": table_refine_grabcut,
    "gpu_check": table_gpu_check,
    "gpu_decode": table_gpu_decode,
}


def render(name: str, results: Path = RESULTS) -> str:
    """The Markdown of table ``name`` (ending in a newline)."""
    if name not in TABLES:
        raise KeyError(f"unknown table {name!r}; known: {', '.join(TABLES)}")
    try:
        body = TABLES[name](results)
    except MissingResult as exc:
        body = str(exc)
    return body.rstrip("\n") + "\n"


def rewrite(text: str, results: Path = RESULTS) -> tuple[str, list[str]]:
    """``text`` with every marked table rebuilt, and the names of the tables found."""
    names: list[str] = []

    def sub(m: re.Match) -> str:
        names.append(m.group("name"))
        if m.group("name") not in TABLES:
            return m.group(0)  # reported by main()
        return m.group(1) + render(m.group("name"), results) + m.group(4)

    return MARKER.sub(sub, text), names


def doc_files(root: Path = REPO) -> list[Path]:
    """README.md and every Markdown file under docs/."""
    return [root / "README.md", *sorted((root / "docs").glob("**/*.md"))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if stale")
    ap.add_argument("--results", type=Path, default=RESULTS, help="bench results folder")
    args = ap.parse_args(argv)
    stale = []
    for path in doc_files():
        if not path.is_file():
            continue
        text = path.read_text()
        new, names = rewrite(text, args.results)
        for name in names:
            if name not in TABLES:
                print(f"{path.relative_to(REPO)}: unknown table {name!r}", file=sys.stderr)
                return 2
        if new != text:
            stale.append(str(path.relative_to(REPO)))
            if not args.check:
                path.write_text(new)
    if args.check and stale:
        print(
            "generated tables out of date in: " + ", ".join(stale) + " (run `make docs`)",
            file=sys.stderr,
        )
        return 1
    verb = "would rewrite" if args.check else "rewrote"
    print(f"{verb} {len(stale)} file(s)" if stale else "tables up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
