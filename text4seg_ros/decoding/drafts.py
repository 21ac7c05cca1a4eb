"""Row-copy drafts: guess how a descriptor goes on, for speculative verification.

Neighbouring grid rows of a mask are mostly equal (background above and below the object, an
object's outline moving a cell or two per row). A draft continues the current row with the cells
of the row above, and every later row as a copy of the current one, then ``</seg>``. The decoder
feeds the draft with the tokens it must write anyway and keeps the longest prefix the model
itself would have chosen (greedy verification), so drafts change the number of forward calls,
never the output.

Incremental (:class:`DraftTracker`): the decoder feeds each goal's tokens as they are written;
the tracker keeps only the current line's tokens and what the finished lines left behind (rows
done, the last row's cells, the open body's label names), so a draft costs the same at the
first row as at the last, whatever the answer's length. Tokens of finished lines are never
decoded again. :func:`draft_text` is the same prediction for a whole text at once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..descriptors.grammar import BSDGrammar, RRLEGrammar, TokenGrammar, Walk
from ..descriptors.rrle import RUN_SEP, SEG_CLOSE, SEG_OPEN

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


def _row_text(row: Sequence[int], names: Sequence[str]) -> str:
    """One grid row as R-RLE runs (``"cup *3| others *13"``), as the encoder writes it."""
    runs, start = [], 0
    for i in range(1, len(row) + 1):
        if i == len(row) or row[i] != row[start]:
            runs.append(f"{names[row[start]]} *{i - start}")
            start = i
    return RUN_SEP.join(runs)


def _line_prefix(index: int) -> str:
    """Text before a body row's runs: rows after the first start with ``ROW_SEP``'s space."""
    return " " if index else ""


def predict_rest(
    done: int,
    above: list[int] | None,
    partial: str,
    names: Sequence[str],
    grid: int,
    index: dict[str, int] | None = None,
) -> str | None:
    """Predicted rest of an R-RLE body (ending with ``"\\n</seg>"``).

    ``done``: body rows finished so far; ``above``: the cells of the last of them (None when
    none); ``partial``: the text of the current row so far (after its newline). Returns None when
    the text cannot be continued by a row copy (e.g. a partial label that matches no name).
    ``index``: ``{name: position in names}`` when the caller keeps one (built here otherwise).
    """
    if done >= grid:
        return None
    if index is None:
        index = {n: i for i, n in enumerate(names)}
    *closed, last = partial.split("|") if partial.strip() else [""]
    runs = _parse_runs("|".join(closed), index) if closed else []
    if runs is None:
        return None
    cells = _cells(runs)
    col = len(cells)
    if col >= grid:  # the row is full: no run fits after it
        return None
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
    if digits:  # the run's count is partly written: the closest count it can still become
        fits = [v for v in range(1, grid - col + 1) if str(v).startswith(digits)]
        if not fits:
            return None
        run = min(fits, key=lambda v: (abs(v - run), v))
    # (no digits yet: every count 1 .. grid - col fits, and run is one of them)
    row = cells + [label] * run + pred[col + run :]
    text = _row_text(row, names)
    line = _line_prefix(done) + text
    if not line.startswith(partial):
        return None
    copies = grid - done - 1
    return line[len(partial) :] + ("\n " + text) * copies + "\n" + SEG_CLOSE


def predict_body(body: str, names: Sequence[str], grid: int) -> str | None:
    """Predicted rest of an R-RLE body (ending with ``"\\n</seg>"``) after the text ``body``
    (what has been generated since ``<seg>``); None when no row copy continues it."""
    *lines, partial = body.split("\n")
    done, above = _Rows(names, grid), None
    for line in lines:
        above = done.add(line)
        if above is None:
            return None
    return predict_rest(done.count, above, partial, names, grid)


class _Rows:
    """Finished body rows: their count and the last one's cells (each checked to re-encode as
    written: a row the encoder would write differently cannot be continued by a copy)."""

    def __init__(self, names: Sequence[str], grid: int) -> None:
        self.names, self.grid = names, grid
        self.index = {n: i for i, n in enumerate(names)}
        self.count = 0
        self.last: list[int] | None = None

    def add(self, line: str) -> list[int] | None:
        runs = _parse_runs(line, self.index)
        cells = _cells(runs) if runs is not None else []
        if runs is None or len(cells) != self.grid:
            return None
        if line != _line_prefix(self.count) + _row_text(cells, self.names):
            return None
        self.count += 1
        self.last = cells
        return cells


class DraftTracker:
    """One goal's generated text, kept line by line, and the row-copy draft from where it is.

    :meth:`feed` the tokens as they are written (forced, chosen and accepted draft tokens);
    :meth:`draft` gives the draft text from there, and :meth:`draft_walk` its tokens under the
    grammar from a state (at most ``limit``). The work per call is bounded by one line's length
    and the draft's, never by the answer's length so far.
    """

    def __init__(self, grammar: TokenGrammar) -> None:
        self.grammar = grammar
        self.codec = grammar.codec
        self.kind = (
            "rrle"
            if isinstance(grammar, RRLEGrammar)
            else "bsd"
            if isinstance(grammar, BSDGrammar)
            else ""
        )
        self.lines = 0  # finished lines
        self.head_text = ""  # text of the current line before its tokens (after a newline)
        self.line_tokens: list[int] = []  # tokens of the current line (since the last newline)
        self.line_text = ""  # their text, piece by piece, while ``clean``
        self.clean = True  # every piece of the line is whole characters
        self.rows: _Rows | None = None  # the open body's finished rows (None: no body open)
        self.bad = False  # a finished line of the open body cannot be continued by a copy
        self.last_ref: str | None = None  # the last <ref> label in the finished lines
        if self.kind == "rrle":
            self.rows = _Rows(grammar.names, grammar.grid)  # type: ignore[attr-defined]

    # -- text --------------------------------------------------------------------------------
    def feed(self, tokens: Sequence[int]) -> None:
        """Append written tokens; lines are closed at tokens whose text holds a newline.

        The current line's text is the concatenation of its tokens' in-context pieces while
        every piece is whole characters (descriptor tokens are); a token holding part of a
        multi-byte character makes the line decode as a whole instead."""
        for token in tokens:
            token = int(token)
            piece = self.codec.piece(token)
            self.line_tokens.append(token)
            if "\ufffd" in piece:
                self.clean = False
            elif self.clean:
                self.line_text += piece
            if "\n" in piece:
                text = self.head_text + self._line()
                *done, self.head_text = text.split("\n")
                self.line_tokens, self.line_text, self.clean = [], "", True
                for line in done:
                    self._close(line)

    def _line(self) -> str:
        return self.line_text if self.clean else self.codec.decode(self.line_tokens)

    def partial(self) -> str:
        """The text of the current line so far."""
        if not self.line_tokens:
            return self.head_text
        return self.head_text + self._line()

    def _close(self, line: str) -> None:
        if self.kind == "rrle":
            if self.lines == 0:
                head = self.grammar.head  # type: ignore[attr-defined]
                self.bad = self.bad or not line.startswith(head)
                line = line[len(head) :]
            if not self.bad and self.rows.add(line) is None:  # type: ignore[union-attr]
                self.bad = True
        elif self.kind == "bsd":
            refs = _REF.findall(line)
            if refs:
                self.last_ref = refs[-1]
            start = line.rfind(SEG_OPEN)
            if start >= 0:
                self.rows, self.bad = self._open_body(self.last_ref), False
                line = line[start + len(SEG_OPEN) :]
                if self.rows is not None and SEG_CLOSE in line:
                    self.rows = None
            elif self.rows is not None and SEG_CLOSE in line:
                self.rows = None
            if self.rows is not None and not self.bad and self.rows.add(line) is None:
                self.bad = True
        self.lines += 1

    def _open_body(self, label: str | None) -> _Rows | None:
        g = self.grammar
        if label is None or label not in g.labels:  # type: ignore[attr-defined]
            return None
        names = g.body_names((0, g.labels.index(label)))  # type: ignore[attr-defined]
        return _Rows(names, g.grid)  # type: ignore[attr-defined]

    # -- drafts ------------------------------------------------------------------------------
    def draft(self) -> str:
        """The draft continuation of the text so far; "" if none."""
        partial = self.partial()
        if self.kind == "rrle":
            g = self.grammar
            if self.lines == 0:
                head = g.head  # type: ignore[attr-defined]
                if len(partial) < len(head):
                    if not head.startswith(partial):
                        return ""
                    rest = predict_rest(0, None, "", g.names, g.grid)  # type: ignore[attr-defined]
                    return head[len(partial) :] + rest if rest else ""
                if not partial.startswith(head):
                    return ""
                partial = partial[len(head) :]
            if self.bad:
                return ""
            rows = self.rows
            return (
                predict_rest(rows.count, rows.last, partial, rows.names, rows.grid, rows.index)  # type: ignore[union-attr]
                or ""
            )
        if self.kind == "bsd":
            start = partial.rfind(SEG_OPEN)
            if start >= 0:  # the body opens on this line
                refs = _REF.findall(partial[:start])
                rows = self._open_body(refs[-1] if refs else self.last_ref)
                body = partial[start + len(SEG_OPEN) :]
                if rows is None or SEG_CLOSE in body:
                    return ""
                return predict_rest(0, None, body, rows.names, rows.grid, rows.index) or ""
            if self.rows is None or self.bad or SEG_CLOSE in partial:
                return ""
            rows = self.rows
            return (
                predict_rest(rows.count, rows.last, partial, rows.names, rows.grid, rows.index)
                or ""
            )
        return ""

    def draft_walk(self, state: int, limit: int) -> Walk:
        """The draft's tokens under the grammar from ``state`` (at most ``limit``), with the
        states and free choice points along them (:meth:`TokenGrammar.walk`). The draft is
        walked one row at a time (rows end in a digit, which no token joins to the newline
        after it), and copied rows are walked once per state and text (cached by the grammar)."""
        text = self.draft()
        if not text or limit <= 0:
            return Walk((), (state,), (), True)
        pieces = text.split("\n")
        segments = [pieces[0]] + ["\n" + p for p in pieces[1:]]
        tokens: list[int] = []
        states = [state]
        free: list = []
        g = self.grammar
        for n, segment in enumerate(segments):
            walk = g.walk(segment, states[-1], cache=n > 0)
            room = limit - len(tokens)
            base = len(tokens)
            free += [(base + j, a) for j, a in walk.free if j < room]
            tokens += walk.tokens[:room]
            states += walk.states[1 : room + 1]
            if len(tokens) >= limit or not walk.whole:
                break
        return Walk(tuple(tokens), tuple(states), tuple(free), False)


def draft_text(grammar: TokenGrammar, text: str) -> str:
    """The draft continuation of ``text`` (generated so far) under ``grammar``; "" if none."""
    tracker = DraftTracker(grammar)
    lines = text.split("\n")
    for line in lines[:-1]:
        tracker._close(line)
    tracker.head_text = lines[-1]
    return tracker.draft()


__all__ = ["DraftTracker", "draft_text", "predict_body", "predict_rest"]
