"""Row-copy drafts: guess how a descriptor goes on, for speculative verification.

Neighbouring grid rows of a mask are mostly equal (background above and below the object, an
object's outline moving a cell or two per row). A draft continues the current row with the cells
of the row above, and every later row as a copy of the current one, then ``</seg>``. The decoder
feeds the draft with the tokens it must write anyway and keeps the longest prefix the model
itself would have chosen (greedy verification), so drafts change the number of forward calls,
never the output.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..descriptors.grammar import BSDGrammar, RRLEGrammar, TokenGrammar
from ..descriptors.rrle import ROW_SEP, RUN_SEP, SEG_CLOSE, SEG_OPEN

_REF = re.compile(r"<ref>(.*?)</ref>")


def _parse_runs(line: str, index: dict[str, int]) -> list[tuple[int, int]] | None:
    runs = []
    for run in line.strip().split(RUN_SEP) if line.strip() else []:
        label, sep, count = run.rpartition(" *")
        if not sep or label not in index or not count.isdigit():
            return None
        runs.append((index[label], int(count)))
    return runs


def _cells(runs: list[tuple[int, int]]) -> list[int]:
    return [lab for lab, n in runs for _ in range(n)]


def predict_body(body: str, names: Sequence[str], grid: int) -> str | None:
    """Predicted rest of an R-RLE body (ending with ``"\\n</seg>"``) after the text ``body``.

    ``body`` is what has been generated since ``<seg>``. Returns None when the text cannot be
    continued by a row copy (e.g. a partial label that matches no name).
    """
    index = {n: i for i, n in enumerate(names)}
    *done, partial = body.split("\n")
    rows = []
    for line in done:
        runs = _parse_runs(line, index)
        if runs is None or sum(n for _, n in runs) != grid:
            return None
        rows.append(_cells(runs))
    if len(rows) >= grid:
        return None
    *closed, last = partial.split("|") if partial.strip() else [""]
    runs = _parse_runs("|".join(closed), index) if closed else []
    if runs is None:
        return None
    cells = _cells(runs)
    col = len(cells)
    above = rows[-1] if rows else None
    label_text, star, digits = last.strip().partition(" *")
    if star:
        if label_text not in index:
            return None
        label = index[label_text]
    else:  # no label yet, or a partial one: prefer the label of the cell above
        options = [i for i, n in enumerate(names) if n.startswith(label_text)]
        options = [i for i in options if not cells or i != cells[-1]]
        if not options:
            return None
        guess = above[col] if above is not None and col < grid else options[0]
        label = guess if guess in options else options[0]
    pred = list(above) if above is not None else [label] * grid
    run = 1
    while col + run < grid and pred[col + run] == label:
        run += 1
    fits = [v for v in range(1, grid - col + 1) if str(v).startswith(digits)]
    if not fits:
        return None
    run = min(fits, key=lambda v: (abs(v - run), v))
    row = cells + [label] * run + pred[col + run :]
    rows += [row] * (grid - len(rows))
    text = _rle(rows, names) + SEG_CLOSE
    return text[len(body) :] if text.startswith(body) else None


def _rle(rows: list[list[int]], names: Sequence[str]) -> str:
    """:func:`~text4seg_ros.descriptors.rrle.encode_grid` for lists (no numpy per row: faster
    for the small grids drafted on every model call)."""
    out = []
    for row in rows:
        runs, start = [], 0
        for i in range(1, len(row) + 1):
            if i == len(row) or row[i] != row[start]:
                runs.append(f"{names[row[start]]} *{i - start}")
                start = i
        out.append(RUN_SEP.join(runs))
    return ROW_SEP.join(out) + "\n"


def draft_text(grammar: TokenGrammar, text: str) -> str:
    """The draft continuation of ``text`` (generated so far) under ``grammar``; "" if none."""
    if isinstance(grammar, RRLEGrammar):
        head = grammar.head  # forced text before the body (e.g. "<seg>"), maybe not all out yet
        if len(text) < len(head):
            rest = predict_body("", grammar.names, grammar.grid)
            return head[len(text) :] + rest if head.startswith(text) and rest else ""
        if not text.startswith(head):
            return ""
        return predict_body(text[len(head) :], grammar.names, grammar.grid) or ""
    if isinstance(grammar, BSDGrammar):
        start = text.rfind(SEG_OPEN)
        if start < 0 or SEG_CLOSE in text[start:]:
            return ""
        refs = _REF.findall(text)
        if not refs or refs[-1] not in grammar.labels:
            return ""
        names = list(grammar.body_names((0, grammar.labels.index(refs[-1]))))
        return predict_body(text[start + len(SEG_OPEN) :], names, grammar.grid) or ""
    return ""


__all__ = ["draft_text", "predict_body"]
