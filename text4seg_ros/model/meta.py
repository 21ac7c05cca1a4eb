"""What a model directory says about itself beyond ``config.json``, and where the shipped model is.

``text4seg.json`` (optional, in the model directory) holds the Text4Seg settings the model was
trained with, at least ``{"grid": G}``: the descriptor grid size G (G x G cells). A model
answers well only at its training grid, so the Segmenter, the node and the CLIs use it whenever
no grid is given explicitly (the node: parameter ``grid`` 0). Without the file the grid is
:data:`DEFAULT_GRID` (the paper's 16). ``"prompt"``: the prompt layout the model was trained
with, one of :data:`PROMPT_LAYOUTS`: ``"image_first"`` (the default, every published
checkpoint) or ``"question_first"`` (the question before the image; see
:meth:`text4seg_ros.model.registry.Backbone.question_first`); :func:`text4seg_ros.model.loading.
load_pretrained` applies it, so the Segmenter, the node and training all prompt the model alike.
``"refiner"``: the mask refiner the model's figures were measured with, one of
:data:`MODEL_REFINERS` (``"none"`` when absent; ``"grabcut"``: :class:`text4seg_ros.refine.
GrabCutRefiner`, which needs no weights); refiner ``"auto"`` of the Segmenter, the node and the
CLI uses it.

The shipped demo model is ``models/demo`` of the package: in the source tree (``pip install
-e .``, a clone) or in the ament share folder (``<prefix>/share/text4seg_ros/models/demo``,
written by ``colcon build`` or :mod:`text4seg_ros.ros.install_layout`).
:func:`resolve_model` turns an empty model argument into that path, with a clear error when the
model is not there. ROS-free and torch-free.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

META_FILE = "text4seg.json"
DEFAULT_GRID = 16
GRID_RANGE = (2, 64)  # the node's accepted range; a grid outside it is refused here too
PROMPT_LAYOUTS = ("image_first", "question_first")
MODEL_REFINERS = ("none", "grabcut")  # refiners a model may name: those that need no weights
PACKAGE = "text4seg_ros"
DEMO_MODEL = Path("models") / "demo"
REPO = Path(__file__).resolve().parents[2]  # the source tree (an editable install points here)


def _checked(meta: Any, path: Path) -> dict[str, Any]:
    """``meta`` when it is valid ``text4seg.json`` content (see :func:`read_meta`), named
    ``path`` in the ValueError otherwise."""
    if not isinstance(meta, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(meta).__name__}")
    grid = meta.get("grid")
    if grid is not None:
        lo, hi = GRID_RANGE
        if isinstance(grid, bool) or not isinstance(grid, int) or not lo <= grid <= hi:
            raise ValueError(f"{path}: grid must be an int in [{lo}, {hi}], got {grid!r}")
    prompt = meta.get("prompt", PROMPT_LAYOUTS[0])
    if prompt not in PROMPT_LAYOUTS:
        raise ValueError(
            f"{path}: prompt must be one of {', '.join(PROMPT_LAYOUTS)}, got {prompt!r}"
        )
    refiner = meta.get("refiner", MODEL_REFINERS[0])
    if refiner not in MODEL_REFINERS:
        raise ValueError(
            f"{path}: refiner must be one of {', '.join(MODEL_REFINERS)}, got {refiner!r}"
        )
    return meta


def read_meta(model_dir: str | Path) -> dict[str, Any]:
    """The object in ``model_dir/text4seg.json`` ({} when the file does not exist).

    Raises ``ValueError`` when the file is not a JSON object, its ``grid`` is not an int in
    :data:`GRID_RANGE`, its ``prompt`` is not one of :data:`PROMPT_LAYOUTS` or its
    ``refiner`` not one of :data:`MODEL_REFINERS`.
    """
    path = Path(model_dir) / META_FILE
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    return _checked(meta, path)


def model_prompt(model_dir: str | Path) -> str:
    """The prompt layout ``model_dir`` was trained with (:data:`PROMPT_LAYOUTS`; default first)."""
    return read_meta(model_dir).get("prompt", PROMPT_LAYOUTS[0])


def model_refiner(model_dir: str | Path) -> str:
    """The refiner ``model_dir``'s figures were measured with (:data:`MODEL_REFINERS`; "none"
    when it names none): what refiner ``"auto"`` runs."""
    return read_meta(model_dir).get("refiner", MODEL_REFINERS[0])


def resolve_refiner(model_dir: str | Path, refiner: Any) -> Any:
    """``refiner`` as given, except ``"auto"``: the refiner the model names
    (:func:`model_refiner`)."""
    return model_refiner(model_dir) if isinstance(refiner, str) and refiner == "auto" else refiner


def model_grid(model_dir: str | Path) -> int | None:
    """The grid ``model_dir`` was trained with (``text4seg.json``), or None when it says none."""
    return read_meta(model_dir).get("grid")


def resolve_grid(model_dir: str | Path, grid: int | None) -> int:
    """``grid`` when given (an int >= 1), else the model's grid, else :data:`DEFAULT_GRID`."""
    if grid is not None:
        return grid
    found = model_grid(model_dir)
    return DEFAULT_GRID if found is None else found


def write_meta(model_dir: str | Path, **fields: Any) -> Path:
    """Write ``fields`` (e.g. ``grid=16``) to ``model_dir/text4seg.json``; returns the path."""
    path = Path(model_dir) / META_FILE
    _checked(fields, path)  # refuse to write a file the loaders would reject
    path.write_text(json.dumps(fields, indent=1, sort_keys=True) + "\n")
    return path


def update_meta(model_dir: str | Path, **fields: Any) -> Path:
    """Set ``fields`` in ``model_dir/text4seg.json``, keeping its other settings."""
    return write_meta(model_dir, **{**read_meta(model_dir), **fields})


def copy_meta(source: str | Path, model_dir: str | Path) -> Path | None:
    """Give ``model_dir`` the ``text4seg.json`` settings of ``source`` (a model trained,
    merged or aligned from it keeps its grid and prompt layout); returns the path written,
    None when ``source`` has none."""
    fields = read_meta(source)
    return write_meta(model_dir, **fields) if fields else None


def demo_model_candidates() -> list[Path]:
    """Where the shipped demo model may be, in search order: the source tree, then the share
    folder of this interpreter's prefix and of every ``AMENT_PREFIX_PATH`` entry."""
    prefixes = [sys.prefix, *os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)]
    shares = [Path(p) / "share" / PACKAGE / DEMO_MODEL for p in prefixes if p]
    return list(dict.fromkeys([REPO / DEMO_MODEL, *shares]))


def default_model_dir() -> Path:
    """The shipped demo model's directory; FileNotFoundError naming the places searched."""
    for path in demo_model_candidates():
        if (path / "config.json").is_file():
            return path
    searched = ", ".join(str(p) for p in demo_model_candidates())
    raise FileNotFoundError(
        f"no model given and the shipped demo model is missing (searched {searched}); "
        "pass a model directory, or build it with `make demo-model`"
    )


def resolve_model(model: str | Path | None) -> Path:
    """``model`` as a path, or the shipped demo model when ``model`` is None or empty."""
    if model is None or not str(model).strip():
        return default_model_dir()
    return Path(model).expanduser()
