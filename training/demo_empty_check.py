"""Would a decoding rule fix absent targets? The empty answer's likelihood against the greedy one.

    python -m training.demo_empty_check --model models/demo --scenes 60 [--out F.json]

A GRES goal may have no target ("the purple bottle" when there is none); its right answer is
the empty one (``others`` in every cell). A model that marks something for such a goal might
still find the empty answer more likely as a whole than the greedy answer it wrote, since
greedy decoding picks one token at a time. Then a rule at decode time ("answer empty when the
empty answer is at least ``margin`` nats less likely than the greedy one") would raise N-acc
without retraining. This check measures whether such a rule separates absent from present
targets on held-out tabletop scenes (:mod:`training.data.tabletop`): per GRES goal, the
Segmenter's greedy answer, then both answers teacher-forced through the same engine after the
goal's prefix, scored as the sum of the full-vocabulary log-probabilities of the tokens at the
grammar's free choices (forced tokens have no choice; for the greedy answer this sum equals
the decoder's own ``chosen_probs``). Prints, per margin, N-acc over the absent goals and cIoU
and T-acc over the goals with targets (``gres_single``, ``gres_multi``) had the rule been
applied, and the percentiles of ``log p(empty) - log p(greedy)`` per kind.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from text4seg_ros.decoding.loop import _Batch
from text4seg_ros.descriptors import SEG_CLOSE
from text4seg_ros.descriptors.rrle import encode_grid
from text4seg_ros.metrics import MaskMetrics
from text4seg_ros.model.answers import read_answer
from text4seg_ros.model.types import Goal
from text4seg_ros.prompts import Task

from .data.tabletop import draw_tabletop, scene_seed, tabletop_goals

MARGINS = (-2.0, -1.0, 0.0, 1.0, 2.0, 4.0)


def score_answers(seg: Any, prefix: Any, prepared: Any, answers: Sequence[Sequence[int]]) -> list:
    """Teacher-forced score of each token list in ``answers`` (the tokens after the goal's
    prompt suffix) for the one-row ``prefix`` of ``prepared``'s goal: the sum of full-vocabulary
    log-probabilities at the grammar's free choices, in nats."""
    suffix = list(prepared.suffix)
    rows = [suffix + list(a) for a in answers]
    step = seg.engine.make_step(prefix)
    cache = seg.engine.cache(prefix, len(rows))
    batch = _Batch(step, cache, prefix.length, len(rows), seg.pad_token_id, seg.engine.device)
    where = [(r, c) for r, row in enumerate(rows) for c in range(len(suffix) - 1, len(row) - 1)]
    logits, _ = batch.forward(rows, where)
    logp = torch.log_softmax(logits.float(), -1).cpu().numpy()
    scores, k, grammar = [], 0, prepared.grammar
    for answer in answers:
        total, state = 0.0, grammar.start()
        for token in answer:
            if len(grammar.allowed(state)) > 1:
                total += float(logp[k, token])
            k += 1
            state = grammar.advance(state, token)
        scores.append(total)
    return scores


def empty_tokens(seg: Any, plan: Any) -> list[int]:
    """The tokens of the empty I-SD answer to ``plan`` (every cell ``others``)."""
    cells = np.zeros((seg.grid, seg.grid), np.int64)
    return list(seg.codec.encode_piece(plan.head + encode_grid(cells, plan.names) + SEG_CLOSE))


def collect(seg: Any, seeds: Sequence[int], size: int = 128) -> list[dict[str, Any]]:
    """Per GRES goal: kind, target and greedy masks, both scores, and the decoder's own sum of
    log ``chosen_probs`` for the greedy answer (``decoder``; a check of the scoring)."""
    if not seg.backbone.per_goal_prefix:
        raise ValueError("this check encodes one prefix per goal: it needs a question-first model")
    records: list[dict[str, Any]] = []
    for seed in seeds:
        scene = draw_tabletop(seed, (size, size))
        goals = [g for g in tabletop_goals(scene, seed) if g.task is Task.GRES]
        seg.set_image(scene.image)
        for goal in goals:
            prepared = seg.prepare(Goal(goal.text, goal.task))
            prefix = seg.engine.encode_prefix(
                seg.processor, scene.image, seg.system, prepared.plan.question
            )
            # the Segmenter's own decode of this one goal (segment() keeps no probabilities)
            (out,) = seg._decode(prefix, seg.engine.make_step(prefix), [prepared], None)
            answer = read_answer(
                prepared.plan, out.text[len(prepared.plan.head) :], seg.image_size, seg.grid
            )
            empty = empty_tokens(seg, prepared.plan)
            greedy_score, empty_score = score_answers(seg, prefix, prepared, [out.tokens, empty])
            records.append(
                {
                    "kind": goal.kind,
                    "target": goal.mask,
                    "greedy": answer.mask,
                    "is_empty": list(out.tokens) == empty,
                    "greedy_score": greedy_score,
                    "empty_score": empty_score,
                    "decoder": float(np.sum(np.log(out.chosen_probs))),
                }
            )
    return records


def apply_rule(records: Sequence[dict[str, Any]], margin: float | None) -> dict[str, Any]:
    """Metrics had the answer been empty wherever ``log p(empty) >= log p(greedy) - margin``
    (``margin`` None: the greedy answers as they are)."""
    out: dict[str, Any] = {}
    for kind in ("gres_absent", "gres_single", "gres_multi"):
        metrics = MaskMetrics()
        for r in records:
            if r["kind"] != kind:
                continue
            gap = r["empty_score"] - r["greedy_score"]
            empty = margin is not None and gap >= -margin
            metrics.update(np.zeros_like(r["greedy"]) if empty else r["greedy"], r["target"])
        got = metrics.compute()
        key = "N-acc" if kind == "gres_absent" else "T-acc"
        out[kind] = {key: round(float(got[key]), 3)}
        if kind != "gres_absent":
            out[kind]["cIoU"] = round(float(got["cIoU"]), 3)
    return out


def summarise(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The rule at every margin of :data:`MARGINS`, and the score gap's percentiles per kind."""
    gaps: dict[str, Any] = {}
    for kind in ("gres_absent", "gres_single", "gres_multi"):
        d = [r["empty_score"] - r["greedy_score"] for r in records if r["kind"] == kind]
        if d:
            gaps[kind] = dict(zip(("p10", "p50", "p90"), np.percentile(d, [10, 50, 90]).round(2)))
    return {
        "goals": len(records),
        "greedy": apply_rule(records, None),
        "rule": {str(m): apply_rule(records, m) for m in MARGINS},
        "gap_percentiles": {k: {a: float(b) for a, b in v.items()} for k, v in gaps.items()},
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: print the summary as JSON (``--out`` writes it too)."""
    from text4seg_ros.model.segmenter import Segmenter

    ap = argparse.ArgumentParser(prog="python -m training.demo_empty_check", description=__doc__)
    ap.add_argument("--model", default="models/demo")
    ap.add_argument("--scenes", type=int, default=60)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    seg = Segmenter.from_pretrained(args.model)
    seeds = [scene_seed("heldout", i) for i in range(args.scenes)]
    summary = summarise(collect(seg, seeds))
    text = json.dumps(summary, indent=1)
    print(text)
    if args.out is not None:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
