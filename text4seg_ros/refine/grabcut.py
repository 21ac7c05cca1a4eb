"""GrabCut refinement of coarse masks: a CPU refiner that needs no weights.

A Text4Seg mask is a ``G x G`` grid upsampled to the frame, so its edges can be off by up to a
grid cell. SAM fixes that where its weights are at hand (:mod:`.refiner`); GrabCut (Rother et
al. 2004, OpenCV's ``cv2.grabCut``) does it from the frame alone: it fits colour models
(Gaussian mixtures) to the inside and the outside of the coarse mask and cuts the frame along
image edges where the two differ. Procedure of :meth:`GrabCutRefiner.refine`:

1. An empty coarse mask, or one without background pixels, is returned unchanged.
2. A frame whose longest side exceeds ``max_side`` is refined at reduced size (area resize of
   the image, nearest of the mask) and the result resized back (bilinear, threshold at one half).
3. The trimap: inside the coarse mask *probably foreground*; a band ``band`` grid cells wide
   around it (``band * H / G`` by ``band * W / G`` pixels, an elliptic dilation) *probably
   background*; everything further out *background*, fixed. So the cut can move a boundary by
   at most the band outwards and anywhere inwards, but never finds objects the model did not
   mark.
4. ``iterations`` rounds of GrabCut from that trimap, OpenCV's random generator seeded with
   ``seed`` first (the k-means that starts its mixtures is random): the same frame and mask
   refine the same way every time.
5. A cut that keeps no pixel is not an answer the model gave: the coarse mask is returned
   (counted in ``kept``), as it is when OpenCV rejects the input.

The band was chosen on held-out tabletop scenes 500 to 559, not the scenes the demo reports
(models/demo/README.md, "Refinement").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .prompts import RngLike, check_image, check_mask


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as exc:  # a dependency of the package (requirements/ml.txt)
        raise ImportError(
            "the GrabCut refiner needs OpenCV: pip install opencv-python-headless"
        ) from exc
    return cv2


@dataclass(frozen=True)
class GrabCutConfig:
    """How the coarse mask becomes GrabCut's trimap (module docstring)."""

    band: float = 0.5  # width of the "probably background" ring around the mask, in grid cells
    iterations: int = 3  # GrabCut rounds (colour-model fit + graph cut); 5 gained nothing
    max_side: int = 320  # longest side (px) refined at full size; larger frames are reduced
    seed: int = 0  # OpenCV's random generator, reseeded before each cut

    def __post_init__(self) -> None:
        if isinstance(self.band, bool) or not isinstance(self.band, int | float):
            raise TypeError(f"band must be a number of grid cells, got {self.band!r}")
        if not 0.0 < float(self.band) <= 4.0:
            raise ValueError(f"band must be in (0, 4] grid cells, got {self.band}")
        for name, low in (("iterations", 1), ("max_side", 16), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


class GrabCutRefiner:
    """Sharpen coarse ``(H, W)`` bool masks of ``(H, W, 3)`` uint8 RGB frames with GrabCut.

    ``grid`` is the descriptor grid ``G`` the masks come from (the band is measured in its
    cells). Counters: ``refined`` (masks cut), ``kept`` (masks returned unchanged because the
    cut kept nothing or OpenCV rejected the input). Implements the
    :class:`~text4seg_ros.refine.Refiner` protocol; ``box`` and ``rng`` are accepted and unused
    (the trimap comes from the mask, the seed from the config).
    """

    def __init__(self, grid: int, config: GrabCutConfig | None = None) -> None:
        if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
            raise ValueError(f"grid must be an int >= 1, got {grid!r}")
        self.config = config if config is not None else GrabCutConfig()
        if not isinstance(self.config, GrabCutConfig):
            raise TypeError(f"config must be a GrabCutConfig, got {type(config).__name__}")
        self.grid = grid
        self._cv2 = _cv2()
        self.refined = 0
        self.kept = 0

    def refine(
        self,
        image: np.ndarray,
        coarse_mask: np.ndarray,
        box: tuple[int, int, int, int] | None = None,
        rng: RngLike = None,
    ) -> np.ndarray:
        """The refined ``(H, W)`` bool mask (a new array; see the module docstring)."""
        check_image(image)
        mask = check_mask(coarse_mask, image.shape[:2])
        if not mask.any() or mask.all():
            return mask.copy()
        cv2 = self._cv2
        h, w = mask.shape
        scale = min(1.0, self.config.max_side / max(h, w))
        small = (max(1, round(w * scale)), max(1, round(h * scale)))  # cv2 sizes are (W, H)
        if scale < 1.0:
            img = cv2.resize(image, small, interpolation=cv2.INTER_AREA)
            m = cv2.resize(mask.astype(np.uint8), small, interpolation=cv2.INTER_NEAREST) > 0
            if not m.any() or m.all():
                self.kept += 1
                return mask.copy()
        else:
            img, m = image, mask
        cut = self._cut(img, m)
        if cut is None or not cut.any():
            self.kept += 1
            return mask.copy()
        self.refined += 1
        if scale < 1.0:
            up = cv2.resize(cut.astype(np.uint8) * 255, (w, h), interpolation=cv2.INTER_LINEAR)
            return up > 127
        return cut

    def _cut(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
        """GrabCut of ``image`` (RGB) from the trimap of ``mask``; None when OpenCV refuses."""
        cv2 = self._cv2
        h, w = mask.shape
        ry = max(1, round(self.config.band * h / self.grid))
        rx = max(1, round(self.config.band * w / self.grid))
        ring = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * rx + 1, 2 * ry + 1))
        near = cv2.dilate(mask.astype(np.uint8), ring) > 0
        trimap = np.full((h, w), cv2.GC_BGD, np.uint8)
        trimap[near] = cv2.GC_PR_BGD
        trimap[mask] = cv2.GC_PR_FGD
        bgd = np.zeros((1, 65), np.float64)  # OpenCV's model buffers: 5 components x 13
        fgd = np.zeros((1, 65), np.float64)
        cv2.setRNGSeed(self.config.seed)
        bgr = np.ascontiguousarray(image[:, :, ::-1])
        try:
            cv2.grabCut(bgr, trimap, None, bgd, fgd, self.config.iterations, cv2.GC_INIT_WITH_MASK)
        except cv2.error:  # e.g. a colour model without samples on a degenerate frame
            return None
        return (trimap == cv2.GC_FGD) | (trimap == cv2.GC_PR_FGD)
