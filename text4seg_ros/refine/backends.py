"""SAM backends: one image encoded once, then cheap prompt -> mask predictions.

Two implementations of :class:`SamBackend`:

* :class:`HfSamBackend`: transformers' ``SamModel`` + ``SamProcessor`` (PIL image processor; no
  torchvision needed). Loads any Hugging Face SAM directory, or weights converted from an
  official ``sam_vit_*.pth`` checkpoint (:mod:`.convert`).
* :class:`SegmentAnythingBackend`: the official ``segment_anything`` package's ``SamPredictor``,
  used only when that package imports (it needs torchvision, which this project does not
  install); its absence raises an ImportError that says so.

Both take prompts in the original image's pixel frame (see :mod:`.prompts` for the point, box
and mask-prompt conventions) and return SAM's low-resolution logits (to feed back as the next
mask prompt) and the logits upsampled to the image size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from .prompts import check_image


@dataclass
class SamPrediction:
    """One SAM mask prediction.

    * ``low_res``: ``(S, S)`` ``float32`` logits in SAM's padded low-resolution frame.
    * ``logits``: ``(H, W)`` ``float32`` logits at image size (threshold at 0 for the mask), or
      None when the caller asked for the low-resolution logits only.
    * ``score``: SAM's predicted IoU of the mask, a float (about ``[0, 1]`` for trained models).
    """

    low_res: np.ndarray
    logits: np.ndarray | None
    score: float


class SamBackend(Protocol):
    """A SAM model with an image-embedding cache: ``set_image`` once, ``predict`` many times."""

    low_res_side: int  # side S of the square low-resolution logit frame (256 for SAM)

    def set_image(self, image: np.ndarray) -> None:
        """Encode an ``(H, W, 3)`` ``uint8`` RGB image for the following ``predict`` calls."""

    def predict(
        self,
        points: np.ndarray | None,
        labels: np.ndarray | None,
        box: np.ndarray | None,
        mask_logits: np.ndarray | None,
        upsample: bool = True,
    ) -> SamPrediction:
        """One mask from points ``(N, 2)`` xy + labels ``(N,)``, a ``(4,)`` inclusive XYXY box
        and an ``(S, S)`` logit mask prompt (each optional), single-mask output. With
        ``upsample=False`` a backend may skip the image-size logits (``logits`` None)."""


def _check_prompts(
    points: np.ndarray | None, labels: np.ndarray | None, mask_logits: np.ndarray | None, side: int
) -> None:
    if (points is None) != (labels is None):
        raise ValueError("points and labels must be given together")
    if points is not None and (points.ndim != 2 or points.shape[1] != 2):
        raise ValueError(f"points must have shape (N, 2), got {points.shape}")
    if points is not None and labels.shape != (points.shape[0],):
        raise ValueError(f"labels must have shape ({points.shape[0]},), got {labels.shape}")
    if mask_logits is not None and mask_logits.shape != (side, side):
        raise ValueError(f"mask_logits must have shape ({side}, {side}), got {mask_logits.shape}")


class HfSamBackend:
    """transformers ``SamModel`` + ``SamProcessor`` behind the :class:`SamBackend` interface.

    ``device`` is a torch device string; the model runs in its own dtype (prompts are cast).
    """

    def __init__(self, model: Any, processor: Any, device: str = "cpu") -> None:
        from transformers import SamModel, SamProcessor

        if not isinstance(model, SamModel):
            raise TypeError(f"model must be a transformers SamModel, got {type(model).__name__}")
        if not isinstance(processor, SamProcessor):
            raise TypeError(f"processor must be a SamProcessor, got {type(processor).__name__}")
        self.model = model.to(device).eval()
        self.processor = processor
        self.device = torch.device(device)
        cfg = model.config.prompt_encoder_config
        # The mask prompt enters at 4x the embedding side (two stride-2 convolutions).
        self.low_res_side = 4 * int(cfg.image_size // cfg.patch_size)
        self.input_side = int(cfg.image_size)
        longest = processor.image_processor.size["longest_edge"]
        if longest != self.input_side:
            raise ValueError(
                f"processor resizes to {longest} px but the model expects {self.input_side} px"
            )
        self._embeddings: torch.Tensor | None = None
        self._original: tuple[int, int] | None = None
        self._reshaped: tuple[int, int] | None = None

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu") -> HfSamBackend:
        """Load a local Hugging Face SAM directory (``config.json`` + weights).

        The processor is read from the directory when it has one, else built for the model's
        input size (``image_size``), so converted checkpoints need no processor files.
        """
        from transformers import SamModel, SamProcessor

        path = Path(path)
        model = SamModel.from_pretrained(path, local_files_only=True)
        if (path / "processor_config.json").is_file() or (
            path / "preprocessor_config.json"
        ).is_file():
            processor = SamProcessor.from_pretrained(path, local_files_only=True)
        else:
            processor = build_processor(int(model.config.vision_config.image_size))
        return cls(model, processor, device)

    def set_image(self, image: np.ndarray) -> None:
        """Resize (longest side to the model's input size), normalise, pad and encode."""
        check_image(image)
        enc = self.processor(images=image, return_tensors="pt")
        dtype = next(self.model.parameters()).dtype
        with torch.inference_mode():
            self._embeddings = self.model.get_image_embeddings(
                enc["pixel_values"].to(self.device, dtype)
            )
        self._original = tuple(int(v) for v in enc["original_sizes"][0])
        self._reshaped = tuple(int(v) for v in enc["reshaped_input_sizes"][0])

    def predict(
        self,
        points: np.ndarray | None,
        labels: np.ndarray | None,
        box: np.ndarray | None,
        mask_logits: np.ndarray | None,
        upsample: bool = True,
    ) -> SamPrediction:
        """See :class:`SamBackend`; prompts are scaled into the resized input frame here."""
        if self._embeddings is None:
            raise RuntimeError("call set_image(image) before predict()")
        _check_prompts(points, labels, mask_logits, self.low_res_side)
        (h, w), (rh, rw) = self._original, self._reshaped
        scale = np.array([rw / w, rh / h], dtype=np.float64)  # (x, y) image -> input frame
        dtype = next(self.model.parameters()).dtype
        kwargs: dict[str, torch.Tensor] = {}
        if points is not None:
            xy = (points.astype(np.float64) * scale)[None, None]  # (1, 1, N, 2)
            kwargs["input_points"] = torch.as_tensor(xy, dtype=dtype, device=self.device)
            lab = labels.astype(np.int64)[None, None]  # (1, 1, N)
            kwargs["input_labels"] = torch.as_tensor(lab, device=self.device)
        if box is not None:
            xyxy = (box.astype(np.float64).reshape(2, 2) * scale).reshape(1, 1, 4)
            kwargs["input_boxes"] = torch.as_tensor(xyxy, dtype=dtype, device=self.device)
        if mask_logits is not None:
            m = torch.as_tensor(mask_logits[None, None], dtype=dtype, device=self.device)
            kwargs["input_masks"] = m  # (1, 1, S, S)
        with torch.inference_mode():
            out = self.model(image_embeddings=self._embeddings, multimask_output=False, **kwargs)
            low_res = out.pred_masks[0, 0].float()  # (1, S, S)
            full = None
            if upsample:  # the feedback passes need only the low-resolution logits
                full = self.processor.post_process_masks(
                    [low_res[None]],
                    [self._original],
                    [self._reshaped],
                    binarize=False,
                    pad_size={"height": self.input_side, "width": self.input_side},
                )[0][0, 0]  # (H, W)
        return SamPrediction(
            low_res=low_res[0].cpu().numpy().astype(np.float32),
            logits=None if full is None else full.cpu().numpy().astype(np.float32),
            score=float(out.iou_scores[0, 0, 0]),
        )


def build_processor(input_side: int = 1024) -> Any:
    """A ``SamProcessor`` (PIL backend) resizing the longest side to ``input_side`` and padding
    to ``input_side`` squared, with SAM's ImageNet normalisation."""
    from transformers import SamProcessor
    from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

    image_processor = SamImageProcessorPil(
        size={"longest_edge": input_side},
        pad_size={"height": input_side, "width": input_side},
    )
    return SamProcessor(image_processor=image_processor)


def segment_anything_available() -> bool:
    """True when the official ``segment_anything`` package (and its torchvision) imports."""
    try:
        import segment_anything  # noqa: F401
    except Exception:  # ImportError, or torchvision failing inside it
        return False
    return True


def _import_segment_anything() -> Any:
    try:
        import segment_anything
    except Exception as exc:
        raise ImportError(
            "the segment_anything backend needs the official 'segment-anything' package and "
            "torchvision, which are not installed here; use a Hugging Face SAM directory or "
            f"let the loader convert the checkpoint for transformers instead ({exc})"
        ) from exc
    return segment_anything


class SegmentAnythingBackend:
    """The official ``segment_anything.SamPredictor`` behind the :class:`SamBackend` interface.

    ``predictor.predict`` takes points ``(N, 2)`` xy and a ``(4,)`` XYXY box in original image
    pixels and a ``(1, 256, 256)`` logit mask prompt, and with ``return_logits=True`` returns
    image-size logits, IoU predictions and the low-resolution logits.
    """

    def __init__(self, sam_model: Any) -> None:
        sa = _import_segment_anything()
        self.predictor = sa.SamPredictor(sam_model)
        embed_h = int(sam_model.prompt_encoder.image_embedding_size[0])
        self.low_res_side = 4 * embed_h

    @classmethod
    def from_state_dict(
        cls, state: dict[str, torch.Tensor], kind: str, device: str = "cpu"
    ) -> SegmentAnythingBackend:
        """Build ``sam_model_registry[kind]`` (``vit_b``/``vit_l``/``vit_h``) without a file
        (the registry would ``torch.load`` unsafely) and load ``state`` strictly."""
        sa = _import_segment_anything()
        if kind not in sa.sam_model_registry:
            raise ValueError(f"unknown SAM kind {kind!r}; known: {sorted(sa.sam_model_registry)}")
        sam = sa.sam_model_registry[kind](checkpoint=None)
        sam.load_state_dict(state, strict=True)
        return cls(sam.to(device).eval())

    def set_image(self, image: np.ndarray) -> None:
        """Encode an ``(H, W, 3)`` ``uint8`` RGB image (``SamPredictor.set_image``)."""
        self.predictor.set_image(check_image(image), image_format="RGB")

    def predict(
        self,
        points: np.ndarray | None,
        labels: np.ndarray | None,
        box: np.ndarray | None,
        mask_logits: np.ndarray | None,
        upsample: bool = True,
    ) -> SamPrediction:
        """See :class:`SamBackend`."""
        _check_prompts(points, labels, mask_logits, self.low_res_side)
        masks, scores, low_res = self.predictor.predict(
            point_coords=points,
            point_labels=labels,
            box=box,
            mask_input=None if mask_logits is None else mask_logits[None],
            multimask_output=False,
            return_logits=True,
        )
        return SamPrediction(
            low_res=np.asarray(low_res[0], dtype=np.float32),
            logits=np.asarray(masks[0], dtype=np.float32),
            score=float(scores[0]),
        )
