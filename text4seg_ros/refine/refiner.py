"""The SAM refiner: a coarse Text4Seg mask sharpened by Segment Anything (SPEC.md section 5).

Procedure of :meth:`SamRefiner.refine_mask` (``prompt="points"``, the paper's):

1. An empty coarse mask is returned unchanged: there is nothing to refine.
2. 10 foreground and 10 background pixels are drawn at random (without replacement) from the
   coarse mask and its complement (seeded, so a frame refines the same way every time).
3. The coarse mask becomes a logit prompt: ``+ln(999)`` inside, ``-ln(999)`` outside, resized
   into SAM's ``256 x 256`` low-resolution frame as SAM pads its input (longest side resized,
   padded bottom/right).
4. Pass 1: points + mask prompt. Passes 2 and 3: the same points + the previous pass's
   low-resolution logits as the mask prompt. Every pass asks SAM for a single mask (with 20
   points and a dense mask the prompt is unambiguous; SAM's docs recommend single output then).
5. The last pass's logits, upsampled to the image, are thresholded at 0.

``prompt="box"`` is the box-prompt variant: the coarse mask's tight box (or the given ``box``)
replaces the points; the mask prompt and the three passes are the same.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from .backends import SamBackend
from .prompts import (
    RngLike,
    as_rng,
    check_image,
    check_mask,
    mask_logit_prompt,
    sam_box,
    sample_points,
    tight_box,
)

PromptKind = Literal["points", "box"]
PROMPT_KINDS: tuple[str, ...] = ("points", "box")


@runtime_checkable
class Refiner(Protocol):
    """What the Segmenter needs from a mask refiner."""

    def refine(
        self,
        image: np.ndarray,
        coarse_mask: np.ndarray,
        box: tuple[int, int, int, int] | None = None,
        rng: RngLike = None,
    ) -> np.ndarray:
        """Refine an ``(H, W)`` bool mask of an ``(H, W, 3)`` ``uint8`` RGB image; returns
        an ``(H, W)`` bool mask. ``box`` is ``(x1, y1, x2, y2)`` pixel edges (x2/y2 exclusive)."""


@dataclass(frozen=True)
class RefinerConfig:
    """How the coarse mask is turned into SAM prompts."""

    prompt: PromptKind = "points"  # "points" (SPEC section 5) or "box" (tight-box variant)
    n_foreground: int = 10  # random points drawn inside the coarse mask
    n_background: int = 10  # random points drawn outside it
    passes: int = 3  # SAM calls; each after the first feeds back the previous low-res logits
    seed: int = 0  # seed of the point sampler when refine() gets no rng

    def __post_init__(self) -> None:
        if self.prompt not in PROMPT_KINDS:
            raise ValueError(f"prompt must be one of {PROMPT_KINDS}, got {self.prompt!r}")
        for name in ("n_foreground", "n_background", "passes", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        if self.passes < 1:
            raise ValueError(f"passes must be >= 1, got {self.passes}")
        if self.prompt == "points" and self.n_foreground + self.n_background == 0:
            raise ValueError("prompt='points' needs n_foreground + n_background >= 1")


def _fingerprint(image: np.ndarray) -> tuple[tuple[int, ...], bytes]:
    # A content hash, not id(): camera drivers reuse buffers, so the same object may hold a new
    # frame. blake2b over a 640x480 RGB frame costs about a millisecond, far below an encode.
    digest = hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16).digest()
    return image.shape, digest


class SamRefiner:
    """SAM refinement of coarse masks with an image-embedding cache.

    ``set_image(image)`` encodes a frame once; ``refine_mask(mask)`` then costs only prompt
    encoding and mask decoding (``config.passes`` calls). ``refine(image, mask)`` does both,
    re-encoding only when the image content changed, so several goals on one frame share one
    encode. ``last_score`` is SAM's predicted IoU of the last refined mask (None when the last
    mask was empty and not refined). The refiner owns its backend: encode frames through the
    refiner, not the backend, or the cache goes stale.
    """

    def __init__(self, backend: SamBackend, config: RefinerConfig | None = None) -> None:
        self.backend = backend
        self.config = config if config is not None else RefinerConfig()
        if not isinstance(self.config, RefinerConfig):
            raise TypeError(f"config must be a RefinerConfig, got {type(config).__name__}")
        self._size: tuple[int, int] | None = None
        self._key: tuple[tuple[int, ...], bytes] | None = None
        self.encodes = 0  # number of image encodes so far (for the cache's users and tests)
        self.last_score: float | None = None

    def set_image(self, image: np.ndarray) -> None:
        """Encode an ``(H, W, 3)`` ``uint8`` RGB frame for the following ``refine_mask`` calls."""
        check_image(image)
        self._encode(image, _fingerprint(image))

    def _encode(self, image: np.ndarray, key: tuple[tuple[int, ...], bytes]) -> None:
        self._size = self._key = None  # a failed encode must not leave the old frame cached
        self.backend.set_image(image)
        self._size = (int(image.shape[0]), int(image.shape[1]))
        self._key = key
        self.encodes += 1

    def refine(
        self,
        image: np.ndarray,
        coarse_mask: np.ndarray,
        box: tuple[int, int, int, int] | None = None,
        rng: RngLike = None,
    ) -> np.ndarray:
        """Refine ``coarse_mask`` ``(H, W)`` bool on ``image`` ``(H, W, 3)`` uint8 RGB.

        Encodes the image only if it differs from the cached one. See :meth:`refine_mask`.
        """
        check_image(image)
        check_mask(coarse_mask, image.shape[:2])
        if not coarse_mask.any():
            self.last_score = None
            return coarse_mask.copy()
        key = _fingerprint(image)  # hashed once per call, also when the frame is new
        if key != self._key:
            self._encode(image, key)
        return self.refine_mask(coarse_mask, box=box, rng=rng)

    def refine_mask(
        self,
        coarse_mask: np.ndarray,
        box: tuple[int, int, int, int] | None = None,
        rng: RngLike = None,
        config: RefinerConfig | None = None,
    ) -> np.ndarray:
        """Refine an ``(H, W)`` bool mask of the image given to :meth:`set_image`.

        ``box`` (pixel edges, x2/y2 exclusive) is the box prompt of ``prompt="box"`` (default:
        the coarse mask's tight box); with ``prompt="points"`` a given box is added to the
        points. ``rng`` is a ``numpy.random.Generator``, an int seed, or None for
        ``config.seed``. ``config`` overrides the refiner's own for this call (e.g. to compare
        prompt kinds on one cached embedding). Returns a new ``(H, W)`` bool array; an empty
        mask comes back as is.
        """
        if self._size is None:
            raise RuntimeError("call set_image(image) before refine_mask(), or use refine()")
        mask = check_mask(coarse_mask, self._size)
        if not mask.any():
            self.last_score = None
            return mask.copy()
        cfg = self.config if config is None else config
        if not isinstance(cfg, RefinerConfig):
            raise TypeError(f"config must be a RefinerConfig, got {type(cfg).__name__}")
        points = labels = sam_xyxy = None
        if cfg.prompt == "points":
            points, labels = sample_points(
                mask, as_rng(rng, cfg.seed), cfg.n_foreground, cfg.n_background
            )
            if box is not None:
                sam_xyxy = sam_box(box, self._size)
        else:
            sam_xyxy = sam_box(box if box is not None else tight_box(mask), self._size)
        mask_prompt = mask_logit_prompt(mask, self.backend.low_res_side)
        for i in range(cfg.passes):
            last = i == cfg.passes - 1
            pred = self.backend.predict(points, labels, sam_xyxy, mask_prompt, upsample=last)
            mask_prompt = pred.low_res  # fed back: SAM refines its own previous answer
        self.last_score = pred.score
        return pred.logits > 0.0
