"""Processors of the backbones that load in this environment (no torchvision).

transformers cannot build the Qwen2-VL, Qwen2.5-VL and InternVL processors without torchvision
(their video processors need it; ``AutoProcessor.from_pretrained`` then returns the tokenizer
alone). The subclasses here take no video processor; images go through the PIL image processors.
InternVL's processor forgets ``image_seq_length`` on reload, so it is kept in an extra JSON file
(:data:`EXTRA_FILE`) that :func:`load_processor` restores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import (
    InternVLProcessor,
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
EXTRA_FILE = "text4seg_processor.json"


def load_processor(path: str | Path, backbone: str) -> Any:
    """Load the processor saved in ``path`` with the class that works here (see module doc)."""
    if backbone not in PROCESSOR_CLASSES:
        raise ValueError(f"unknown backbone {backbone!r}; allowed: {', '.join(PROCESSOR_CLASSES)}")
    path = Path(path)
    extra_file = path / EXTRA_FILE
    extra = json.loads(extra_file.read_text()) if extra_file.exists() else {}
    processor = PROCESSOR_CLASSES[backbone].from_pretrained(str(path), **extra)
    for key, value in extra.items():  # InternVL drops image_seq_length on reload
        setattr(processor, key, value)
    return processor


def save_processor(processor: Any, path: str | Path, backbone: str) -> None:
    """Save ``processor`` into ``path`` with what :func:`load_processor` needs to restore it."""
    path = Path(path)
    processor.save_pretrained(str(path))
    extra = {}
    if backbone == "internvl":
        extra["image_seq_length"] = int(processor.image_seq_length)
    (path / EXTRA_FILE).write_text(json.dumps(extra))
