"""Refinement of coarse masks: SAM (SPEC.md section 5) or GrabCut.

* :class:`Refiner`: the protocol the Segmenter uses, ``refine(image, coarse_mask, box, rng)``.
* :class:`SamRefiner` + :class:`RefinerConfig`: the procedure (random points + coarse mask as
  logit prompt, three passes feeding back SAM's low-resolution logits; or the box variant),
  with an image-embedding cache (``set_image`` then ``refine_mask``).
* :func:`load_refiner`: from a Hugging Face SAM directory or a ``sam_vit_*.pth`` checkpoint.
* Backends: :class:`HfSamBackend` (transformers) and :class:`SegmentAnythingBackend`.
* :class:`GrabCutRefiner` + :class:`GrabCutConfig`: OpenCV's GrabCut from a trimap around the
  coarse mask; needs no weights (the CPU choice when no SAM checkpoint is at hand).
"""

from __future__ import annotations

from .backends import (
    HfSamBackend,
    SamBackend,
    SamPrediction,
    SegmentAnythingBackend,
    build_processor,
    segment_anything_available,
)
from .convert import convert_state_dict, infer_config, sam_checkpoint_to_hf
from .grabcut import GrabCutConfig, GrabCutRefiner
from .loading import load_refiner
from .prompts import MASK_LOGIT, mask_logit_prompt, sample_points, tight_box
from .refiner import PROMPT_KINDS, Refiner, RefinerConfig, SamRefiner

__all__ = [
    "GrabCutConfig",
    "GrabCutRefiner",
    "MASK_LOGIT",
    "PROMPT_KINDS",
    "HfSamBackend",
    "Refiner",
    "RefinerConfig",
    "SamBackend",
    "SamPrediction",
    "SamRefiner",
    "SegmentAnythingBackend",
    "build_processor",
    "convert_state_dict",
    "infer_config",
    "load_refiner",
    "mask_logit_prompt",
    "sam_checkpoint_to_hf",
    "sample_points",
    "segment_anything_available",
    "tight_box",
]
