"""Split a growing Markdown answer into Discord messages of at most 2000 characters.

A streaming reply re-splits the whole answer on every update and edits the messages it already
sent, so the split has to be *prefix-stable*. With ``w = limit - reserve`` the guarantees are:

1. Every piece has at most ``w`` characters and is never empty or whitespace only.
2. Fences are balanced in every piece: a fenced code block (```` ``` ```` or ``~~~``, any length
   of three or more, with an optional info string such as ``python``) cut by a split is closed at
   the end of the piece (``"\\n```"``) and reopened at the start of the next one with the same
   opening line (``"```python\\n"``). The last piece is closed as well when the text ends inside a
   code block, as a streaming answer often does. The added fences count toward ``w``.
3. Nothing but whitespace is lost: without the fences added at the splits, the pieces are the
   text's own characters in order, minus whitespace at the split points and at the text's ends.
   Inside a code block the indentation of the line after a split is kept.
4. Prefix stability: for texts ``t`` and ``t + s`` split with the same ``limit`` and ``reserve``,
   ``split_message(t)[:-1] == split_message(t + s)[:len(split_message(t)) - 1]``. Only the last
   piece can still change while the text grows; every other message is final.

How 4 holds. A piece is the last one exactly when the rest of the text, plus room for one closing
fence, fits; that test only becomes false as the text grows (the room reserved for a closing
fence is ``1 +`` the longest fence run seen on any line, which never shrinks). Otherwise the piece
is cut inside a window whose size is the largest ``n`` with ``n + closing room <= w``, and where
and how it is cut depends only on the window and the one character after it, all of which a
non-final piece's text is guaranteed to contain. Classifying a boundary never looks further: a
boundary whose class would need more look-ahead (a space at the window's end, a line break in a
code block when the next line may be its closing fence) is skipped instead of guessed.

Boundaries, best first: a paragraph break (blank line, the end of a code block, or just before a
fence), a line break, a blank line then a line break inside a code block, a sentence end, a space
(or CJK punctuation), a space inside a code block, a break between two CJK characters, and only
then a hard cut inside a word, which never splits a ``\\r\\n``, a combining mark, an emoji
sequence, inline code or a fence line. The best class found in the last half of the window wins;
without one, the latest natural boundary anywhere beats a hard cut.

Fence lines follow CommonMark closely: any indentation is accepted (list items indent them), a
backtick fence's info string may not contain a backtick (so ```` ```x``` ```` is inline code),
and an opening line too long to repeat (with its closing it must fit in ``w // 2``) is plain text.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from bisect import bisect_right
from dataclasses import dataclass

__all__ = ["MESSAGE_LIMIT", "close_open_fence", "split_message"]

MESSAGE_LIMIT = 2000
"""Discord's limit on the characters of one message's content."""

# Boundary classes, best first.
_PARAGRAPH, _LINE, _CODE_PARAGRAPH, _CODE_LINE, _SENTENCE, _SPACE, _CODE_SPACE = range(7)

_WS_RUN = re.compile(r"\s+")
_NON_SPACE = re.compile(r"\S")
_FENCE_AT_LINE_START = re.compile(r"[ \t]*(`{3,}|~{3,})")
_FENCE_AFTER_NEWLINE = re.compile(r"\n[ \t]*(`{3,}|~{3,})")
_BACKTICK_RUN = re.compile(r"`+")
_CJK_PUNCTUATION = re.compile(r"[。！？｡，、；：]")
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_CJK_PAIR = re.compile(f"[{_CJK}](?=[{_CJK}])")
_SENTENCE_ENDS = frozenset(".!?…。！？｡")
_CLOSING_PUNCTUATION = frozenset("\"')]}»”’*_")
_NO_BREAK_SPACES = "\xa0\u2007\u202f"
_ZWJ = "\u200d"


@dataclass(frozen=True, slots=True)
class _Fence:
    """An open fenced code block."""

    marker: str  # the fence run that opened it, e.g. "```" or "~~~~"; closing repeats it
    line: str  # the opening line without indentation, e.g. "```python"; reopening repeats it

    @property
    def header(self) -> str:
        return self.line + "\n"

    @property
    def closing(self) -> str:
        return "\n" + self.marker


@dataclass(slots=True)
class _Line:
    """One line (or the visible start of one) between a piece's start and its look-ahead end."""

    start: int
    end: int  # index of its "\n", or where the visible text stops
    cuttable: bool  # plain text: may be cut inside (fence lines never are)
    opener: bool
    before: _Fence | None  # the block open at its start ...
    after: _Fence | None  # ... and after it
    spans: list[tuple[int, int]] | None = None  # inline code spans, computed on demand


def split_message(text: str, limit: int = MESSAGE_LIMIT, *, reserve: int = 0) -> list[str]:
    """Split Markdown ``text`` into pieces of at most ``limit - reserve`` characters.

    ``reserve`` leaves room for what the caller appends to the last piece (an in-progress
    marker). Keep ``limit`` and ``reserve`` the same for every update of one answer, the final
    one included: stability holds only between splits made with the same values. Whitespace-only
    text gives no pieces. See the module docstring for the guarantees.
    """
    width = limit - reserve
    if reserve < 0 or width < 1:
        raise ValueError(f"limit - reserve must be at least 1 (got {limit} - {reserve})")
    end = len(text.rstrip())
    pos = _skip_space(text, 0)
    fence: _Fence | None = None
    pieces: list[str] = []
    while pos < end:
        piece, pos, fence = _next_piece(text, pos, end, fence, width)
        pieces.append(piece)
    return pieces


def close_open_fence(text: str, *, limit: int = MESSAGE_LIMIT) -> str:
    """Return ``text`` with a code block it leaves open closed, else ``text`` unchanged.

    For showing a partial answer, so that what follows it is not rendered as code. ``limit``
    only matters for absurdly long opening lines, which are plain text (see the module docstring).
    """
    lines = _scan_lines(text, 0, len(text), None, limit, first_mid=False, eof=True)
    fence = lines[-1].after if lines else None
    if fence is None:
        return text
    return text + (fence.marker if text.endswith("\n") else fence.closing)


def _next_piece(
    text: str, pos: int, end: int, fence: _Fence | None, width: int
) -> tuple[str, int, _Fence | None]:
    """The piece starting at ``pos`` (inside ``fence``), where the next starts, and its fence."""
    header = fence.header if fence else ""
    room = width - len(header)
    base = len(fence.closing) if fence else 0
    cap = width // 2  # no valid opener needs more than this to be closed (see _parse_opener)
    while True:
        if end - pos <= room:
            closing_room = _closing_room(_fence_runs(text, pos, end), end, base, cap)
            if end - pos + closing_room <= room:
                return _last_piece(text, pos, end, fence, width), end, None
        # The largest window n with n + closing room <= room; f(n) grows strictly with n.
        span = min(room, len(text) - pos)
        runs = _fence_runs(text, pos, pos + span)
        low, high = 0, span
        while low < high:
            middle = (low + high + 1) // 2
            if middle + _closing_room(runs, pos + middle, base, cap) <= room:
                low = middle
            else:
                high = middle - 1
        first = _skip_space(text, pos)
        if first - pos >= low:  # kept code indentation wider than the window: drop it
            pos = first
            continue
        window = _Window(text, pos, first, low, fence, width)
        at = window.choose()
        resume, state = window.cut(at)
        closing = state.closing if state else ""
        return header + text[pos:at].rstrip() + closing, resume, state


def _last_piece(text: str, pos: int, end: int, fence: _Fence | None, width: int) -> str:
    lines = _scan_lines(text, pos, end, fence, width, first_mid=_is_mid_line(text, pos), eof=True)
    state = lines[-1].after if lines else fence
    header = fence.header if fence else ""
    return header + text[pos:end] + (state.closing if state else "")


class _Window:
    """Where a non-final piece starting at ``pos`` may be cut: after ``first``, up to ``last``.

    Nothing at or after ``visible`` (one character past ``last``) is looked at, except to skip
    the whitespace after the chosen cut, which a non-final piece's text always ends.
    """

    def __init__(
        self, text: str, pos: int, first: int, size: int, fence: _Fence | None, width: int
    ) -> None:
        self.text = text
        self.pos = pos
        self.first = first
        self.last = pos + size
        self.visible = self.last + 1
        self.lines = _scan_lines(
            text, pos, self.visible, fence, width, first_mid=_is_mid_line(text, pos), eof=False
        )
        self.starts = [line.start for line in self.lines]

    def choose(self) -> int:
        """The end of the piece: the best boundary, preferring the last half of the window."""
        text, first, last = self.text, self.first, self.last
        half = self.pos + (last - self.pos + 1) // 2
        candidates = [m.start() for m in _WS_RUN.finditer(text, first, self.visible)]
        candidates += [m.end() for m in _CJK_PUNCTUATION.finditer(text, first, last)]
        candidates.sort(reverse=True)
        best: dict[int, int] = {}
        below: int | None = None
        for at in candidates:
            if not first < at <= last:
                continue
            kind = self._classify(at)
            if kind is None:
                continue
            if at < half:
                below = at  # the latest natural boundary, as no better one was found
                break
            best.setdefault(kind, at)
            if kind == _PARAGRAPH:
                break
        if best:
            return best[min(best)]
        ideograph = self._latest_ideograph_break()
        if ideograph is not None and ideograph >= half:
            return ideograph
        natural = max((at for at in (below, ideograph) if at is not None), default=None)
        if natural is not None:
            return natural
        hard = self._latest_hard_cut()
        return hard if hard is not None else self._last_resort()

    def cut(self, at: int) -> tuple[int, _Fence | None]:
        """Where the next piece starts after a cut at ``at``, and the block open there."""
        text = self.text
        line = self.line_at(at)
        if not text[at].isspace():
            return at, line.before
        resume = _skip_space(text, at)
        newline = text.rfind("\n", at, resume)
        if newline < 0:
            return resume, line.before
        # In a code block keep the indentation of the next line.
        return (resume if line.after is None else newline + 1), line.after

    def line_at(self, index: int) -> _Line:
        return self.lines[bisect_right(self.starts, index) - 1]

    def _classify(self, at: int) -> int | None:
        """The class of a cut at ``at`` (a whitespace run or after CJK punctuation), or None."""
        text, visible = self.text, self.visible
        line = self.line_at(at)
        if not text[at].isspace():  # right after CJK punctuation
            if not line.cuttable or line.before is not None or self._in_code_span(line, at):
                return None
            if _opens_fence(text, at, visible):
                return None
            return _SENTENCE if text[at - 1] in _SENTENCE_ENDS else _SPACE
        run = _WS_RUN.match(text, at, visible)
        assert run is not None
        resume = run.end()
        newlines = run.group().count("\n")
        if newlines == 0:
            if not run.group().strip(_NO_BREAK_SPACES) or not line.cuttable:
                return None
            # The next piece would start mid-line: it must not start with a fence-like run.
            if resume >= visible or _opens_fence(text, resume, visible):
                return None
            if line.before is not None:
                return _CODE_SPACE
            if self._in_code_span(line, at):
                return None
            return _SENTENCE if _ends_sentence(text, self.pos, at) else _SPACE
        if line.opener:  # the piece would end with an empty code block
            return None
        if line.after is None:
            closes_block = line.before is not None
            if closes_block or newlines >= 2 or _opens_fence(text, resume, visible):
                return _PARAGRAPH
            return _LINE
        # Inside a code block: the next piece must not start with the block's closing fence.
        if resume >= visible or _may_close(text, resume, visible, line.after):
            return None
        return _CODE_PARAGRAPH if newlines >= 2 else _CODE_LINE

    def _in_code_span(self, line: _Line, at: int) -> bool:
        """Whether ``at`` is inside inline code; an unmatched backtick run counts as open."""
        if line.spans is None:
            spans: list[tuple[int, int]] = []
            opened, size = -1, 0
            for run in _BACKTICK_RUN.finditer(self.text, line.start, line.end):
                if opened < 0:
                    opened, size = run.start(), len(run.group())
                elif len(run.group()) == size:
                    spans.append((opened, run.end()))
                    opened = -1
            if opened >= 0:
                spans.append((opened, sys.maxsize))
            line.spans = spans
        return any(start < at < end for start, end in line.spans)

    def _latest_ideograph_break(self) -> int | None:
        pairs = [m.end() for m in _CJK_PAIR.finditer(self.text, self.first, self.visible)]
        for at in reversed(pairs):
            line = self.line_at(at)
            if line.cuttable and line.before is None and not self._in_code_span(line, at):
                return at
        return None

    def _latest_hard_cut(self) -> int | None:
        text = self.text
        for at in range(self.last, self.first, -1):
            if text[at - 1].isspace() or text[at].isspace() or text[at] in "`~":
                continue
            line = self.line_at(at)
            if not line.cuttable or (line.before is None and self._in_code_span(line, at)):
                continue
            if not _splits_grapheme(text, at):
                return at
        return None

    def _last_resort(self) -> int:
        """No allowed cut (only in absurd text, e.g. inline code longer than the window)."""
        text, visible = self.text, self.visible
        positions = range(self.last, self.first, -1)
        for at in positions:  # whitespace, not followed mid-line by a fence-like run
            if text[at].isspace() and not text[at - 1].isspace():
                resume = _skip_space(text, at)
                if "\n" in text[at:resume] or not _opens_fence(text, resume, visible):
                    return at
        for at in positions:
            if text[at] not in "`~" and not _splits_grapheme(text, at):
                return at
        for at in positions:
            if not _splits_grapheme(text, at):
                return at
        return self.last


def _scan_lines(
    text: str,
    start: int,
    stop: int,
    fence: _Fence | None,
    width: int,
    *,
    first_mid: bool,
    eof: bool,
) -> list[_Line]:
    """The lines of ``text[start:stop]``, tracking code blocks from ``fence`` on.

    A line is judged once complete; an unfinished last line counts as complete only with
    ``eof``. ``first_mid`` says the first line starts mid-line, so it is plain text.
    """
    lines: list[_Line] = []
    mid = first_mid
    while start < stop:
        newline = text.find("\n", start, stop)
        complete = newline >= 0 or eof
        end = newline if newline >= 0 else stop
        before, opener, cuttable = fence, False, True
        if not mid and _looks_like_fence(text, start, end, complete):
            cuttable = False
            if complete:
                line = text[start:end]
                if fence is None:
                    fence = _parse_opener(line, width)
                    opener = fence is not None
                elif _closes(line, fence):
                    fence = None
        lines.append(_Line(start, end, cuttable, opener, before, fence))
        if newline < 0:
            break
        start, mid = newline + 1, False
    return lines


def _looks_like_fence(text: str, start: int, end: int, complete: bool) -> bool:
    """Whether the line ``text[start:end]`` starts with a fence run, or may once complete."""
    i = start
    while i < end and text[i] in " \t":
        i += 1
    if i == end or text[i] not in "`~":
        return False
    j = i
    while j < end and text[j] == text[i]:
        j += 1
    return j - i >= 3 or (j == end and not complete)


def _parse_opener(line: str, width: int) -> _Fence | None:
    match = _FENCE_AT_LINE_START.match(line)
    if match is None:
        return None
    marker = match.group(1)
    if marker[0] == "`" and "`" in line[match.end() :]:
        return None
    opening = line.strip()
    # Reopening and closing must leave most of a piece for the code itself.
    if len(opening) + 2 + len(marker) > width // 2:
        return None
    return _Fence(marker, opening)


def _closes(line: str, fence: _Fence) -> bool:
    run = line.strip()
    return len(run) >= len(fence.marker) and run == fence.marker[0] * len(run)


def _fence_runs(text: str, start: int, stop: int) -> list[tuple[int, int]]:
    """Start and length of the fence runs (3+ backticks or tildes) opening lines in the range."""
    runs: list[tuple[int, int]] = []
    match = _FENCE_AT_LINE_START.match(text, start, stop)
    if match:
        runs.append((match.start(1), len(match.group(1))))
    for match in _FENCE_AFTER_NEWLINE.finditer(text, start, stop):
        runs.append((match.start(1), len(match.group(1))))
    return runs


def _closing_room(runs: list[tuple[int, int]], stop: int, base: int, cap: int) -> int:
    """Room for closing whatever block ``text[:stop]`` may leave open; never shrinks with stop."""
    room = base
    for start, size in runs:
        seen = min(size, stop - start)
        if seen >= 3:
            room = max(room, min(seen + 1, cap))
    return room


def _may_close(text: str, at: int, stop: int, fence: _Fence) -> bool:
    """Whether the line from ``at`` is, or may be (not visible before ``stop``), the closing."""
    char, j = fence.marker[0], at
    while j < stop and text[j] == char:
        j += 1
    if j == stop:
        return True
    if j - at < len(fence.marker):
        return False
    while j < stop and text[j] != "\n" and text[j].isspace():
        j += 1
    return j == stop or text[j] == "\n"


def _opens_fence(text: str, at: int, stop: int) -> bool:
    """Whether ``text`` at ``at`` starts (or, not visible enough, may start) a fence run."""
    if at >= stop or text[at] not in "`~":
        return False
    j = at
    while j < stop and j < at + 3 and text[j] == text[at]:
        j += 1
    return j - at >= 3 or j == stop


def _ends_sentence(text: str, pos: int, at: int) -> bool:
    char = text[at - 1]
    if char in _CLOSING_PUNCTUATION and at - 2 >= pos:
        char = text[at - 2]
    return char in _SENTENCE_ENDS


def _splits_grapheme(text: str, at: int) -> bool:
    """Whether a cut before ``text[at]`` would split a user-perceived character (approx.)."""
    before, after = text[at - 1], text[at]
    if before == _ZWJ or after == _ZWJ or (before == "\r" and after == "\n"):
        return True
    if unicodedata.category(after).startswith("M"):
        return True
    if (
        "\ufe00" <= after <= "\ufe0f"  # variation selectors
        or "\U0001f3fb" <= after <= "\U0001f3ff"  # skin tones
        or "\U000e0000" <= after <= "\U000e01ef"  # tags, variation selectors supplement
    ):
        return True
    if _is_regional_indicator(before) and _is_regional_indicator(after):
        i = at - 1
        while i >= 0 and _is_regional_indicator(text[i]):
            i -= 1
        return (at - 1 - i) % 2 == 1  # odd count before: ``before`` starts a flag
    return False


def _is_regional_indicator(char: str) -> bool:
    return "\U0001f1e6" <= char <= "\U0001f1ff"


def _skip_space(text: str, index: int) -> int:
    match = _NON_SPACE.search(text, index)
    return match.start() if match else len(text)


def _is_mid_line(text: str, pos: int) -> bool:
    return bool(text[text.rfind("\n", 0, pos) + 1 : pos].strip())
