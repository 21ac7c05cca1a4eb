"""Backbone registry: how each multimodal LLM family is prompted, encoded and stepped.

Like segment-anything's ``sam_model_registry``, :data:`BACKBONES` maps a name to a
:class:`Backbone` that knows its transformers model and processor classes, its chat prompt, its
image preprocessing (the backbone's own HF image processor) and how to run one decoder step of
its language model against a KV cache::

    backbone = BACKBONES["qwen2_vl"]
    prefix = backbone.encode_prefix(model, processor, image)    # once per frame
    step = backbone.make_step(model, prefix)                    # DecodeStep for the decoder
    cache = prefix.cache(batch=len(goals))                      # prefix KV, B rows

Prompts are split in two at the image: the shared *prefix* is everything up to and including
the image tokens (identical for every goal, encoded once); the per-goal *suffix* is the rest of
the user turn (the question), the assistant start, and the answer's beginning up to its last
newline (the answer sentence; the ``<seg>`` after it is forced by the goal's grammar, glued to
the first label as the whole answer is tokenized: :class:`.answers.GoalPlan`). The templates
are the official ones:
LLaVA-1.5 / Text4Seg use vicuna_v1 (``"<system> USER: <image>\\nQ ASSISTANT: A</s>"``), Qwen2-VL
and InternVL2 use ChatML. :meth:`Backbone.render` gives the full training text.

A model trained with the *question-first* layout (``text4seg.json`` ``"prompt":
"question_first"``; LLaVA only: ``"<system> USER: Q\\n<image> ASSISTANT: A</s>"``) has the
question in its prefix (:meth:`Backbone.question_first`): its visual tokens can attend to the
goal's words, which a tiny model needs to learn to read them (models/demo/README.md), and the
Segmenter encodes one prefix per goal instead of one per frame.

DecodeStep contract (shared with :mod:`text4seg_ros.decoding`)::

    step(input_ids (B, T) long, position_ids (B, T) long, attention_mask (B, past + T) long,
         cache, select=None) -> (logits (B, T, V) or, with select (N,), (N, V) float32, cache)

``position_ids`` are logical text positions counting the prefix (0 = first prefix token); the
adapter maps them to what the model needs (Qwen2-VL: 3-D mrope positions shifted by the
prefix's rope delta, since the image's positions are 2-D and compressed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import (
    DynamicCache,
    InternVLForConditionalGeneration,
    LlavaForConditionalGeneration,
    PreTrainedModel,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLForConditionalGeneration,
)

from ..checks import check_image
from ..decoding.step import gather_positions
from ..engines.base import Prefix, image_token_id, right_pad, stack_prefixes
from .processors import PROCESSOR_CLASSES
from .tokenizer import LLAVA_SYSTEM

DecodeStep = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Any], tuple[torch.Tensor, Any]]
CHATML_SYSTEM = "You are a helpful assistant."


@dataclass(frozen=True)
class Backbone:
    """One backbone family: classes, prompt and step adapter.

    ``prefix_template``/``suffix_template`` are format strings: ``{system}`` and ``{image}``
    (the processor's image placeholder, expanded by the processor) in the prefix;
    ``{question}`` and ``{answer}`` (the forced answer start) in the suffix. ``turn_end`` closes
    the assistant turn in training text.

    ``question_first_templates``: the ``(prefix, suffix)`` templates of the *question-first*
    layout (:meth:`question_first`), where ``{question}`` is in the prefix, before the image, so
    that the visual tokens can attend to the goal's words; None where a family has none.
    """

    name: str
    model_class: type[PreTrainedModel]
    model_types: tuple[str, ...]  # config.model_type values that select this backbone
    prefix_template: str
    suffix_template: str
    turn_end: str
    system: str
    image_placeholder: str
    mrope: bool = False
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    question_first_templates: tuple[str, str] | None = None

    @property
    def per_goal_prefix(self) -> bool:
        """True when the question is part of the prefix (one prefix per goal, not per frame)."""
        return "{question}" in self.prefix_template

    def question_first(self) -> Backbone:
        """This backbone with the question before the image (``text4seg.json`` ``"prompt":
        "question_first"``, :mod:`.meta`). ValueError when the family defines no such layout."""
        if self.question_first_templates is None:
            raise ValueError(f"backbone {self.name!r} has no question-first prompt layout")
        prefix, suffix = self.question_first_templates
        return replace(self, prefix_template=prefix, suffix_template=suffix)

    @property
    def processor_class(self) -> type:
        """The processor class that loads in this environment (see ``processors``)."""
        return PROCESSOR_CLASSES[self.name]

    # -- prompts ---------------------------------------------------------------------------
    def prompt_prefix(self, system: str | None = None, question: str | None = None) -> str:
        """Prompt text up to and including the (unexpanded) image placeholder: shared by every
        goal of a frame, or, with :attr:`per_goal_prefix`, one goal's (``question`` required)."""
        if self.per_goal_prefix and (not isinstance(question, str) or not question.strip()):
            raise ValueError("this prompt puts the question before the image: pass question")
        return self.prefix_template.format(
            system=self.system if system is None else system,
            image=self.image_placeholder,
            question=question,
        )

    def prompt_suffix(self, question: str, answer_start: str = "") -> str:
        """Per-goal prompt text: rest of the user turn, assistant start, forced answer start."""
        if not isinstance(question, str) or not question.strip():
            raise ValueError("question must be a non-empty str")
        return self.suffix_template.format(question=question, answer=answer_start)

    def render(self, question: str, answer: str, system: str | None = None) -> str:
        """Full conversation text for training: prefix, suffix with the answer, turn end."""
        prefix = self.prompt_prefix(system, question)
        return prefix + self.prompt_suffix(question, answer) + self.turn_end

    # -- encoding --------------------------------------------------------------------------
    def preprocess(
        self,
        processor: Any,
        image: np.ndarray,
        system: str | None = None,
        question: str | None = None,
    ) -> Any:
        """Run the backbone's processor on the frame and the prefix text (tensors, batch 1);
        ``question`` only for a :attr:`per_goal_prefix` layout."""
        image = check_image(image)
        return processor(
            images=[Image.fromarray(image)],
            text=[self.prompt_prefix(system, question)],
            return_tensors="pt",
        )

    @torch.no_grad()
    def encode_prefix(
        self,
        model: PreTrainedModel,
        processor: Any,
        image: np.ndarray,
        system: str | None = None,
        question: str | None = None,
    ) -> Prefix:
        """Encode the frame: vision tower, projector and the prefix through the language model.

        ``image``: ``(H, W, 3)`` ``uint8`` RGB; ``question``: the goal's, for a
        :attr:`per_goal_prefix` layout. Returns the prefix KV cache (batch 1).
        """
        inputs = self.preprocess(processor, image, system, question)
        device, dtype = model.device, model.dtype
        inputs = {
            k: (v.to(device, dtype) if v.is_floating_point() else v.to(device))
            for k, v in inputs.items()
            if isinstance(v, torch.Tensor)
        }
        input_ids = inputs["input_ids"]
        cache = DynamicCache(config=model.config)
        rope_delta = 0
        kwargs = dict(inputs)
        if not self.mrope:
            kwargs.pop("mm_token_type_ids", None)
        else:
            position_ids, deltas = model.model.get_rope_index(
                input_ids,
                mm_token_type_ids=inputs["mm_token_type_ids"],
                image_grid_thw=inputs["image_grid_thw"],
                attention_mask=inputs["attention_mask"],
            )
            rope_delta = int(deltas.reshape(-1)[0])
            kwargs["position_ids"] = position_ids
        model.model(**kwargs, past_key_values=cache, use_cache=True)
        keys = [layer.keys for layer in cache.layers]
        values = [layer.values for layer in cache.layers]
        image_id = image_token_id(model)
        return Prefix(
            keys=keys,
            values=values,
            input_ids=input_ids,
            image_size=(int(image.shape[0]), int(image.shape[1])),
            rope_delta=rope_delta,
            n_image_tokens=int((input_ids == image_id).sum()),
        )

    @torch.no_grad()
    def encode_prefixes(
        self,
        model: PreTrainedModel,
        processor: Any,
        image: np.ndarray,
        system: str | None,
        questions: Sequence[str],
    ) -> Prefix:
        """Question first: every goal's prefix of one frame in one language-model pass, as one
        stacked prefix (:func:`~text4seg_ros.engines.base.stack_prefixes`' layout: row ``i``
        is question ``i``'s prefix in its first ``P_i`` slots, right-padded). Qwen's 3-D rope
        index and a single question take :meth:`encode_prefix` per question."""
        if self.mrope or len(questions) < 2:
            return stack_prefixes(
                [self.encode_prefix(model, processor, image, system, q) for q in questions]
            )
        device, dtype = model.device, model.dtype
        inputs = [self.preprocess(processor, image, system, q) for q in questions]
        ids, mask = right_pad([i["input_ids"][0] for i in inputs], 0)
        batch: dict[str, Any] = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
        for key, value in inputs[0].items():  # pixels and the like: the same frame per row
            if key in batch or key == "mm_token_type_ids" or not isinstance(value, torch.Tensor):
                continue
            rows = torch.cat([i[key] for i in inputs])
            batch[key] = rows.to(device, dtype) if rows.is_floating_point() else rows.to(device)
        cache = DynamicCache(config=model.config)
        model.model(**batch, past_key_values=cache, use_cache=True)  # positions 0 .. P_i - 1
        return Prefix(
            keys=[layer.keys for layer in cache.layers],
            values=[layer.values for layer in cache.layers],
            input_ids=ids,
            image_size=(int(image.shape[0]), int(image.shape[1])),
            n_image_tokens=int((inputs[0]["input_ids"] == image_token_id(model)).sum()),
            lengths=tuple(int(i["input_ids"].shape[1]) for i in inputs),
        )

    def make_step(self, model: PreTrainedModel, prefix: Prefix) -> DecodeStep:
        """The decoder step on the language model for continuations of ``prefix``."""
        language_model = model.model.language_model
        embed = model.get_input_embeddings()
        head = model.get_output_embeddings()
        delta = prefix.rope_delta
        mrope = self.mrope

        @torch.no_grad()
        def step(
            input_ids: torch.Tensor,
            position_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            cache: Any,
            select: torch.Tensor | None = None,
        ) -> tuple[torch.Tensor, Any]:
            if input_ids.ndim != 2 or position_ids.shape != input_ids.shape:
                raise ValueError(
                    f"input_ids and position_ids must both be (B, T), got "
                    f"{tuple(input_ids.shape)} and {tuple(position_ids.shape)}"
                )
            device = embed.weight.device
            positions = position_ids.to(device)
            if mrope:  # text after the image: the same position on the t, h and w axes
                positions = (positions + delta)[None].expand(3, -1, -1)
            out = language_model(
                inputs_embeds=embed(input_ids.to(device)),
                position_ids=positions,
                attention_mask=attention_mask.to(device),
                past_key_values=cache,
                use_cache=True,
            )
            logits = head(gather_positions(out.last_hidden_state, select)).float()
            return logits, out.past_key_values

        step.selects = True  # type: ignore[attr-defined]  # logits at `select` only
        return step


_CHATML_PREFIX = "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{image}"
_CHATML_SUFFIX = "{question}<|im_end|>\n<|im_start|>assistant\n{answer}"

BACKBONES: dict[str, Backbone] = {
    "llava": Backbone(
        name="llava",
        model_class=LlavaForConditionalGeneration,
        model_types=("llava",),
        prefix_template="{system} USER: {image}",
        suffix_template="\n{question} ASSISTANT: {answer}",
        turn_end="</s>",
        system=LLAVA_SYSTEM,
        image_placeholder="<image>",
        notes="LLaVA-1.5 (vicuna_v1 prompt, image padded to a square); text4seg-llava-7b-p24",
        question_first_templates=("{system} USER: {question}\n{image}", " ASSISTANT: {answer}"),
    ),
    "qwen2_vl": Backbone(
        name="qwen2_vl",
        model_class=Qwen2VLForConditionalGeneration,
        model_types=("qwen2_vl",),
        prefix_template=_CHATML_PREFIX,
        suffix_template=_CHATML_SUFFIX,
        turn_end="<|im_end|>\n",
        system=CHATML_SYSTEM,
        image_placeholder="<|vision_start|><|image_pad|><|vision_end|>",
        mrope=True,
        notes="Qwen2-VL (ChatML, dynamic resolution, 3-D mrope)",
    ),
    "qwen2_5_vl": Backbone(
        name="qwen2_5_vl",
        model_class=Qwen2_5_VLForConditionalGeneration,
        model_types=("qwen2_5_vl",),
        prefix_template=_CHATML_PREFIX,
        suffix_template=_CHATML_SUFFIX,
        turn_end="<|im_end|>\n",
        system=CHATML_SYSTEM,
        image_placeholder="<|vision_start|><|image_pad|><|vision_end|>",
        mrope=True,
        notes="Qwen2.5-VL, the Text4Seg++ backbone (ChatML, window attention vision tower)",
    ),
    "internvl": Backbone(
        name="internvl",
        model_class=InternVLForConditionalGeneration,
        model_types=("internvl",),
        prefix_template=_CHATML_PREFIX,
        suffix_template="\n" + _CHATML_SUFFIX,
        turn_end="<|im_end|>\n",
        system=CHATML_SYSTEM,
        image_placeholder="<IMG_CONTEXT>",
        notes="InternVL2/2.5 in the transformers layout (ChatML, <img>...</img> image block)",
    ),
}
backbone_registry = BACKBONES  # the segment-anything spelling


def get_backbone(name: str) -> Backbone:
    """The registered backbone ``name``; ValueError listing the registered names otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"backbone must be a str, got {type(name).__name__}")
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; registered: {', '.join(BACKBONES)}") from None


def detect_backbone(model_type: str) -> Backbone:
    """The backbone whose ``model_types`` contains a config's ``model_type``."""
    for backbone in BACKBONES.values():
        if model_type in backbone.model_types:
            return backbone
    known = sorted(t for b in BACKBONES.values() for t in b.model_types)
    raise ValueError(
        f"no registered backbone for model_type {model_type!r}; supported: {', '.join(known)} "
        "(pass backbone= explicitly if the config is of a compatible family)"
    )
