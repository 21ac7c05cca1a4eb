"""Prompts for SAM built from a coarse mask (SPEC.md section 5), in plain numpy.

Frames and units:

* Images and masks are in the camera image's pixel frame, ``(H, W)``, ``mask[y, x]``.
* Points are ``(N, 2)`` ``float32`` ``(x, y)`` pixel indices (column, row); SAM adds the half
  pixel itself to reach the pixel centre.
* Boxes given to SAM are ``(x1, y1, x2, y2)`` with *inclusive* corner pixel indices (how SAM's own
  ``batched_mask_to_box`` writes them); the package's boxes are pixel edges with ``x2``/``y2``
  exclusive, converted by :func:`sam_box`.
* Mask prompts are SAM's low-resolution logit frame: a square ``(S, S)`` ``float32`` array
  (``S = 256`` for every released SAM: four times the image-embedding side) whose top-left
  ``(h', w')`` corner holds the image resized so its longest side is ``S``; the rest is padding.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from ..checks import check_image  # noqa: F401  (re-exported: the refiner's image check)
from ..descriptors.geometry import mask_to_box

# +/- ln(999): the logit of probability 0.999, the coarse mask's confidence as SAM's mask prompt.
MASK_LOGIT = math.log(999.0)
RngLike = np.random.Generator | int | None


def check_mask(mask: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """Validate an ``(H, W)`` bool mask (matching ``size`` when given) and return it."""
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"coarse_mask must be a numpy array (H, W) bool, got {type(mask).__name__}")
    if mask.dtype != bool:
        raise TypeError(f"coarse_mask must have dtype bool, got {mask.dtype}")
    if mask.ndim != 2:
        raise ValueError(f"coarse_mask must be 2-D (H, W), got shape {mask.shape}")
    if size is not None and tuple(mask.shape) != tuple(size):
        raise ValueError(f"coarse_mask shape {mask.shape} does not match the image size {size}")
    return mask


def as_rng(rng: RngLike, default_seed: int) -> np.random.Generator:
    """A ``numpy.random.Generator``: ``rng`` itself, or seeded from an int or ``default_seed``."""
    if rng is None:
        return np.random.default_rng(default_seed)
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a numpy Generator, an int seed or None, got {type(rng).__name__}")


def sample_points(
    mask: np.ndarray, rng: np.random.Generator, n_foreground: int = 10, n_background: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Draw random foreground and background points from a coarse ``(H, W)`` bool mask.

    Pixels are drawn without replacement, uniformly inside the mask (label 1) and outside it
    (label 0); a side with fewer pixels than asked gives all it has. Returns ``points``
    ``(N, 2)`` ``float32`` ``(x, y)`` pixel indices, foreground first, and ``labels`` ``(N,)``
    ``int64``. The same generator state gives the same points.
    """
    check_mask(mask)
    for name, n in (("n_foreground", n_foreground), ("n_background", n_background)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"{name} must be an int >= 0, got {n!r}")
    chosen: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for value, count in ((True, n_foreground), (False, n_background)):
        flat = np.flatnonzero(mask.ravel() == value)
        take = rng.choice(flat, size=min(count, flat.size), replace=False) if flat.size else flat
        ys, xs = np.divmod(take.astype(np.int64), mask.shape[1])
        chosen.append(np.stack([xs, ys], axis=1).astype(np.float32))
        labels.append(np.full(take.size, int(value), dtype=np.int64))
    return np.concatenate(chosen).reshape(-1, 2), np.concatenate(labels)


def tight_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Tight box ``(x1, y1, x2, y2)`` of a bool mask in pixel edges (x2/y2 exclusive), or None.

    The package's one definition (:func:`text4seg_ros.descriptors.geometry.mask_to_box`), after
    the refiner's own dtype check.
    """
    return mask_to_box(check_mask(mask))


def sam_box(box: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
    """A package box (pixel edges, x2/y2 exclusive) as SAM's ``(4,)`` inclusive XYXY, float32.

    ``size`` is the image ``(H, W)``; the box must have positive area inside the image.
    """
    if not isinstance(box, (tuple, list, np.ndarray)) or len(box) != 4:
        raise TypeError(f"box must be (x1, y1, x2, y2), got {box!r}")
    x1, y1, x2, y2 = (float(v) for v in box)
    h, w = size
    if not (0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h):
        raise ValueError(
            f"box must satisfy 0 <= x1 < x2 <= {w} and 0 <= y1 < y2 <= {h} (pixel edges), "
            f"got {tuple(box)}"
        )
    return np.array([x1, y1, x2 - 1.0, y2 - 1.0], dtype=np.float32)


def low_res_shape(size: tuple[int, int], side: int) -> tuple[int, int]:
    """``(h', w')`` of an ``(H, W)`` image resized so its longest side is ``side``.

    The same rounding as SAM's ``ResizeLongestSide.get_preprocess_shape`` (``int(x + 0.5)``).
    """
    h, w = size
    scale = side / max(h, w)
    return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))


def mask_logit_prompt(mask: np.ndarray, side: int = 256) -> np.ndarray:
    """The coarse mask as SAM's ``(side, side)`` ``float32`` low-resolution logit prompt.

    Inside the mask ``+ln(999)``, outside ``-ln(999)``; resized (PIL bilinear on the float
    logits) so the longest side is ``side``, then padded bottom/right with 0 (logit 0, "no
    opinion") the way SAM pads its input image, so prompt pixel ``(i, j)`` lies over the same
    image point as SAM's own low-resolution output pixel ``(i, j)``.
    """
    check_mask(mask)
    if isinstance(side, bool) or not isinstance(side, int) or side < 1:
        raise ValueError(f"side must be an int >= 1, got {side!r}")
    logits = np.where(mask, MASK_LOGIT, -MASK_LOGIT).astype(np.float32)
    h2, w2 = low_res_shape(mask.shape, side)
    resized = Image.fromarray(logits).resize((w2, h2), Image.Resampling.BILINEAR)
    out = np.zeros((side, side), dtype=np.float32)
    out[:h2, :w2] = np.asarray(resized, dtype=np.float32)
    return out
