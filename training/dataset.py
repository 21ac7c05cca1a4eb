"""JSONL samples -> model inputs with the loss on answer tokens only.

Tokenisation mirrors inference exactly (:mod:`text4seg_ros.model.registry`): the shared prefix
(system, user turn start, image placeholder) goes through the backbone's own processor with the
image (per-backbone resizing, padding and image-token expansion), and the per-goal suffix
(question, assistant start, answer, turn end) through the tokenizer without special tokens, the
same split the Segmenter uses when it encodes the prefix once and decodes goals against it. A
question-first model (``text4seg.json`` ``"prompt": "question_first"``) has the question in
the prefix, before the image, as the Segmenter prompts it.

Labels are ``-100`` on the prefix (including every image token) and on the question part of
the suffix; the answer tokens (answer sentence, ``<seg>`` descriptor ``</seg>``, turn end) are
the targets. With ``loss_on="free"`` only the descriptor tokens where the decoding grammar
allows more than one token keep their labels (a run's first label token, its count digits, the
separator that ends it; for B-SD also the box digits and the choice to end): every other answer
token is forced at inference (the answer sentence is part of the prompt, the grammar writes the
rest by jump-forward), so its loss teaches nothing the decoder uses (../shared/
DEMO_MODEL_FACTS.md item 2: a model answering the prior scores a low average loss).

``fg_weight`` (default 1: a plain mean) adds ``loss_weights`` ``(L,)``: ``fg_weight`` on the
labelled tokens of every descriptor row that holds a target run (``LABEL *N`` with a label other
than ``others``: the run, the count before it that places it, the row's end), 1 on the other
labelled tokens, 0 where there is no label. Most rows are ``others *G``: a model decides each
row's first run greedily, so under that prior a plain mean leaves "others" more likely than the
target even where the model has found it; weighting the target rows moves that balance.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from text4seg_ros.descriptors import OTHERS, SEG_OPEN
from text4seg_ros.descriptors.bsd import REF_OPEN
from text4seg_ros.descriptors.grammar import TokenCodec, bsd_grammar, rrle_grammar
from text4seg_ros.model.registry import Backbone
from text4seg_ros.prompts import Task

from .data.sample import ChatSample, read_jsonl

IGNORE_INDEX = -100
LOSS_ON: tuple[str, ...] = ("answer", "free")
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


def _grammar(sample: ChatSample, codec: TokenCodec, eos: int) -> tuple[Any, str]:
    """The decoding grammar of a sample's answer and the text before the descriptor's head."""
    answer, label = sample.answer, sample.meta.get("label")
    task = Task.parse(sample.task)
    if task is Task.INSTANCES:
        cut = answer.find(REF_OPEN)
        cut = answer.rfind("\n", 0, cut if cut >= 0 else len(answer)) + 1
        return bsd_grammar(codec, [label], eos, sample.grid, max_instances=32), answer[:cut]
    names = [label]
    if task is Task.OPEN_VOCAB:
        names = list(sample.meta.get("classes") or [])
        if not names:
            raise ValueError(f"sample {sample.id}: loss_on='free' needs meta['classes']")
    cut = answer.index(SEG_OPEN)
    return rrle_grammar(codec, [OTHERS, *names], sample.grid, head=SEG_OPEN), answer[:cut]


def free_positions(
    sample: ChatSample, backbone: Backbone, tokenizer: Any, codec: TokenCodec | None = None
) -> list[bool]:
    """For each token of the sample's suffix (``prompt_suffix(question, answer) + turn_end``):
    True where the answer's decoding grammar allows more than one token (a free choice).

    ValueError when the sample has no ``meta["label"]`` (open vocabulary: ``meta["classes"]``)
    or its descriptor does not follow the grammar.
    """
    if sample.task != Task.OPEN_VOCAB.value and not sample.meta.get("label"):
        raise ValueError(f"sample {sample.id}: loss_on='free' needs meta['label']")
    codec = codec or TokenCodec(tokenizer)
    grammar, before = _grammar(sample, codec, int(tokenizer.eos_token_id))
    fed = tokenizer(backbone.prompt_suffix(sample.question, before), add_special_tokens=False)
    suffix = tokenizer(
        backbone.prompt_suffix(sample.question, sample.answer) + backbone.turn_end,
        add_special_tokens=False,
    )["input_ids"]
    n_fed = len(fed["input_ids"])
    if suffix[:n_fed] != fed["input_ids"]:
        raise ValueError(f"sample {sample.id}: the prompt/answer boundary tokenizes differently")
    free = [False] * len(suffix)
    state = grammar.start()
    for i in range(n_fed, len(suffix)):
        if grammar.is_done(state):
            break
        free[i] = len(grammar.allowed(state)) > 1
        try:
            state = grammar.advance(state, suffix[i])
        except (KeyError, ValueError) as err:
            raise ValueError(f"sample {sample.id}: answer leaves the grammar ({err})") from None
    return free


def target_row_spans(text: str, labels: list[str]) -> list[tuple[int, int]]:
    """Character spans ``[start, end)`` of the descriptor rows of ``text`` that hold a run of
    one of ``labels`` (``LABEL *N``), each row up to and including its newline."""
    if not labels:
        return []
    run = re.compile("(?:" + "|".join(re.escape(lab) for lab in labels) + r") \*\d")
    spans, start = [], 0
    for line in text.splitlines(keepends=True):
        if run.search(line):
            spans.append((start, start + len(line)))
        start += len(line)
    return spans


def _fg_labels(sample: ChatSample) -> list[str]:
    if sample.task == Task.OPEN_VOCAB.value:
        return [c for c in sample.meta.get("classes") or [] if c != OTHERS]
    label = sample.meta.get("label")
    return [label] if label else []


def loss_weights(
    sample: ChatSample, backbone: Backbone, tokenizer: Any, n_suffix: int, fg_weight: float
) -> torch.Tensor:
    """``(n_suffix,)`` float weights of the suffix tokens: ``fg_weight`` on the tokens that
    overlap a target row (:func:`target_row_spans`), else 1 (the caller zeroes unlabelled)."""
    text = backbone.prompt_suffix(sample.question, sample.answer) + backbone.turn_end
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if len(enc["input_ids"]) != n_suffix:
        raise ValueError(f"sample {sample.id}: suffix tokenizes differently with offsets")
    spans = target_row_spans(text, _fg_labels(sample))
    weights = torch.ones(n_suffix)
    for i, (a, b) in enumerate(enc["offset_mapping"]):
        if any(a < end and b > start for start, end in spans):
            weights[i] = fg_weight
    return weights


def encode_sample(
    sample: ChatSample,
    backbone: Backbone,
    processor: Any,
    max_length: int = 2048,
    loss_on: str = "answer",
    codec: TokenCodec | None = None,
    fg_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """One sample as tensors: ``input_ids``/``labels``/``attention_mask`` ``(L,)`` plus the
    processor's image tensors (batch dimension 1, e.g. ``pixel_values (1, 3, H, W)``).

    ``loss_on``: ``"answer"`` (every answer token) or ``"free"`` (only the grammar's free
    choices, see the module docstring; ``codec`` caches the tokenizer's grammar pieces).
    ``fg_weight != 1`` adds ``loss_weights`` ``(L,)`` (module docstring).
    Raises ValueError when the sample is longer than ``max_length`` tokens.
    """
    if loss_on not in LOSS_ON:
        raise ValueError(f"loss_on must be one of {LOSS_ON}, got {loss_on!r}")
    tokenizer = processor.tokenizer
    prefix = processor(
        images=[load_image(sample)],
        text=[backbone.prompt_prefix(question=sample.question)],  # question-first: in the prefix
        return_tensors="pt",
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
    if loss_on == "free":
        keep = torch.tensor(free_positions(sample, backbone, tokenizer, codec), dtype=torch.bool)
        labels[n_prefix:][~keep] = IGNORE_INDEX
    out: dict[str, torch.Tensor] = {"input_ids": input_ids, "labels": labels}
    if fg_weight != 1.0:
        weights = torch.zeros(input_ids.shape[0])
        weights[n_prefix:] = loss_weights(sample, backbone, tokenizer, len(suffix_ids), fg_weight)
        out["loss_weights"] = weights * (labels != IGNORE_INDEX)
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
    tiles or pads by size), and on the question for a question-first backbone, so it is
    measured once per distinct size (and question) on a blank image; the suffixes are
    tokenised in one batch.
    """
    prefix_len: dict[tuple[tuple[int, int], str | None], int] = {}
    keys = [(image_size(s), s.question if backbone.per_goal_prefix else None) for s in samples]
    for size, question in set(keys):
        text = backbone.prompt_prefix(question=question)
        blank = Image.new("RGB", size)
        ids = processor(images=[blank], text=[text], return_tensors="pt")["input_ids"]
        prefix_len[(size, question)] = int(ids.shape[1])
    texts = [backbone.prompt_suffix(s.question, s.answer) + backbone.turn_end for s in samples]
    suffixes = processor.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    return [prefix_len[key] + len(ids) for key, ids in zip(keys, suffixes)]


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
        loss_on: str = "answer",
        fg_weight: float = 1.0,
    ) -> None:
        if isinstance(paths, str):
            paths = [paths]
        samples: list[ChatSample] = [s for p in paths for s in read_jsonl(p)]
        if not samples:
            raise ValueError(f"no samples in {list(paths)}")
        lengths = sample_lengths(samples, backbone, processor)
        self.samples = [s for s, n in zip(samples, lengths) if n <= max_length]
        self.lengths = [n for n in lengths if n <= max_length]  # token counts of self.samples
        self.dropped: list[str] = [s.id for s, n in zip(samples, lengths) if n > max_length]
        if not self.samples:
            raise ValueError(
                f"all {len(samples)} samples are longer than max_length {max_length} tokens "
                f"(shortest {min(lengths)}): raise --max_length"
            )
        self.backbone = backbone
        self.processor = processor
        self.max_length = max_length
        if loss_on not in LOSS_ON:
            raise ValueError(f"loss_on must be one of {LOSS_ON}, got {loss_on!r}")
        self.loss_on = loss_on
        self.codec = TokenCodec(processor.tokenizer) if loss_on == "free" else None
        if not fg_weight > 0:
            raise ValueError(f"fg_weight must be > 0, got {fg_weight!r}")
        self.fg_weight = float(fg_weight)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return encode_sample(
            self.samples[index],
            self.backbone,
            self.processor,
            self.max_length,
            self.loss_on,
            self.codec,
            self.fg_weight,
        )


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
        pads["loss_weights"] = 0
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
