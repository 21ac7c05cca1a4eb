"""Checks shared by the model, the refiner and the front ends: camera frames and weight dtypes.

A leaf of the package (numpy only at import; torch is imported inside :func:`as_dtype`), so that
``model/`` and ``refine/`` both use it without importing each other, and the CLI and the node
can offer the dtype names without loading torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Weight dtypes the Segmenter and the SAM refiner load (names as torch spells them).
DTYPE_NAMES: tuple[str, ...] = ("float32", "float16", "bfloat16")


def check_image(image: np.ndarray) -> np.ndarray:
    """Validate an ``(H, W, 3)`` ``uint8`` RGB frame; return it C-contiguous (a copy only when
    it was not). The one image check of the package (Segmenter and refiner)."""
    if not isinstance(image, np.ndarray):
        raise TypeError(
            f"image must be a numpy array (H, W, 3) uint8 RGB, got {type(image).__name__}"
        )
    if image.dtype != np.uint8:
        raise TypeError(f"image must be uint8 RGB (H, W, 3), got dtype {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image must have shape (H, W, 3) RGB, got {image.shape}")
    return np.ascontiguousarray(image)


def as_dtype(dtype: Any) -> Any:
    """``torch.dtype`` from a name in :data:`DTYPE_NAMES` (``torch.`` prefix allowed) or one of
    those dtypes; ValueError naming the allowed ones otherwise."""
    import torch  # here, not at module import: this module stays importable without torch

    allowed = {name: getattr(torch, name) for name in DTYPE_NAMES}
    if isinstance(dtype, torch.dtype):
        if dtype not in allowed.values():
            raise ValueError(f"dtype {dtype} not supported; allowed: {', '.join(DTYPE_NAMES)}")
        return dtype
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in allowed:
        return allowed[dtype.removeprefix("torch.")]
    raise ValueError(f"unknown dtype {dtype!r}; allowed: {', '.join(DTYPE_NAMES)}")
