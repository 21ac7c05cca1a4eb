"""The Segmenter: encode a camera frame once, answer many language goals against it.

Like segment-anything's ``SamPredictor``::

    seg = Segmenter.from_pretrained("models/demo")  # backbone: config.json; grid: text4seg.json
    seg.set_image(frame)                                    # (H, W, 3) uint8 RGB, encoded once
    results = seg.segment([Goal("red mug"), Goal("chair", Task.INSTANCES)])

``set_image`` runs the vision tower and the shared prompt prefix (system, user turn start, image
tokens) through the language model once and keeps its KV cache. ``segment`` decodes every goal
against that prefix in ONE batch with the grammar-constrained, jump-forward decoder of
:mod:`text4seg_ros.decoding`, so every answer is a valid descriptor (exactly G rows of G cells,
labels from the goal's label set). Batched results equal one-goal-at-a-time results. A
question-first model (``text4seg.json`` ``"prompt": "question_first"``) has the question in its
prefix, so ``set_image`` only keeps the frame and ``segment`` encodes one prefix per goal and
decodes the goals one at a time.

Score (``GoalResult.score``): the arithmetic mean, over the tokens the model chose at a free
choice (where the grammar allowed more than one token; forced tokens excluded), of that token's
softmax probability over the whole vocabulary, as the model computed it before the grammar mask.
In [0, 1]; 1.0 when every token was forced. A model sure of its descriptor scores near 1; a
grammar that had to overrule the model (its favourite token was not allowed) lowers it.
Instances of a B-SD goal share the goal's score.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..decoding import StopCheck, constrained_generate
from ..descriptors import SEG_OPEN
from ..descriptors.grammar import TokenCodec, bsd_grammar, rrle_grammar
from ..engines import ENGINES, make_engine
from ..engines.base import stack_prefixes
from ..prompts import Task
from .answers import (
    DESCRIPTORS,
    Answer,
    GoalPlan,
    plan_goal,
    read_answer,
    sample_descriptor,
    to_result,
)
from .loading import as_dtype, load_pretrained
from .meta import META_FILE, model_grid, resolve_grid, resolve_refiner
from .registry import Backbone, Prefix, check_image, get_backbone
from .types import Goal, GoalResult, Timings

LOG = logging.getLogger(__name__)

# Cap on B-SD instances per goal. Every B-SD answer is finite (at most ``max_instances`` triples
# of a box and a G-row body, then EOS: the grammar allows nothing longer), but a batch waits for
# its longest answer, and a random or unsure model may write every instance it is allowed. Our
# training data holds at most 20 instances per answer (training/data/instances.py).
MAX_INSTANCES = 32


@dataclass(frozen=True)
class PreparedGoal:
    """A goal made ready to decode once (:meth:`Segmenter.prepare`): its plan, its grammar and
    its prompt suffix token ids. A standing goal is prepared when admitted and reused on every
    frame; the Segmenter that prepared it must decode it (same tokenizer, grid, descriptor)."""

    plan: GoalPlan
    grammar: Any
    suffix: tuple[int, ...]

    @property
    def goal(self) -> Goal:
        """The goal as prepared."""
        return self.plan.goal


def _load_refiner(
    refiner: Any,
    refiner_path: str | Path,
    device: str,
    dtype: str | torch.dtype = "float32",
    grid: int = 16,
) -> Any:
    """``None``/``"none"``: no refinement; ``"sam"``: SAM from ``refiner_path`` with weights in
    ``dtype``; ``"grabcut"``: :class:`~text4seg_ros.refine.GrabCutRefiner` for masks of a
    ``grid`` x ``grid`` descriptor (no weights); else an object with ``refine(image, mask, box)``
    (the :class:`~text4seg_ros.refine.Refiner` protocol)."""
    if refiner is None or refiner == "none":
        return None
    if refiner == "sam":
        if not refiner_path:
            raise ValueError("refiner='sam' needs refiner_path (a SAM directory or .pth file)")
        from ..refine import load_refiner

        return load_refiner(refiner_path, device=str(device), dtype=dtype)
    if refiner == "grabcut":
        from ..refine import GrabCutRefiner

        return GrabCutRefiner(grid)
    if isinstance(refiner, str):
        raise ValueError(
            f"unknown refiner {refiner!r}; allowed: 'none', 'auto', 'sam', 'grabcut' or a Refiner"
        )
    if not callable(getattr(refiner, "refine", None)):
        raise TypeError(f"refiner must have refine(image, mask, box), got {type(refiner).__name__}")
    return refiner


def joins_cleanly(tokenizer: Any, start: str = SEG_OPEN, body: str = "others *1") -> bool:
    """True when ``tokenizer`` cuts between the forced answer start and the descriptor, i.e.
    ``encode(start + body) == encode(start) + encode(body)``. Byte-level BPEs with the GPT-2
    pre-tokenizer do; Qwen's pre-tokenizer glues ``">others"`` and Llama's SentencePiece adds a
    word-start marker. The Segmenter therefore does not cut there: its suffix ends at the
    answer's newline and the grammar writes ``<seg>`` glued to the first label
    (:meth:`Segmenter.check_boundary` checks the whole split against training tokenization)."""

    def enc(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    return enc(start + body) == enc(start) + enc(body)


class Segmenter:
    """Text4Seg inference over a registered backbone (see module doc).

    ``grid``: descriptor grid size G. ``descriptor``: ``"isd"`` (image-wise) or ``"bsd"``
    (referring goals answered box-wise too). ``bricks``: B-SD brick bodies. ``max_instances``:
    most instances one B-SD answer may list (1..:data:`MAX_INSTANCES`, default 8): the grammar
    offers EOS instead of another ``<ref>`` after that many, which bounds a B-SD goal's answer
    and so the time its batch takes (finished goals leave the batch, the B-SD goal runs on).
    ``max_new_tokens``: cap per goal (None: the grammar ends every answer). ``system``: system
    prompt (None: the backbone's default). ``engine``: ``"torch"`` (the reference),
    ``"onnxruntime"``, ``"tensorrt"`` (:mod:`text4seg_ros.engines`; ``engine_options`` go to it,
    ``model_path`` tells it where the model's exported graphs may be) or an engine object.
    ``batch_prefixes`` (question-first models): encode a frame's per-goal prefixes in one pass
    where the engine can (``encode_prefixes``) and decode its goals in one batch over them,
    stacked (the default), or encode and decode goal after goal (False; same answers, for
    comparison).
    """

    SUFFIX_CACHE = 1024  # prompt suffixes kept tokenized (cleared when full)

    def __init__(
        self,
        model: torch.nn.Module,
        processor: Any,
        backbone: Backbone | str,
        grid: int = 16,
        refiner: Any = None,
        descriptor: str = "isd",
        bricks: bool = False,
        max_instances: int = 8,
        max_new_tokens: int | None = None,
        max_draft_tokens: int = 64,
        system: str | None = None,
        engine: Any = "torch",
        engine_options: dict[str, Any] | None = None,
        model_path: str | Path | None = None,
        batch_prefixes: bool = True,
    ) -> None:
        if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
            raise ValueError(f"grid must be an int >= 1, got {grid!r}")
        if (
            isinstance(max_instances, bool)
            or not isinstance(max_instances, int)
            or not 1 <= max_instances <= MAX_INSTANCES
        ):
            raise ValueError(
                f"max_instances must be an int in 1..{MAX_INSTANCES}, got {max_instances!r}"
            )
        if descriptor not in DESCRIPTORS:
            raise ValueError(
                f"unknown descriptor {descriptor!r}; allowed: {', '.join(DESCRIPTORS)}"
            )
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.backbone = get_backbone(backbone) if isinstance(backbone, str) else backbone
        self.grid, self.descriptor, self.bricks = grid, descriptor, bricks
        self.max_instances, self.max_new_tokens = max_instances, max_new_tokens
        self.max_draft_tokens, self.system = max_draft_tokens, system
        self.refiner = refiner
        self.batch_prefixes = bool(batch_prefixes)
        if isinstance(engine, str):
            engine = make_engine(
                engine, self.model, self.backbone, model_path=model_path, **(engine_options or {})
            )
        self.engine = engine
        self.codec = TokenCodec(self.tokenizer)
        self._suffixes: dict[str, tuple[int, ...]] = {}  # prompt suffix text -> its token ids
        pad = self.tokenizer.pad_token_id
        self.pad_token_id = int(pad if pad is not None else self.tokenizer.eos_token_id)
        samples = (Goal("cup"), Goal("cup", Task.INSTANCES))  # head "<seg>" and head ""
        self.boundary_ok = all(self.check_boundary(plan_goal(g, 0, descriptor)) for g in samples)
        if not self.boundary_ok:
            warnings.warn(
                f"{type(self.tokenizer).__name__}: prompt suffix + grammar tokens differ from "
                "the training text tokenized whole (training/dataset.py) at the answer's last "
                "newline; masks stay valid but the model is fed a split it never saw",
                stacklevel=2,
            )
        self._image: np.ndarray | None = None
        self._refiner_frame = False
        self._prefix: Prefix | None = None
        self._step: Any = None
        self._encode_s = 0.0

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        backbone: str | None = None,
        device: str = "cpu",
        dtype: str | torch.dtype = "float32",
        grid: int | None = None,
        refiner: Any = None,
        refiner_path: str | Path = "",
        descriptor: str = "isd",
        engine: str = "torch",
        adapter: str | Path | None = None,
        merge_adapter: bool = True,
        vision_tower: str | Path | None = None,
        trust_remote_code: bool = False,
        **options: Any,
    ) -> Segmenter:
        """Load a model (any layout of :mod:`.loading`) and wrap it.

        ``backbone``: registry name or None (from ``config.json``). ``grid``: None uses the
        model's own grid (``text4seg.json``, :mod:`.meta`; 16 without one); a grid that differs
        from the model's is used as given, with a warning. ``refiner``: None/``"none"``,
        ``"sam"`` (with ``refiner_path``; SAM's weights in ``dtype`` too), ``"grabcut"`` (OpenCV,
        no weights), ``"auto"`` (the refiner the model names in ``text4seg.json``, else none;
        :func:`~text4seg_ros.model.meta.model_refiner`) or a Refiner object.
        ``engine``: one of :data:`text4seg_ros.engines.ENGINES` (``"torch"``, the reference;
        ``"onnxruntime"``, ``"tensorrt"``: graphs exported once, see :mod:`text4seg_ros.engines`;
        an engine that cannot run here raises ``EngineUnavailable``, one line). ``options`` go
        to :class:`Segmenter` (``bricks``, ``max_instances``, ``max_new_tokens``, ``system``,
        ``engine_options``...). With a graph engine the model is loaded here and owned by the
        Segmenter, so its torch language-model layers are freed once the engine has its
        decoder graph (``GraphEngine.release_torch_decoder``: the weights are not held twice);
        ``segmenter.model`` then cannot run in torch.
        """
        if engine not in ENGINES:
            raise ValueError(f"unknown engine {engine!r}; allowed: {', '.join(ENGINES)}")
        trained = model_grid(path)
        if grid is not None and trained is not None and grid != trained:
            warnings.warn(
                f"grid {grid} differs from the grid {trained} model {path} was trained with "
                f"({META_FILE}); its answers will not fit the grid",
                stacklevel=2,
            )
        grid = resolve_grid(path, grid)
        refiner = resolve_refiner(path, refiner)
        loaded = load_pretrained(
            path,
            backbone=backbone or None,
            adapter=adapter,
            merge_adapter=merge_adapter,
            vision_tower=vision_tower,
            device=device,
            dtype=as_dtype(dtype),
            trust_remote_code=trust_remote_code,
        )
        segmenter = cls(
            loaded.model,
            loaded.processor,
            loaded.backbone,
            grid=grid,
            refiner=_load_refiner(refiner, refiner_path, device, dtype, grid),
            descriptor=descriptor,
            engine=engine,
            model_path=path,
            **options,
        )
        release = getattr(segmenter.engine, "release_torch_decoder", None)
        if release is not None:  # this Segmenter owns the model: its graph engine alone runs it
            freed = release()
            LOG.info("engine %s: released %.1f MB of torch decoder weights", engine, freed / 1e6)
        return segmenter

    # -- frame -------------------------------------------------------------------------------
    @property
    def image_size(self) -> tuple[int, int] | None:
        """``(H, W)`` of the current frame, None before :meth:`set_image`."""
        return None if self._image is None else (self._image.shape[0], self._image.shape[1])

    def set_image(self, image: np.ndarray) -> None:
        """Encode an ``(H, W, 3)`` ``uint8`` RGB frame (vision tower + prompt prefix KV cache)
        once for the following :meth:`segment` calls. A question-first backbone (the question
        is in the prefix) encodes one prefix per goal in :meth:`segment` instead."""
        image = check_image(image)
        start = time.perf_counter()
        self._prefix = self._step = None
        if not self.backbone.per_goal_prefix:
            self._prefix = self.engine.encode_prefix(self.processor, image, self.system)
            self._step = self.engine.make_step(self._prefix)
        self._image = image
        self._refiner_frame = False  # the refiner encodes this frame at its first mask
        self._encode_s = time.perf_counter() - start

    def reset_image(self) -> None:
        """Forget the current frame (frees the prefix cache)."""
        self._image = self._prefix = self._step = None
        self._refiner_frame = False

    # -- goals -------------------------------------------------------------------------------
    def plan(self, goals: Sequence[Goal]) -> list[GoalPlan]:
        """Validate goals and plan their prompts (TypeError/ValueError naming the bad goal)."""
        if isinstance(goals, Goal) or not isinstance(goals, Sequence):
            raise TypeError(f"goals must be a sequence of Goal, got {type(goals).__name__}")
        return [plan_goal(g, i, self.descriptor) for i, g in enumerate(goals)]

    def prepare(self, goal: Goal, index: int = 0) -> PreparedGoal:
        """Plan ``goal``, build its grammar and tokenize its prompt suffix, once.

        TypeError/ValueError (naming the goal, ``index`` in a batch) when the goal is invalid
        or its grammar cannot be built (e.g. a label the tokenizer cannot write)."""
        plan = plan_goal(goal, index, self.descriptor)
        return PreparedGoal(plan, self.grammar(plan), tuple(self.suffix_ids(plan)))

    def suffix_ids(self, plan: GoalPlan) -> list[int]:
        """Token ids of a goal's prompt suffix (question, assistant start, answer sentence up to
        its newline; the grammar writes the rest of the answer start, see :class:`GoalPlan`)."""
        text = self.backbone.prompt_suffix(plan.question, plan.prompt_answer)
        ids = self._suffixes.get(text)
        if ids is None:  # a tokenizer call costs about 0.2 ms: goals repeat frame after frame
            if len(self._suffixes) >= self.SUFFIX_CACHE:
                self._suffixes.clear()
            ids = self._suffixes[text] = tuple(
                self.tokenizer(text, add_special_tokens=False)["input_ids"]
            )
        return list(ids)

    def grammar(self, plan: GoalPlan) -> Any:
        """The token grammar constraining a goal's answer (cached per label set and head)."""
        if plan.kind == "bsd":
            eos = int(self.tokenizer.eos_token_id)
            return bsd_grammar(
                self.codec, list(plan.names), eos, self.grid, self.bricks, self.max_instances,
                head=plan.head,
            )  # fmt: skip
        return rrle_grammar(self.codec, list(plan.names), self.grid, head=plan.head)

    def training_ids(self, plan: GoalPlan, descriptor: str) -> list[int]:
        """Token ids after the prefix that training/dataset.py gives a sample answering ``plan``
        with ``descriptor`` (the text after ``answer_start``), turn end included."""
        answer = plan.answer_start + descriptor
        text = self.backbone.prompt_suffix(plan.question, answer) + self.backbone.turn_end
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def check_boundary(self, plan: GoalPlan) -> bool:
        """True when the suffix this Segmenter feeds plus the grammar's tokens of a sample
        descriptor are the training tokens of the same answer (:meth:`training_ids`)."""
        descriptor = sample_descriptor(plan, self.grid, self.max_instances)
        try:
            tokens = self.codec.encode_piece(plan.head + descriptor)
            if plan.kind == "bsd":
                tokens += (int(self.tokenizer.eos_token_id),)
            if not self.grammar(plan).accepts(tokens):
                return False
        except ValueError:  # the tokenizer is refused by the grammar (segment() says why)
            return False
        fed = self.suffix_ids(plan) + list(tokens)  # B-SD: EOS is the turn end's first token
        return self.training_ids(plan, descriptor)[: len(fed)] == fed

    def segment(
        self, goals: Sequence[Goal | PreparedGoal], should_stop: StopCheck | None = None
    ) -> list[GoalResult]:
        """Answer every goal against the current frame in one batch; one result per goal.

        ``goals``: :class:`Goal` or :class:`PreparedGoal` (prepared once, e.g. when a standing
        goal is admitted; plain goals are prepared here). ``should_stop``: called before every
        model call of the decode; when it returns true the decode raises
        :class:`~text4seg_ros.decoding.DecodeCancelled`. Raises RuntimeError before
        :meth:`set_image`, TypeError/ValueError for invalid goals.
        """
        if isinstance(goals, (Goal, PreparedGoal)) or not isinstance(goals, Sequence):
            raise TypeError(f"goals must be a sequence of Goal, got {type(goals).__name__}")
        ready = [
            g if isinstance(g, PreparedGoal) else self.prepare(g, i) for i, g in enumerate(goals)
        ]
        plans = [r.plan for r in ready]
        if self._image is None:
            raise RuntimeError("segment() called before set_image(): no frame is encoded")
        if not plans:
            return []
        start = time.perf_counter()
        goal_encode_s = 0.0  # question first: the per-goal prefixes, counted as encoding
        if self._prefix is not None:  # one prefix for the frame, all goals in one batch
            outputs = self._decode(self._prefix, self._step, ready, should_stop)
        else:  # question first: each goal has its own prefix (image after its question)
            t0 = time.perf_counter()
            if self.batch_prefixes and len(ready) > 1:  # stacked: all goals in one batch
                prefixes = [self._encode_prefixes([r.plan.question for r in ready])]
                groups = [list(ready)]
            else:  # goal after goal
                prefixes = [
                    self.engine.encode_prefix(
                        self.processor, self._image, self.system, r.plan.question
                    )
                    for r in ready
                ]
                groups = [[r] for r in ready]
            goal_encode_s = time.perf_counter() - t0
            outputs = []
            for prefix, group in zip(prefixes, groups):
                step = self.engine.make_step(prefix)
                outputs += self._decode(prefix, step, group, should_stop)
        decode_s = time.perf_counter() - start - goal_encode_s
        encode_s = self._encode_s + goal_encode_s
        results, answers = [], []
        eos = self.tokenizer.eos_token_id
        for plan, out in zip(plans, outputs):
            text = out.text
            if out.tokens and out.tokens[-1] == eos:  # B-SD ends with the end-of-turn token
                text = self.codec.decode(out.tokens[:-1])
            if not text.startswith(plan.head):
                raise RuntimeError(f"answer {text[:40]!r} does not start with {plan.head!r}")
            text = text[len(plan.head) :]  # the grammar wrote the end of the answer start
            answer = read_answer(plan, text, self.image_size, self.grid)
            score = float(np.mean(out.chosen_probs)) if out.chosen_probs else 1.0
            results.append(to_result(plan, answer, score, out.forward_calls))
            answers.append(answer)
        refine_s = self._refine(results, plans, answers)
        timings = Timings(
            encode_s=encode_s,
            decode_s=decode_s,
            refine_s=refine_s,
            total_s=encode_s + decode_s + refine_s,
        )
        for r in results:
            r.timings = timings
            for inst in r.instances:
                inst.timings = timings
        return results

    def _encode_prefixes(self, questions: Sequence[str]) -> Prefix:
        """Question first: the goals' prefixes of the current frame as one stacked prefix
        (:func:`~text4seg_ros.engines.base.stack_prefixes`' layout), in one pass where the
        engine has ``encode_prefixes``, else encoded one by one and stacked. Decoding all
        goals over it costs the frame its longest goal's sequential model calls instead of
        the sum of all of them."""
        encode_many = getattr(self.engine, "encode_prefixes", None)
        if encode_many is not None:
            return encode_many(self.processor, self._image, self.system, questions)
        return stack_prefixes(
            [
                self.engine.encode_prefix(self.processor, self._image, self.system, q)
                for q in questions
            ]
        )

    def _decode(
        self,
        prefix: Prefix,
        step: Any,
        ready: Sequence[PreparedGoal],
        should_stop: StopCheck | None,
    ) -> list[Any]:
        """Constrained decoding of ``ready``'s answers after ``prefix`` (one row, or one per
        goal when stacked), one batch row each."""
        return constrained_generate(
            step,
            [r.grammar for r in ready],
            [list(r.suffix) for r in ready],
            prefix_cache=self.engine.cache(prefix, len(ready)),
            prefix_len=prefix.row_lengths,
            max_new_tokens=self.max_new_tokens,
            max_draft_tokens=self.max_draft_tokens,
            pad_token_id=self.pad_token_id,
            device=self.engine.device,
            should_stop=should_stop,
        )

    def _refine(
        self, results: list[GoalResult], plans: list[GoalPlan], answers: list[Answer]
    ) -> float:
        """Sharpen non-empty masks with the refiner (not label maps); returns seconds spent."""
        if self.refiner is None:
            return 0.0
        from ..metrics import mask_to_box

        start = time.perf_counter()
        for result, plan, answer in zip(results, plans, answers):
            if plan.kind == "open_vocab":
                continue  # a refined union would disagree with the label map
            # A B-SD instance's box prompt is the box the model wrote, not the tight box of its
            # coarse grid: the grid can miss the object's thin edges, the box not.
            if plan.kind == "bsd":
                targets = [(t, a.box) for t, a in zip(result.instances, answer.instances)]
            else:
                targets = [(result, None)]
            for target, box in targets:
                if not target.mask.any():
                    continue
                refined = self._refine_mask(target.mask, box)
                target.mask = np.asarray(refined, bool)
                target.box = mask_to_box(target.mask)
            if plan.kind == "bsd":
                union = np.zeros_like(result.mask)
                for inst in result.instances:
                    union |= inst.mask
                result.mask, result.box = union, mask_to_box(union)
        return time.perf_counter() - start

    def _refine_mask(self, mask: np.ndarray, box: tuple[int, int, int, int] | None) -> Any:
        """One mask through the refiner. A refiner with ``set_image``/``refine_mask`` (like
        :class:`~text4seg_ros.refine.SamRefiner`) is given each frame once, at its first mask,
        and then only prompts (no per-mask check of the frame; the Segmenter owns its refiner's
        frame: do not share the refiner); any other refiner gets ``refine(image, mask, box)``."""
        ref = self.refiner
        if callable(getattr(ref, "set_image", None)) and callable(
            getattr(ref, "refine_mask", None)
        ):
            if not self._refiner_frame:
                ref.set_image(self._image)
                self._refiner_frame = True
            return ref.refine_mask(mask, box=box)
        return ref.refine(self._image, mask, box=box)
