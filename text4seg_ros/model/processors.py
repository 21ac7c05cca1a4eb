"""Processors of the backbones that load in this environment (no torchvision).

transformers cannot build the Qwen2-VL, Qwen2.5-VL and InternVL processors without torchvision
(their video processors need it; ``AutoProcessor.from_pretrained`` then returns the tokenizer
alone). The subclasses here take no video processor; images go through the PIL image processors.
InternVL's processor forgets ``image_seq_length`` on reload, so it is kept in an extra JSON file
(:data:`EXTRA_FILE`) that :func:`load_processor` restores. Saved folders name the upstream
classes (``Qwen2VLProcessor``, ...), never these subclasses, so plain ``AutoProcessor`` loads them
wherever torchvision is installed.

:func:`configure_processor` fixes the image settings that decide where the descriptor grid lies,
the same way for training and inference (both load through :func:`load_processor`):

* LLaVA-1.5 pads the frame to a square with the mean colour before resizing (the original
  ``image_aspect_ratio: pad``). The published ``llava-1.5-7b-hf`` processor resizes the short
  side to 336 and centre-crops instead, which cuts 12.5 % of a 640 x 480 frame's width on each
  side while the grid covers the whole frame; it is replaced by the padding LLaVA processor.
* InternVL: transformers' processor tiles a frame into up to ``max_patches`` 448 x 448 tiles plus
  a thumbnail (12 + 1 = 13 tiles, 3,328 image tokens, for 640 x 480 with the published
  settings). ``max_tiles`` (default 1: the whole frame resized to one tile, 256 tokens) bounds
  it; the value is recorded with the processor so a trained model is served as it was trained.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import (
    InternVLProcessor,
    LlavaImageProcessorPil,
    LlavaProcessor,
    Qwen2_5_VLProcessor,
    Qwen2VLProcessor,
)


class Qwen2VLProcessorNoVideo(Qwen2VLProcessor):
    """``Qwen2VLProcessor`` without a video processor (transformers needs torchvision for it)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


class Qwen2_5_VLProcessorNoVideo(Qwen2_5_VLProcessor):
    """``Qwen2_5_VLProcessor`` without a video processor (see :class:`Qwen2VLProcessorNoVideo`)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


class InternVLProcessorNoVideo(InternVLProcessor):
    """``InternVLProcessor`` without a video processor (see :class:`Qwen2VLProcessorNoVideo`)."""

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        image_seq_length: int = 256,
        chat_template=None,
        **kwargs,
    ):
        super().__init__(
            image_processor,
            tokenizer,
            None,
            image_seq_length=image_seq_length,
            chat_template=chat_template,
            **kwargs,
        )


PROCESSOR_CLASSES: dict[str, type] = {
    "llava": LlavaProcessor,
    "qwen2_vl": Qwen2VLProcessorNoVideo,
    "qwen2_5_vl": Qwen2_5_VLProcessorNoVideo,
    "internvl": InternVLProcessorNoVideo,
}
# Our subclass name -> the upstream class written into saved folders.
UPSTREAM_NAMES: dict[str, str] = {
    cls.__name__: cls.__mro__[1].__name__
    for cls in PROCESSOR_CLASSES.values()
    if not cls.__module__.startswith("transformers.")
}
EXTRA_FILE = "text4seg_processor.json"
# Backbones whose upstream processor has a video processor (built where torchvision exists):
# those served here by a subclass without one.
VIDEO_BACKBONES = tuple(b for b, c in PROCESSOR_CLASSES.items() if c.__name__ in UPSTREAM_NAMES)
DEFAULT_MAX_TILES = 1
# Keys of EXTRA_FILE that are our settings, not processor constructor arguments.
_SETTINGS = ("max_tiles", "pad_to_square")
# Image processor fields carried over when LLaVA's CLIP processor is replaced (same resizing,
# normalisation and output size; only the padding is added).
_LLAVA_FIELDS = (
    "do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale",
    "rescale_factor", "do_normalize", "image_mean", "image_std", "do_convert_rgb",
)  # fmt: skip


def configure_processor(
    processor: Any,
    backbone: str,
    max_tiles: int = DEFAULT_MAX_TILES,
    pad_to_square: bool = True,
) -> Any:
    """Set the image handling that training and inference share (see module doc); in place.

    LLaVA: ``pad_to_square`` (LLaVA-1.5's padding, mean colour) or the processor's own resize
    and centre crop. InternVL: at most ``max_tiles`` tiles (1: no tiling, no thumbnail). Other
    backbones are returned unchanged. Returns ``processor``.
    """
    if isinstance(max_tiles, bool) or not isinstance(max_tiles, int) or max_tiles < 1:
        raise ValueError(f"max_tiles must be an int >= 1, got {max_tiles!r}")
    image_processor = processor.image_processor
    if backbone == "llava":
        if pad_to_square and not getattr(image_processor, "do_pad", False):
            kept = {k: getattr(image_processor, k) for k in _LLAVA_FIELDS}
            processor.image_processor = LlavaImageProcessorPil(**kept, do_pad=True)
        elif not pad_to_square and getattr(image_processor, "do_pad", False):
            image_processor.do_pad = False
    elif backbone == "internvl":
        image_processor.crop_to_patches = max_tiles > 1
        image_processor.min_patches = 1
        image_processor.max_patches = max_tiles
    return processor


def processor_settings(processor: Any, backbone: str) -> dict[str, Any]:
    """The :func:`configure_processor` settings ``processor`` currently has."""
    image_processor = processor.image_processor
    if backbone == "llava":
        return {"pad_to_square": bool(getattr(image_processor, "do_pad", False))}
    if backbone == "internvl":
        tiled = bool(getattr(image_processor, "crop_to_patches", False))
        return {"max_tiles": int(image_processor.max_patches) if tiled else 1}
    return {}


def load_processor(
    path: str | Path,
    backbone: str,
    max_tiles: int | None = None,
    pad_to_square: bool | None = None,
) -> Any:
    """Load the processor saved in ``path`` with the class that works here (see module doc),
    configured by :func:`configure_processor`.

    ``max_tiles`` / ``pad_to_square``: None takes the value recorded in :data:`EXTRA_FILE` by
    :func:`save_processor` (how the model was trained), else the defaults (1 tile; padding).
    """
    if backbone not in PROCESSOR_CLASSES:
        raise ValueError(f"unknown backbone {backbone!r}; allowed: {', '.join(PROCESSOR_CLASSES)}")
    path = Path(path)
    extra_file = path / EXTRA_FILE
    extra = json.loads(extra_file.read_text()) if extra_file.exists() else {}
    settings = {k: extra.pop(k) for k in _SETTINGS if k in extra}
    processor = PROCESSOR_CLASSES[backbone].from_pretrained(str(path), **extra)
    for key, value in extra.items():  # InternVL drops image_seq_length on reload
        setattr(processor, key, value)
    if max_tiles is None:
        max_tiles = int(settings.get("max_tiles", DEFAULT_MAX_TILES))
    if pad_to_square is None:
        pad_to_square = bool(settings.get("pad_to_square", True))
    return configure_processor(processor, backbone, max_tiles, pad_to_square)


def _upstream_names(value: Any) -> tuple[Any, bool]:
    """``value`` (parsed JSON) with every ``processor_class`` of ours renamed upstream."""
    changed = False
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k == "processor_class" and v in UPSTREAM_NAMES:
                v, changed = UPSTREAM_NAMES[v], True
            else:
                v, sub = _upstream_names(v)
                changed |= sub
            out[k] = v
        return out, changed
    if isinstance(value, list):
        items = [_upstream_names(v) for v in value]
        return [v for v, _ in items], any(c for _, c in items)
    return value, False


def save_processor(processor: Any, path: str | Path, backbone: str) -> None:
    """Save ``processor`` into ``path`` with what :func:`load_processor` needs to restore it.

    JSON files name the upstream processor class (``AutoProcessor`` resolves it where
    torchvision exists; here :func:`load_processor` picks the subclass by backbone).
    """
    path = Path(path)
    processor.save_pretrained(str(path))
    if backbone in VIDEO_BACKBONES:
        # transformers 5 nests the image processor in processor_config.json; where torchvision
        # exists, AutoProcessor also builds the upstream video processor and, finding neither a
        # nested "video_processor" nor video_preprocessor_config.json, falls back to
        # preprocessor_config.json, the layout of the published checkpoints. Without that file
        # it raised OSError ("Can't load video processor"; seen on the GPU image).
        processor.image_processor.save_pretrained(str(path))
    for file in path.glob("*.json"):
        data, changed = _upstream_names(json.loads(file.read_text(encoding="utf-8")))
        if changed:
            file.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    extra: dict[str, Any] = processor_settings(processor, backbone)
    if backbone == "internvl":
        extra["image_seq_length"] = int(processor.image_seq_length)
    (path / EXTRA_FILE).write_text(json.dumps(extra))
