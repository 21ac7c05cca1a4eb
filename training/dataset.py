"""JSONL samples -> model inputs with the loss on answer tokens only.

Tokenisation mirrors inference exactly (:mod:`text4seg_ros.model.registry`): the shared prefix
(system, user turn start, image placeholder) goes through the backbone's own processor with the
image (per-backbone resizing, padding and image-token expansion), and the per-goal suffix
(question, assistant start, answer, turn end) through the tokenizer without special tokens, the
same split the Segmenter uses when it encodes the prefix once and decodes goals against it.

Labels are ``-100`` on the prefix (including every image token) and on the question part of
the suffix; the answer tokens (answer sentence, ``<seg>`` descriptor ``</seg>``, turn end) are
the targets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from text4seg_ros.model.registry import Backbone

from .data.sample import ChatSample, read_jsonl

IGNORE_INDEX = -100
# Per-token processor outputs besides input_ids that must follow the ids through concatenation
# and padding: (fill value for suffix tokens, fill value for padding).
_TOKEN_FIELDS: dict[str, tuple[int, int]] = {
    "attention_mask": (1, 0),
    "mm_token_type_ids": (0, 0),
    "token_type_ids": (0, 0),
}


def load_image(sample: ChatSample) -> Image.Image:
    """The sample's image as RGB, cropped to ``sample.crop`` when given."""
    with Image.open(sample.image) as im:
        image = im.convert("RGB")
    if sample.crop is not None:
        image = image.crop(sample.crop)
    return image


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def encode_sample(
    sample: ChatSample, backbone: Backbone, processor: Any, max_length: int = 2048
) -> dict[str, torch.Tensor]:
    """One sample as tensors: ``input_ids``/``labels``/``attention_mask`` ``(L,)`` plus the
    processor's image tensors (batch dimension 1, e.g. ``pixel_values (1, 3, H, W)``).

    Raises ValueError when the sample is longer than ``max_length`` tokens.
    """
    tokenizer = processor.tokenizer
    prefix = processor(
        images=[load_image(sample)], text=[backbone.prompt_prefix()], return_tensors="pt"
    )
    question_ids = tokenizer(backbone.prompt_suffix(sample.question, ""), add_special_tokens=False)[
        "input_ids"
    ]
    suffix_ids = tokenizer(
        backbone.prompt_suffix(sample.question, sample.answer) + backbone.turn_end,
        add_special_tokens=False,
    )["input_ids"]
    # The question part ends where the two tokenisations part (a BPE merge across the
    # question/answer boundary moves it by at most a token or two).
    n_question = _common_prefix(question_ids, suffix_ids)
    prefix_ids = prefix["input_ids"][0]
    n_prefix = int(prefix_ids.shape[0])
    suffix = torch.tensor(suffix_ids, dtype=torch.long)
    input_ids = torch.cat([prefix_ids, suffix])
    if input_ids.shape[0] > max_length:
        raise ValueError(
            f"sample {sample.id} has {input_ids.shape[0]} tokens > max_length {max_length}: "
            "raise --max_length (G = 32 open-vocabulary answers are long) or drop the sample"
        )
    labels = input_ids.clone()
    labels[: n_prefix + n_question] = IGNORE_INDEX
    out: dict[str, torch.Tensor] = {"input_ids": input_ids, "labels": labels}
    for key, value in prefix.items():
        if key == "input_ids" or not isinstance(value, torch.Tensor):
            continue
        if key in _TOKEN_FIELDS:
            fill = torch.full((suffix.shape[0],), _TOKEN_FIELDS[key][0], dtype=value.dtype)
            out[key] = torch.cat([value[0], fill])
        else:
            out[key] = value
    return out


def image_size(sample: ChatSample) -> tuple[int, int]:
    """``(width, height)`` of the sample's image after its crop (reads the header only)."""
    if sample.crop is not None:
        x1, y1, x2, y2 = sample.crop
        return x2 - x1, y2 - y1
    with Image.open(sample.image) as im:
        return im.size


def sample_lengths(samples: Sequence[ChatSample], backbone: Backbone, processor: Any) -> list[int]:
    """Token count of each sample as :func:`encode_sample` builds it, without decoding images.

    The prefix length depends on the image size alone (each backbone's processor resizes,
    tiles or pads by size), so it is measured once per distinct size on a blank image; the
    suffixes are tokenised in one batch.
    """
    prefix_text = backbone.prompt_prefix()
    prefix_len: dict[tuple[int, int], int] = {}
    sizes = [image_size(s) for s in samples]
    for size in set(sizes):
        blank = Image.new("RGB", size)
        ids = processor(images=[blank], text=[prefix_text], return_tensors="pt")["input_ids"]
        prefix_len[size] = int(ids.shape[1])
    texts = [backbone.prompt_suffix(s.question, s.answer) + backbone.turn_end for s in samples]
    suffixes = processor.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    return [prefix_len[size] + len(ids) for size, ids in zip(sizes, suffixes)]


class ChatDataset(Dataset):
    """Samples of one or more JSONL files, encoded on access (in data-loader workers).

    Samples longer than ``max_length`` tokens are dropped here, before any sampler sees them:
    their ids are in :attr:`dropped` (the trainer logs the count). The choice depends only on
    the data and the processor, so every rank and every resumed run drops the same samples and
    the data order stays the same.
    """

    def __init__(
        self,
        paths: Sequence[str],
        backbone: Backbone,
        processor: Any,
        max_length: int = 2048,
    ) -> None:
        if isinstance(paths, str):
            paths = [paths]
        samples: list[ChatSample] = [s for p in paths for s in read_jsonl(p)]
        if not samples:
            raise ValueError(f"no samples in {list(paths)}")
        lengths = sample_lengths(samples, backbone, processor)
        self.samples = [s for s, n in zip(samples, lengths) if n <= max_length]
        self.dropped: list[str] = [s.id for s, n in zip(samples, lengths) if n > max_length]
        if not self.samples:
            raise ValueError(
                f"all {len(samples)} samples are longer than max_length {max_length} tokens "
                f"(shortest {min(lengths)}): raise --max_length"
            )
        self.backbone = backbone
        self.processor = processor
        self.max_length = max_length

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return encode_sample(self.samples[index], self.backbone, self.processor, self.max_length)


class Collator:
    """Right-pad token fields to the longest sample; concatenate image tensors on dim 0.

    ``input_ids`` pad with ``pad_id``, ``labels`` with ``-100``, ``attention_mask`` with 0.
    Image tensors already carry a leading batch (or patch) dimension, so concatenation gives
    each backbone's batched layout (LLaVA ``(B, 3, H, W)``, Qwen2-VL ``(sum patches, D)`` with
    ``image_grid_thw (B, 3)``).
    """

    def __init__(self, pad_id: int) -> None:
        self.pad_id = int(pad_id)

    def __call__(self, items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        longest = max(int(it["input_ids"].shape[0]) for it in items)
        batch: dict[str, torch.Tensor] = {}
        pads = {"input_ids": self.pad_id, "labels": IGNORE_INDEX}
        pads.update({k: v[1] for k, v in _TOKEN_FIELDS.items()})
        for key in items[0]:
            values = [it[key] for it in items]
            if key in pads:
                out = torch.full((len(items), longest), pads[key], dtype=values[0].dtype)
                for i, v in enumerate(values):
                    out[i, : v.shape[0]] = v
                batch[key] = out
            else:
                batch[key] = torch.cat(values, dim=0)
        return batch
