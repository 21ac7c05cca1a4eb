"""Row-wise run-length encoding (R-RLE) of label grids, and its repairing row-wise parser.

Wire format (SPEC.md section 2), byte-compatible with every released Text4Seg checkpoint::

    body  := row ("\\n " row)* "\\n"          # exactly G rows
    row   := run ("| " run)*                 # runs of one row sum to G
    run   := LABEL " *" COUNT                # COUNT: decimal >= 1, no leading "+"
    LABEL := text without "|", "*", newline, and without leading/trailing blanks

Plain I-SD (no run-length) is the same grammar with every run written as a bare ``LABEL``
(count 1): ``others| others| cup| ...``. The parser accepts both, mixed.

Decoding never raises on model output. Each row is parsed on its own and repaired inside that
row only, so one bad row never shifts the rows after it (the official decoder flattens all rows
and pads/truncates the whole list). Every repair is reported as a :class:`Repair`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

OTHERS = "others"
RUN_SEP = "| "
ROW_SEP = "\n "
SEG_OPEN = "<seg>"
SEG_CLOSE = "</seg>"
# Text a label may not contain: it is descriptor syntax.
LABEL_FORBIDDEN = ("|", "*", "\n", "\r", SEG_OPEN, SEG_CLOSE)
_RUN_HINT = re.compile(r"\*\s*\d|\|")
# A label is fuzzily accepted when difflib's ratio reaches this (e.g. "others" vs "other").
FUZZY_CUTOFF = 0.75


class RepairKind(StrEnum):
    """What the parser had to fix; ``row`` in :class:`Repair` says where."""

    NO_BODY = "no_body"  # no descriptor in the text: the grid is all ``others``
    MISSING_CLOSE = "missing_close"  # ``<seg>`` without ``</seg>`` (output cut off)
    EMPTY_RUN = "empty_run"  # "| |" or a trailing "|": skipped
    BAD_COUNT = "bad_count"  # count missing after "*", not a number, or 0: inferred
    UNKNOWN_LABEL = "unknown_label"  # label matches nothing: read as ``others`` (index 0)
    FUZZY_LABEL = "fuzzy_label"  # label close to a known one (case, typo, cut off): mapped
    SHORT_ROW = "short_row"  # row covers < G cells: padded with the row's last label
    LONG_ROW = "long_row"  # row covers > G cells: truncated to G
    BLANK_LINE = "blank_line"  # empty line between rows: skipped
    MISSING_ROWS = "missing_rows"  # fewer than G rows: the rest filled with ``others``
    EXTRA_ROWS = "extra_rows"  # more than G rows: the extra rows dropped
    BAD_BOX = "bad_box"  # B-SD box clipped, reordered or widened to be valid
    DROPPED_INSTANCE = "dropped_instance"  # B-SD triple without a readable box or label: dropped


@dataclass(frozen=True)
class Repair:
    """One fix made while parsing. ``row`` is the 0-based grid row, or None for the whole text."""

    kind: RepairKind
    row: int | None
    detail: str


@dataclass
class ParsedGrid:
    """Result of :func:`parse_rrle`: the ``(G, G)`` ``int64`` grid of indices into the names."""

    grid: np.ndarray
    repairs: list[Repair] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        """True when the text was a well-formed descriptor (no repair was needed)."""
        return not self.repairs


def check_label(label: str, what: str = "label") -> str:
    """Validate one descriptor label and return it; raise TypeError/ValueError otherwise."""
    if not isinstance(label, str):
        raise TypeError(f"{what} must be a str, got {type(label).__name__}")
    if not label or label != label.strip():
        raise ValueError(f"{what} must be non-empty without leading/trailing blanks, got {label!r}")
    bad = [s for s in LABEL_FORBIDDEN if s in label]
    if bad:
        raise ValueError(f"{what} {label!r} must not contain {bad}: they are descriptor syntax")
    return label


def check_names(names: Sequence[str], require_others: bool = True) -> list[str]:
    """Validate a class list (``names[0] == 'others'`` when ``require_others``); return a list."""
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise TypeError(f"names must be a sequence of str, got {type(names).__name__}")
    names = [check_label(n, "class name") for n in names]
    if not names or (require_others and names[0] != OTHERS):
        raise ValueError(f"names must start with {OTHERS!r} (index 0), got {names[:3]!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"names must be unique, got {names!r}")
    return names


def encode_grid(grid: np.ndarray, names: Sequence[str], rle: bool = True) -> str:
    """Write a ``(G, G)`` grid of indices into ``names`` as an R-RLE (or plain I-SD) body.

    Returns the body without ``<seg>`` markers, ending with one newline. ``names`` is not
    re-validated here (callers validate once); indices must lie in ``[0, len(names))``.
    """
    grid = np.asarray(grid)
    rows = []
    for row in grid:
        starts = np.flatnonzero(np.r_[True, row[1:] != row[:-1]])
        counts = np.diff(np.r_[starts, row.size])
        if rle:
            runs = [f"{names[row[s]]} *{n}" for s, n in zip(starts, counts)]
        else:
            runs = [names[v] for v in row]
        rows.append(RUN_SEP.join(runs))
    return ROW_SEP.join(rows) + "\n"


def extract_body(text: str) -> tuple[str | None, list[Repair]]:
    """Find the descriptor body in a model answer; None when there is none.

    With ``<seg>``: the text up to ``</seg>`` (or to the end, reported as cut off). Without:
    from the first line that looks like runs (``*N`` or ``|``) to the end.
    """
    repairs: list[Repair] = []
    start = text.find(SEG_OPEN)
    if start >= 0:
        rest = text[start + len(SEG_OPEN) :]
        end = rest.find(SEG_CLOSE)
        if end < 0:
            repairs.append(Repair(RepairKind.MISSING_CLOSE, None, "no </seg>: output cut off"))
            return rest, repairs
        return rest[:end], repairs
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if _RUN_HINT.search(line):
            return "\n".join(lines[i:]), repairs
    return None, repairs


class LabelResolver:
    """Map label text to class indices: exact, then case-insensitive, then fuzzy (cached)."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self._exact = {n: i for i, n in enumerate(self.names)}
        self._folded = {n.casefold(): i for i, n in enumerate(self.names)}
        self._cache: dict[str, tuple[int, RepairKind | None]] = {}

    def resolve(self, label: str) -> tuple[int, RepairKind | None]:
        """Return (index, repair kind or None). Unknown labels give index 0 (``others``)."""
        hit = self._exact.get(label)
        if hit is not None:
            return hit, None
        if label in self._cache:
            return self._cache[label]
        folded = label.casefold()
        if folded in self._folded:
            out = (self._folded[folded], RepairKind.FUZZY_LABEL)
        else:
            close = difflib.get_close_matches(folded, list(self._folded), n=1, cutoff=FUZZY_CUTOFF)
            if close:
                out = (self._folded[close[0]], RepairKind.FUZZY_LABEL)
            else:
                out = (0, RepairKind.UNKNOWN_LABEL)
        self._cache[label] = out
        return out


_ASCII_DIGITS = re.compile(r"[0-9]+")
# Longer digit strings are read as "too many" without int(): Python refuses to convert more than
# 4300 digits, and any count above G is a long row anyway.
MAX_COUNT_DIGITS = 9


def _parse_count(text: str) -> int | None:
    """A run count: ASCII digits only (``str.isdigit`` also accepts "²", which int() refuses)."""
    text = text.strip()
    if not _ASCII_DIGITS.fullmatch(text):
        return None
    count = int(text) if len(text) <= MAX_COUNT_DIGITS else 10**MAX_COUNT_DIGITS
    return count if count > 0 else None


def parse_row(
    line: str, resolver: LabelResolver, grid: int, row: int
) -> tuple[np.ndarray, list[Repair]]:
    """Parse one row of runs into a ``(grid,)`` ``int64`` array, repairing it in place."""
    repairs: list[Repair] = []
    labels: list[int] = []
    counts: list[int | None] = []
    for run in line.split("|"):
        run = run.strip()
        if not run:
            repairs.append(Repair(RepairKind.EMPTY_RUN, row, "empty run skipped"))
            continue
        if "*" in run:
            label, _, count_text = run.rpartition("*")
            label = label.strip()
            count = _parse_count(count_text)
            if count is None:
                repairs.append(
                    Repair(RepairKind.BAD_COUNT, row, f"count {count_text!r} in {run!r}")
                )
        else:  # plain I-SD cell
            label, count = run, 1
        index, kind = resolver.resolve(label)
        if kind is not None:
            target = resolver.names[index]
            repairs.append(Repair(kind, row, f"label {label!r} read as {target!r}"))
        labels.append(index)
        counts.append(count)
    unknown = [i for i, c in enumerate(counts) if c is None]
    if unknown:  # share what the row still lacks among the runs whose count was unreadable
        known = sum(min(c, grid) for c in counts if c is not None)
        share, extra = divmod(max(grid - known, 0), len(unknown))
        for k, i in enumerate(unknown):
            counts[i] = share + (1 if k < extra else 0)
    # Cap each run at G before expanding so a count like 10**12 cannot exhaust memory.
    total = sum(counts)
    cells = np.repeat(np.array(labels, dtype=np.int64), [min(c, grid) for c in counts])
    if total > grid:
        repairs.append(Repair(RepairKind.LONG_ROW, row, f"{total} cells, kept {grid}"))
        cells = cells[:grid]
    elif cells.size < grid:
        repairs.append(Repair(RepairKind.SHORT_ROW, row, f"{cells.size} cells, padded to {grid}"))
        pad = cells[-1] if cells.size else 0
        cells = np.concatenate([cells, np.full(grid - cells.size, pad, dtype=np.int64)])
    return cells, repairs


def parse_rrle(text: str, names: Sequence[str], grid: int = 16) -> ParsedGrid:
    """Parse an R-RLE or plain I-SD answer into a ``(grid, grid)`` grid of indices into ``names``.

    ``text`` may be the bare body or a whole answer (``<seg>`` markers and prose around it).
    ``names[0]`` is the background (``others`` in I-SD); unknown labels map to it. Never raises
    on malformed text; see :class:`RepairKind` for what is repaired and how.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    body, repairs = extract_body(text)
    out = np.zeros((grid, grid), dtype=np.int64)
    if body is None:
        repairs.append(Repair(RepairKind.NO_BODY, None, "no descriptor found"))
        return ParsedGrid(out, repairs)
    resolver = LabelResolver(names)
    lines = body.split("\n")
    while lines and not lines[-1].strip():  # the body's own final newline, or trailing blanks
        lines.pop()
    row = 0
    for line in lines:
        if not line.strip():
            repairs.append(Repair(RepairKind.BLANK_LINE, row, "blank line skipped"))
            continue
        if row == grid:
            extra = sum(1 for rest in lines if rest.strip()) - grid
            repairs.append(
                Repair(RepairKind.EXTRA_ROWS, None, f"{extra} rows beyond {grid} dropped")
            )
            break
        out[row], row_repairs = parse_row(line, resolver, grid, row)
        repairs.extend(row_repairs)
        row += 1
    if row < grid:
        repairs.append(
            Repair(RepairKind.MISSING_ROWS, row, f"{grid - row} rows filled with {names[0]!r}")
        )
    return ParsedGrid(out, repairs)
