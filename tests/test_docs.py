"""docs/ and README.md stay true: generated tables current, links resolve, examples run."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import load_script, shell_blocks, shell_commands

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted((REPO / "docs").glob("*.md"))
PAGES = [REPO / "README.md", *DOCS]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _gen():
    return load_script(REPO / "tools" / "gen_docs_tables.py", "gen_docs_tables")


def test_committed_tables_are_what_make_docs_writes() -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "tools" / "gen_docs_tables.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_tables_are_built_from_the_json(tmp_path: Path) -> None:
    gen = _gen()
    results = tmp_path / "results"
    shutil.copytree(REPO / "bench" / "results", results)
    oracle = json.loads((results / "oracle.json").read_text())
    oracle["results"]["coco_tiny16"]["16"]["isd_center"]["cIoU"] = 0.123456
    (results / "oracle.json").write_text(json.dumps(oracle))
    text = "x\n<!-- table:oracle -->\nstale\n<!-- /table:oracle -->\ny\n"
    new, names = gen.rewrite(text, results)
    assert names == ["oracle"] and "stale" not in new
    assert "| coco_tiny16 | 16 | 0.123 / " in new and new.startswith("x\n") and new.endswith("y\n")
    # a committed page with a hand-edited figure is stale
    page = (REPO / "docs" / "descriptors.md").read_text()
    assert gen.rewrite(page, results)[0] != page
    assert gen.rewrite(page)[0] == page
    # no result file: the table says which script writes it
    (results / "oracle.json").unlink()
    assert "run `python bench/oracle.py`" in gen.render("oracle", results)


def test_refine_grabcut_table_gives_each_set_grid_and_band(tmp_path: Path) -> None:
    gen = _gen()
    results = tmp_path / "results"
    shutil.copytree(REPO / "bench" / "results", results)
    data = json.loads((results / "refine_grabcut.json").read_text())
    row = data["metrics"]["davis_blackswan G=8"]
    row["coarse"]["cIoU"] = 0.5
    row["band_0.5"].update(cIoU=0.75, cIoU_ratio=1.5, ms_per_mask=12.0)
    (results / "refine_grabcut.json").write_text(json.dumps(data))
    table = gen.render("refine_grabcut", results)
    line = next(t for t in table.splitlines() if t.startswith("| davis_blackswan | 8 |"))
    assert "| 0.500 |" in line and "| 0.750 (1.50x), 12 |" in line
    assert table.count("\n") == 2 + len(data["metrics"])  # header, rule, one row per set


def test_engine_figures_were_measured_on_the_shipped_demo_model() -> None:
    # README's speed table and docs/engines.md quote bench/engines.py's run on models/demo: a
    # retrained model (other answers, other calls per goal) needs that bench run again.
    import hashlib

    result = json.loads((REPO / "bench" / "results" / "engines.json").read_text())
    weights = (REPO / "models" / "demo" / "model.safetensors").read_bytes()
    assert result["engines"]["model"] == "models/demo"
    assert result["engines"].get("model_md5") == hashlib.md5(weights).hexdigest(), (
        "models/demo changed since bench/results/engines.json: run python bench/engines.py "
        "and make docs"
    )


def test_gpu_tables_come_from_a_gpu_run_with_identical_tokens(tmp_path: Path) -> None:
    gen = _gen()
    results = tmp_path / "results"
    shutil.copytree(REPO / "bench" / "results", results)
    path = results / "gpu_check" / "gpu_check.json"
    data = json.loads(path.read_text())
    arch = data["sections"]["decode"]["result"]["archs"]["llava_1_5_7b"]
    arch["per_goals"]["1"]["cuda_graphs"]["ms_per_goal"] = 12.34
    path.write_text(json.dumps(data))
    table = gen.render("gpu_decode", results)
    line = next(t for t in table.splitlines() if t.startswith("| llava_1_5_7b | 1 |"))
    assert "| 12.3 |" in line
    assert table.count("\n") == 2 + sum(
        len(a["per_goals"]) for a in data["sections"]["decode"]["result"]["archs"].values()
    )
    arch["per_goals"]["1"]["identical_tokens"] = False
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="different tokens"):
        gen.render("gpu_decode", results)
    data["dry_run"] = True  # a CPU dry run is never reported as GPU figures
    path.write_text(json.dumps(data))
    assert "Only a CPU dry run" in gen.render("gpu_check", results)


def test_every_table_marker_is_known_and_every_docs_table_of_figures_is_generated() -> None:
    gen = _gen()
    for path in PAGES:
        text = path.read_text()
        for name in re.findall(r"<!-- table:([a-z0-9_]+) -->", text):
            assert name in gen.TABLES, f"{path.name}: unknown table {name}"
        # outside the markers, no table row may carry a decimal figure (typed by hand)
        outside = gen.MARKER.sub("", text)
        outside = re.sub(r"```.*?```", "", outside, flags=re.S)
        rows = [line for line in outside.splitlines() if line.startswith("|")]
        typed = [r for r in rows if re.search(r"\|\s*[-\d.]*\d\.\d+\s*(x|s|ms|%)?\s*\|", r)]
        assert not typed, f"{path.name}: figures typed by hand in a table: {typed[:3]}"


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file."""
    out = set()
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    for line in text.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", title)))
    return out


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.name)
def test_local_links_resolve(path: Path) -> None:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    for target in LINK.findall(text):
        if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        assert dest.exists(), f"{path.name}: link to missing {target}"
        if anchor and dest.suffix == ".md":
            assert anchor in _anchors(dest), f"{path.name}: no heading #{anchor} in {dest.name}"


def test_the_descriptor_examples_run() -> None:
    text = (REPO / "docs" / "descriptors.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "docs/descriptors.md", "exec"), {})  # noqa: S102  our own docs


def _make_targets() -> set[str]:
    return set(re.findall(r"^([a-zA-Z][\w-]*):", (REPO / "Makefile").read_text(), flags=re.M))


_HELP: dict[tuple[str, ...], str] = {}


def _help_text(argv: tuple[str, ...]) -> str:
    if argv not in _HELP:
        out = subprocess.run(
            [*argv, "--help"], capture_output=True, text=True, timeout=180, cwd=REPO
        )
        assert out.returncode == 0, f"{' '.join(argv)} --help: {out.stderr[-1500:]}"
        _HELP[argv] = out.stdout
    return _HELP[argv]


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.name)
def test_python_module_commands_take_the_flags_shown(path: Path) -> None:
    """``python -m MODULE [SUBCOMMAND] --flag ...``: every flag is in the module's --help."""
    for block in shell_blocks(path):
        for words in shell_commands(block.replace("[", " ").replace("]", " ")):
            if words[:2] != ["python", "-m"]:
                continue
            module, rest = words[2], words[3:]
            sub = tuple(rest[:1]) if rest and not rest[0].startswith("-") else ()
            text = _help_text((sys.executable, "-m", module, *sub))
            for flag in (w.split("=", 1)[0] for w in rest if w.startswith("--")):
                assert flag in text, f"{path.name}: python -m {module} {' '.join(sub)}: no {flag}"


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.name)
def test_commands_name_installed_programs_make_targets_and_files(path: Path) -> None:
    """Usage lines may have [optional] parts; the programs, targets and repository files they
    name must exist."""
    scripts = {p.name for p in Path(sys.executable).parent.iterdir()}
    for block in shell_blocks(path):
        for words in shell_commands(block.replace("[", " ").replace("]", " ")):
            while words and re.match(r"^[A-Za-z_]\w*=", words[0]):
                words = words[1:]  # NAME=value prefixes
            if not words:
                continue
            prog = words[0]
            if prog.startswith("text4seg-") or prog == "perception_node":
                assert prog in scripts, f"{path.name}: {prog} is not installed"
            elif prog == "make":
                assert set(words[1:]) <= _make_targets(), f"{path.name}: {words}"
            elif prog.startswith(("training/", "tools/")):
                assert (REPO / prog).is_file(), f"{path.name}: no script {prog}"
            else:
                known = shutil.which(prog) or prog in scripts
                assert known or prog in ("ros2", "export"), f"{path.name}: unknown program {prog}"
            for w in words:
                value = w.split(":=", 1)[-1].split("=", 1)[-1]
                if value.startswith(("config/", "launch/", "bench/", "training/configs/")):
                    assert (REPO / value).exists(), f"{path.name}: {value} does not exist"
