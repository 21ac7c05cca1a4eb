"""Text4Seg semantic descriptors: masks as text and back (the project's one codec).

Public API (SPEC.md sections 1 to 3):

* :func:`encode_mask` / :func:`decode_mask`: one binary mask as an R-RLE body (image-wise, I-SD).
* :func:`encode_labels` / :func:`decode_labels`: multi-class ``(G, G)`` grids (open vocabulary).
* :func:`parse_rrle`: the lower-level parse returning the grid and every :class:`Repair` made.
* :mod:`.bsd`: box-wise descriptors (B-SD) with optional semantic bricks.
* :mod:`.geometry`: mask <-> grid sampling (``center`` as the official data, or ``area``).

Grammars are written in the docstrings of :mod:`.rrle` (I-SD, R-RLE) and :mod:`.bsd` (B-SD).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .geometry import (
    SamplingMethod,
    check_2d,
    check_grid_size,
    check_size,
    grid_to_labels,
    grid_to_mask,
    labels_to_grid,
    mask_to_box,
    mask_to_grid,
    sample_indices,
)
from .rrle import (
    OTHERS,
    SEG_CLOSE,
    SEG_OPEN,
    ParsedGrid,
    Repair,
    RepairKind,
    check_label,
    check_names,
    encode_grid,
    parse_rrle,
)

__all__ = [
    "OTHERS",
    "SEG_CLOSE",
    "SEG_OPEN",
    "ParsedGrid",
    "Repair",
    "RepairKind",
    "decode_labels",
    "decode_mask",
    "encode_labels",
    "encode_mask",
    "grid_to_labels",
    "grid_to_mask",
    "labels_to_grid",
    "mask_to_box",
    "mask_to_grid",
    "parse_rrle",
    "sample_indices",
]


def _check_foreground(label: str) -> None:
    """A single-mask label: a valid descriptor label that is not the background's."""
    check_label(label)
    if label == OTHERS:
        raise ValueError(f"label must not be {OTHERS!r}: that is the background label")


def encode_mask(
    mask: np.ndarray, label: str, grid: int = 16, method: SamplingMethod = "center"
) -> str:
    """Encode an ``(H, W)`` bool mask as the R-RLE body the official encoder writes.

    The mask is sampled to ``grid x grid`` cells (SPEC section 1): ``method="center"`` exactly
    as PIL's nearest resize does (the official data, bit for bit), ``"area"`` by the majority of
    each cell's pixels (keeps small objects). Foreground cells carry ``label``, the rest
    ``others``. Returns the body without ``<seg>`` markers, ending in one newline, e.g. for
    G = 4::

        "others *4\\n others *1| cup *2| others *1\\n cup *4\\n others *4\\n"
    """
    check_2d(mask, "mask")  # before `mask != 0`, which would turn a list into a bool
    _check_foreground(label)
    cells = mask_to_grid(mask != 0, check_grid_size(grid), method)
    return encode_grid(cells.astype(np.int64), (OTHERS, label))


def decode_mask(text: str, label: str, size: tuple[int, int], grid: int = 16) -> np.ndarray:
    """Decode a model answer (body alone, or with ``<seg>`` and prose) to an ``(H, W)`` bool mask.

    ``size`` is ``(H, W)``. Cells whose label is ``label`` (matched by text, so an all-foreground
    grid stays all foreground) are True; the grid is upsampled by exact integer nearest
    neighbour. Malformed rows are repaired row by row (see :func:`parse_rrle`); never raises on
    model output.
    """
    _check_foreground(label)
    size = check_size(size)
    parsed = parse_rrle(text, (OTHERS, label), check_grid_size(grid))
    return grid_to_mask(parsed.grid, size)


def encode_labels(label_grid: np.ndarray, names: Sequence[str]) -> str:
    """Encode a ``(G, G)`` grid of class indices (``names[0] == 'others'``) as an R-RLE body."""
    check_2d(label_grid, "label_grid")
    names = check_names(names)
    if label_grid.shape[0] != label_grid.shape[1]:
        raise ValueError(f"label_grid must be square (G, G), got shape {label_grid.shape}")
    if not np.issubdtype(label_grid.dtype, np.integer) and label_grid.dtype != bool:
        raise TypeError(f"label_grid must hold integer class indices, got {label_grid.dtype}")
    if label_grid.min() < 0 or label_grid.max() >= len(names):
        raise ValueError(
            f"label_grid indices must lie in [0, {len(names)}) for {len(names)} names, "
            f"got [{label_grid.min()}, {label_grid.max()}]"
        )
    return encode_grid(label_grid.astype(np.int64), names)


def decode_labels(text: str, names: Sequence[str], grid: int = 16) -> np.ndarray:
    """Decode a multi-class answer to a ``(G, G)`` ``int64`` grid of indices into ``names``.

    ``names[0]`` must be ``'others'``; labels not in ``names`` (after case-insensitive and fuzzy
    matching) read as 0. Never raises on model output.
    """
    names = check_names(names)
    return parse_rrle(text, names, check_grid_size(grid)).grid
