"""Grid geometry: image masks to G x G label grids and back (SPEC.md section 1).

Conventions used throughout the package:

* A *mask* is an ``(H, W)`` ``bool`` array in image pixels, row-major, ``mask[y, x]``.
* A *label map* is an ``(H, W)`` integer array of class indices, ``0`` meaning ``others``.
* A *grid* is a ``(G, G)`` ``int64`` array of class indices (``0`` = ``others``), row ``r`` covering
  the image rows whose upsampling cell is ``r``.
* A *box* is ``(x1, y1, x2, y2)`` in pixel edges: columns ``x1 .. x2 - 1`` and rows
  ``y1 .. y2 - 1`` are inside (``x2``/``y2`` exclusive), so its width is ``x2 - x1``.

Downsampling (``center``, the default) reproduces PIL's nearest-neighbour resize bit for bit,
which is how the official Text4Seg data (and so every released checkpoint) was made: with step
``a = W / G`` the sample of column ``c`` is ``floor(x_c)``, ``x_0 = a / 2``, ``x_(c+1) = x_c + a``,
summed one step at a time in double precision. ``area`` takes the majority label of the pixels
whose upsampling cell is the grid cell (ties go to the lower index, so ``others`` wins a tie),
falling back to the centre sample for cells that own no pixel (images smaller than the grid).

Upsampling is exact integer nearest: pixel ``(y, x)`` takes cell ``(y * G // H, x * G // W)``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

SamplingMethod = Literal["center", "area"]
SAMPLING_METHODS: tuple[str, ...] = ("center", "area")


def check_grid_size(grid: int) -> int:
    """Validate a grid size ``G`` (an ``int`` >= 1) and return it."""
    if isinstance(grid, bool) or not isinstance(grid, (int, np.integer)):
        raise TypeError(f"grid must be an int >= 1, got {type(grid).__name__}")
    if grid < 1:
        raise ValueError(f"grid must be >= 1, got {grid}")
    return int(grid)


def check_size(size: tuple[int, int]) -> tuple[int, int]:
    """Validate an image size ``(H, W)`` of positive ints and return it as a tuple."""
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        raise TypeError(f"size must be a tuple (H, W) of two ints, got {size!r}")
    h, w = size
    for name, v in (("H", h), ("W", w)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"size {name} must be an int, got {type(v).__name__}")
        if v < 1:
            raise ValueError(f"size must be (H, W) with H, W >= 1, got {tuple(size)}")
    return int(h), int(w)


def sample_indices(length: int, grid: int) -> np.ndarray:
    """Source pixel index of each of ``grid`` cells along an axis of ``length`` pixels.

    Exactly PIL's NEAREST resize (``ImagingScaleAffine``): positions accumulated one step at a
    time in float64, then truncated. Returns a ``(grid,)`` ``int64`` array in ``[0, length)``.
    """
    step = length / grid
    steps = np.full(grid, step, dtype=np.float64)
    steps[0] = 0.5 * step
    # np.add.accumulate sums left to right in float64, the same rounding as PIL's C loop.
    pos = np.add.accumulate(steps)
    return np.minimum(np.floor(pos).astype(np.int64), length - 1)


def cell_indices(length: int, grid: int) -> np.ndarray:
    """Grid cell of each pixel along an axis: ``p * grid // length``, shape ``(length,)``."""
    return (np.arange(length, dtype=np.int64) * grid) // length


def check_2d(array: np.ndarray, name: str) -> np.ndarray:
    """Return ``array`` if it is a non-empty 2-D numpy array; TypeError/ValueError otherwise."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(array).__name__}")
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"{name} must be a non-empty 2-D (H, W) array, got shape {array.shape}")
    return array


def labels_to_grid(
    label_map: np.ndarray,
    grid: int = 16,
    method: SamplingMethod = "center",
    num_classes: int | None = None,
) -> np.ndarray:
    """Downsample an ``(H, W)`` label map (or bool mask) to a ``(G, G)`` ``int64`` grid.

    ``num_classes`` bounds the class indices for ``area`` voting (default: ``max + 1``).
    """
    check_2d(label_map, "label_map")
    grid = check_grid_size(grid)
    if method not in SAMPLING_METHODS:
        raise ValueError(f"method must be one of {SAMPLING_METHODS}, got {method!r}")
    labels = label_map.astype(np.int64, copy=False)
    h, w = labels.shape
    rows, cols = sample_indices(h, grid), sample_indices(w, grid)
    centre = labels[np.ix_(rows, cols)]
    if method == "center":
        return centre
    if labels.size and labels.min() < 0:
        raise ValueError("label_map must hold non-negative class indices")
    k = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    cell = cell_indices(h, grid)[:, None] * grid + cell_indices(w, grid)[None, :]
    votes = np.bincount((cell * k + labels).ravel(), minlength=grid * grid * k)
    votes = votes.reshape(grid, grid, k)
    owned = votes.sum(axis=2) > 0  # False only where the image is smaller than the grid
    return np.where(owned, votes.argmax(axis=2), centre)


def mask_to_grid(mask: np.ndarray, grid: int = 16, method: SamplingMethod = "center") -> np.ndarray:
    """``(H, W)`` bool mask to a ``(G, G)`` bool grid (True = foreground)."""
    check_2d(mask, "mask")
    return labels_to_grid(mask.astype(bool), grid, method, num_classes=2).astype(bool)


def grid_to_labels(grid: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Upsample a ``(G, G)`` grid to ``size = (H, W)`` by exact integer nearest neighbour."""
    check_2d(grid, "grid")
    h, w = check_size(size)
    gh, gw = grid.shape
    # Pixels map to cells in order (cell_indices never decreases), so the upsampled image is
    # each cell repeated over its pixel count: np.repeat is about 10x faster than a fancy
    # index over every pixel (0.06 vs 0.75 ms for a 480 x 640 frame).
    rows = np.bincount(cell_indices(h, gh), minlength=gh)
    cols = np.bincount(cell_indices(w, gw), minlength=gw)
    return np.repeat(np.repeat(grid, rows, axis=0), cols, axis=1)


def grid_to_mask(grid: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(G, G)`` grid (bool, or class indices with 0 = others) to an ``(H, W)`` bool mask."""
    return grid_to_labels(np.asarray(grid) != 0, size)


def mask_to_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Tight box ``(x1, y1, x2, y2)`` of an ``(H, W)`` mask in pixel edges (``x2``/``y2``
    exclusive), or None when the mask is empty."""
    check_2d(mask, "mask")
    if mask.dtype != bool:
        mask = mask != 0
    cols = np.flatnonzero(mask.any(axis=0))
    if cols.size == 0:
        return None
    rows = np.flatnonzero(mask.any(axis=1))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1
