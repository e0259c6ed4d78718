"""Tests for bot.delivery.splitting: unit cases, then properties checked with hypothesis.

How the properties compare a split with its text (``_rejoins``): every piece is taken as
*core* = the piece minus, possibly, a fence line added at its start (a reopening) and one added
at its end (a closing). The text must equal ``ws + core_0 + ws + core_1 + ... + ws`` where each
``ws`` is whitespace only (possibly empty), so only whitespace at the split points and at the
text's ends may be lost; an added reopening must follow an added closing of the same fence.
"""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.delivery.splitting import MESSAGE_LIMIT, close_open_fence, split_message

FENCE_LINE = re.compile(r"^[ \t]*(`{3,}|~{3,})", re.MULTILINE)
OPENING = re.compile(r"[ \t]*(`{3,}(?=[^`]*$)|~{3,})(.*)")


def fence_lines(piece: str) -> list[str]:
    return [match.group(1) for match in FENCE_LINE.finditer(piece)]


def fence_walk(piece: str) -> tuple[str | None, int]:
    """The fence ``piece`` leaves open, by CommonMark's rules (info strings, fence lengths), and
    how many fence-like lines in it neither open nor close a block."""
    fence: str | None = None
    inert = 0
    for line in piece.split("\n"):
        if fence is None:
            match = OPENING.fullmatch(line.rstrip())
            fence = match.group(1) if match else None
            inert += match is None and FENCE_LINE.match(line) is not None
        elif re.fullmatch(rf"[ \t]*{fence[0]}{{{len(fence)},}}\s*", line):
            fence = None
        else:
            inert += FENCE_LINE.match(line) is not None
    return fence, inert


def _locate(text: str, cursor: int, core: str) -> int | None:
    """The end of ``core`` in ``text`` if only whitespace separates it from ``cursor``."""
    at = cursor
    while True:
        if text.startswith(core, at):
            return at + len(core)
        if at < len(text) and text[at].isspace():
            at += 1
            continue
        return None


def _cores(piece: str) -> list[tuple[str, str | None, str | None]]:
    """Ways to read ``piece`` as (core, added reopening line, added closing run), fewest first."""
    ways: list[tuple[str, str | None, str | None]] = [(piece, None, None)]
    head, newline, rest = piece.partition("\n")
    reopened = bool(newline) and FENCE_LINE.match(head) is not None
    body, newline, tail = piece.rpartition("\n")
    closed = bool(newline) and re.fullmatch(r"`{3,}|~{3,}", tail) is not None
    if closed:
        ways.append((body, None, tail))
    if reopened:
        ways.append((rest, head, None))
        if closed and rest.endswith("\n" + tail) and len(rest) > len(tail) + 1:
            ways.append((rest[: -len(tail) - 1], head, tail))
    return ways


def _rejoins(text: str, pieces: list[str]) -> bool:
    """Whether ``pieces`` read as cores rebuild ``text`` (see the module docstring).

    A fence added at the end of a piece must be followed by the same fence reopened at the start
    of the next one. Readings with the fewest added fences are tried first, backtracking when
    needed, as a code line can look like the fence added before it.
    """
    stack: list[tuple[int, int, str | None]] = [(0, 0, None)]
    seen: set[tuple[int, int, str | None]] = set()
    while stack:
        state = stack.pop()
        if state in seen:
            continue
        seen.add(state)
        index, cursor, closing = state
        if index == len(pieces):
            if not text[cursor:].strip():
                return True
            continue
        options = []
        for core, reopening, added_closing in _cores(pieces[index]):
            fence = FENCE_LINE.match(reopening) if reopening else None
            if not core.strip() or (fence.group(1) if fence else None) != closing:
                continue
            found = _locate(text, cursor, core)
            if found is not None:
                options.append((index + 1, found, added_closing))
        stack.extend(reversed(options))
    return False


def _check_pieces(text: str, pieces: list[str], width: int) -> None:
    for index, piece in enumerate(pieces):
        assert 0 < len(piece) <= width, (index, len(piece))
        assert piece.strip(), index
        assert fence_walk(piece)[0] is None, (index, piece)
    assert _rejoins(text, pieces), pieces


def _check_stable(prefix: str, text: str, limit: int, reserve: int) -> None:
    before = split_message(prefix, limit, reserve=reserve)
    after = split_message(text, limit, reserve=reserve)
    assert before[:-1] == after[: max(len(before) - 1, 0)]


# --- unit tests ----------------------------------------------------------------------------


def test_short_and_blank_texts() -> None:
    assert split_message("Hello!") == ["Hello!"]
    assert split_message("") == []
    assert split_message(" \n\t ") == []
    assert split_message("  Hello  \n") == ["Hello"]
    assert split_message("x" * MESSAGE_LIMIT) == ["x" * MESSAGE_LIMIT]


def test_invalid_limit() -> None:
    with pytest.raises(ValueError):
        split_message("text", 10, reserve=10)
    with pytest.raises(ValueError):
        split_message("text", 10, reserve=-1)


def test_paragraphs() -> None:
    first = "First paragraph. " * 5 + "end"
    second = "Second paragraph line.\nStill second. " + "word " * 8
    text = f"{first}\n\n{second.strip()}"
    assert split_message(text, len(first) + 30) == [first, second.strip()]


def test_prefers_paragraph_in_last_half_over_later_line_break() -> None:
    text = "a" * 60 + "\n\n" + "b" * 30 + "\n" + "c" * 5 + "\n" + "d" * 60
    pieces = split_message(text, 100)
    assert pieces[0] == "a" * 60


def test_lines() -> None:
    lines = [f"line number {i} of the list" for i in range(12)]
    pieces = split_message("\n".join(lines), 100)
    assert len(pieces) > 1
    assert all(len(piece) <= 100 for piece in pieces)
    assert [line for piece in pieces for line in piece.split("\n")] == lines


def test_words() -> None:
    words = [f"word{i}" for i in range(100)]
    text = " ".join(words)
    pieces = split_message(text, 60)
    assert all(len(piece) <= 60 for piece in pieces)
    assert all(len(piece) > 30 for piece in pieces[:-1])  # not absurdly short
    assert " ".join(pieces) == text


def test_sentence_end_beats_a_later_space() -> None:
    first = "This is one sentence, long enough to count."
    text = first + " and more words" * 3 + " " + "x" * 40
    pieces = split_message(text, 70)
    assert pieces[0] == first


def test_long_word_is_hard_cut() -> None:
    text = "short " + "x" * 250 + " tail"
    pieces = split_message(text, 100)
    assert pieces == ["short", "x" * 100, "x" * 100, "x" * 50 + " tail"]


def test_code_block_with_language_across_two_pieces() -> None:
    code = "\n".join(f"print({i})" for i in range(20))
    text = f"Some code:\n\n```python\n{code}\n```\nAfter."
    pieces = split_message(text, 150)
    assert len(pieces) == 2
    assert pieces[0].startswith("Some code:\n\n```python\nprint(0)\n")
    assert pieces[0].endswith(")\n```")
    assert pieces[1].startswith("```python\nprint(") and pieces[1].endswith(")\n```\nAfter.")
    assert all(len(piece) <= 150 for piece in pieces)
    _check_pieces(text, pieces, 150)


def test_code_block_with_language_across_three_pieces() -> None:
    code = "\n".join(f"    value_{i} = compute({i})" for i in range(24))
    text = f"```rust\n{code}\n```"
    pieces = split_message(text, 300)
    assert len(pieces) == 3
    assert pieces[0].startswith("```rust\n    value_0")
    assert pieces[0].endswith("\n```") and pieces[1].endswith("\n```")
    # The block is reopened with its language and the indentation of the next line is kept.
    assert pieces[1].startswith("```rust\n    value_")
    assert pieces[2].startswith("```rust\n    value_") and pieces[2].endswith(")\n```")
    _check_pieces(text, pieces, 300)


def test_tilde_fence_is_reopened_with_tildes() -> None:
    code = "\n".join(f"echo {i}" for i in range(30))
    text = f"~~~bash\n{code}\n~~~"
    pieces = split_message(text, 120)
    assert len(pieces) > 1
    for piece in pieces:
        assert piece.startswith("~~~bash\n") and piece.endswith("\n~~~")
    _check_pieces(text, pieces, 120)


def test_long_fence_is_closed_with_its_own_length() -> None:
    code = "\n".join(["```inner", "x", "```", *[f"line {i}" for i in range(30)]])
    text = f"````markdown\n{code}\n````"
    pieces = split_message(text, 120)
    assert len(pieces) > 1
    for piece in pieces:
        assert piece.startswith("````markdown\n") and piece.endswith("\n````")


def test_closing_fence_at_the_boundary() -> None:
    # A piece keeps room to close a block it may leave open (1 + the fence's length), so a
    # block whose closing fence ends right at the limit moves whole to the next piece ...
    block = "```py\n" + "x = 1\n" * 5 + "```"
    lead = "a" * (100 - len(block) - 2)
    text = f"{lead}\n\n{block}\n\nnext paragraph"
    assert len(f"{lead}\n\n{block}") == 100
    assert split_message(text, 100) == [lead, f"{block}\n\nnext paragraph"]
    # ... and with that room it stays in the piece, ending with its own closing fence.
    assert split_message(text, 104) == [f"{lead}\n\n{block}", "next paragraph"]


def test_opening_fence_at_the_boundary_moves_to_the_next_piece() -> None:
    lead = "b" * 90
    text = f"{lead}\n```js\nlet x = 1;\n```"
    assert len(f"{lead}\n```js") < 100 < len(text)
    assert split_message(text, 100) == [lead, "```js\nlet x = 1;\n```"]


def test_no_empty_block_before_closing_fence() -> None:
    # A cut just before the closing fence would leave a piece that is only "```py\n```".
    text = "```py\n" + "y = 2\n" * 15 + "```\ntext after the block"
    for limit in range(40, 120):
        pieces = split_message(text, limit)
        _check_pieces(text, pieces, limit)
        assert all(piece.strip("`py\n") for piece in pieces), limit


def test_crlf_text() -> None:
    lines = [f"line {i} with some words" for i in range(20)]
    text = "\r\n".join(lines)
    pieces = split_message(text, 80)
    assert len(pieces) > 1
    for piece in pieces:
        assert not piece.startswith(("\r", "\n")) and not piece.endswith(("\r", "\n"))
    assert "\r\n".join(pieces) == text


def test_crlf_code_block() -> None:
    code = "\r\n".join(f"x{i} = {i}" for i in range(30))
    text = f"```python\r\n{code}\r\n```\r\n"
    pieces = split_message(text, 100)
    assert len(pieces) > 1
    assert pieces[0].startswith("```python\r\nx0 = 0\r\n")
    for piece in pieces[:-1]:  # an added closing fence follows the stripped last line
        assert piece.endswith("\n```") and not piece.endswith("\r\n```")
    for piece in pieces:
        assert piece.startswith(("```python\r\n", "```python\n")) and len(piece) <= 100
    assert pieces[-1].endswith("\r\n```")
    _check_pieces(text, pieces, 100)


def test_emoji_sequences_are_not_split() -> None:
    family = "👨\u200d👩\u200d👧"  # 5 code points, one emoji
    thumbs = "👍🏽"  # 2 code points
    flag = "🇫🇷"  # 2 regional indicators
    text = (family + thumbs + flag) * 40
    pieces = split_message(text, 50)
    assert "".join(pieces) == text
    for piece in pieces:
        assert len(piece) <= 50
        assert not piece.startswith(("\u200d", "🏽")) and not piece.endswith("\u200d")
        assert piece.count("🇫") == piece.count("🇷")


def test_cjk_text_splits_after_sentence_punctuation() -> None:
    sentence = "这是一个用于测试的中文句子。"
    text = sentence * 20
    pieces = split_message(text, 100)
    assert "".join(pieces) == text
    assert all(piece.endswith("。") for piece in pieces)
    assert all(len(piece) <= 100 for piece in pieces)


def test_cjk_without_punctuation_is_cut_between_characters() -> None:
    text = "漢字" * 150
    pieces = split_message(text, 100)
    assert pieces == ["漢字" * 50] * 3


def test_inline_code_is_not_cut() -> None:
    text = "word " * 15 + "`inline code with several spaces inside it` tail"
    pieces = split_message(text, 100)
    assert any(piece.startswith("`inline code with several spaces inside it`") for piece in pieces)


def test_inline_triple_backticks_are_not_a_fence() -> None:
    text = "```let x = 1``` is inline code\n" + "more text " * 20
    pieces = split_message(text, 60)
    assert not any(piece.startswith("```let x = 1```\n") and piece != pieces[0] for piece in pieces)
    _check_pieces(text, pieces, 60)


def test_reserve() -> None:
    text = " ".join(f"w{i}" for i in range(200))
    plain = split_message(text, 100)
    reserved = split_message(text, 100, reserve=12)
    assert max(map(len, plain)) > 88
    assert all(len(piece) <= 88 for piece in reserved)
    assert " ".join(reserved) == text


def test_last_piece_of_unfinished_code_block_is_closed() -> None:
    text = "Here:\n```python\ndef f():\n    return 1\n"
    assert split_message(text) == ["Here:\n```python\ndef f():\n    return 1\n```"]


def test_close_open_fence() -> None:
    assert close_open_fence("plain text") == "plain text"
    assert close_open_fence("a\n```py\nx = 1") == "a\n```py\nx = 1\n```"
    assert close_open_fence("a\n```py\nx = 1\n") == "a\n```py\nx = 1\n```"
    assert close_open_fence("~~~~\nx\n~~~") == "~~~~\nx\n~~~\n~~~~"
    assert close_open_fence("```\nx\n```") == "```\nx\n```"
    assert close_open_fence("```\nx\n```\n```js\ny") == "```\nx\n```\n```js\ny\n```"
    assert close_open_fence("`inline` and ```x``` only") == "`inline` and ```x``` only"


def test_streaming_keeps_earlier_pieces() -> None:
    code = "\n".join(f"    total += item_{i}" for i in range(40))
    text = ("An answer sentence goes here. " * 12 + "\n\n") * 2 + f"```python\n{code}\n```\nBye."
    sent: list[str] = []
    for size in [*range(0, len(text), 7), len(text)]:
        pieces = split_message(text[:size], 200, reserve=2)
        assert pieces[: len(sent) - 1] == sent[:-1]
        sent = pieces
    assert sent == split_message(text, 200, reserve=2)


# --- properties ----------------------------------------------------------------------------

WORDS = ["a", "the", "splitting", "message", "Discord", "stable", "x", "answer", "code", "ok"]
PUNCTUATION = ["", "", "", ".", ",", "!", "?", ":"]
SPECIAL = ["`inline code`", "`x`", "漢字テスト", "😀", "👍🏽", "https://example.com/a/b?c=d"]
LANGUAGES = ["", "python", "js", "c++", "rust"]
FENCES = ["```", "```", "~~~", "````"]


def _word(rnd: random.Random) -> str:
    roll = rnd.random()
    if roll < 0.02:
        return rnd.choice("abcxyz") * rnd.randint(20, 400)  # long word: hard cuts
    if roll < 0.08:
        return rnd.choice(SPECIAL)
    return rnd.choice(WORDS) + rnd.choice(PUNCTUATION)


def _prose(rnd: random.Random) -> str:
    return " ".join(_word(rnd) for _ in range(rnd.randint(1, 40)))


def _code_block(rnd: random.Random) -> str:
    lines = []
    for _ in range(rnd.randint(0, 30)):
        if rnd.random() < 0.1:
            lines.append("")
        else:
            indent = " " * rnd.choice([0, 0, 2, 4, 8])
            lines.append(indent + " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(1, 8))))
    fence = rnd.choice(FENCES)
    indent = rnd.choice(["", "", "", "   "])
    body = "".join(line + "\n" for line in lines)
    return f"{indent}{fence}{rnd.choice(LANGUAGES)}\n{body}{indent}{fence}"


def _markdown(seed: int, size: int) -> str:
    """A Markdown-ish text of about ``size`` characters; a smaller size gives a prefix-ish."""
    rnd = random.Random(seed)
    newline = "\r\n" if rnd.random() < 0.15 else "\n"
    parts: list[str] = []
    length = 0
    code = True
    while length < size:
        # Fences stand on lines of their own: only prose is joined to prose by a space.
        after_code, code = code, rnd.random() < 0.25
        spaces = [] if code or after_code else [" "] * 3
        separator = rnd.choice(["\n", "\n\n", "\n\n", "\n\n\n", "\n  \n", *spaces])
        part = _code_block(rnd) if code else _prose(rnd)
        parts.append(separator + part)
        length += len(separator) + len(part)
    return "".join(parts).replace("\n", newline)[:size]


@st.composite
def texts(draw: st.DrawFn) -> str:
    """Seeded texts up to 10,000 characters, or a few hypothesis-built parts (shrink well)."""
    if draw(st.booleans()):
        return _markdown(draw(st.integers(0, 2**32)), draw(st.integers(0, 10_000)))
    part = st.one_of(
        st.lists(st.sampled_from(WORDS + SPECIAL), min_size=1, max_size=12).map(" ".join),
        st.builds(
            lambda fence, language, lines: f"{fence}{language}\n{''.join(lines)}{fence}",
            st.sampled_from(FENCES),
            st.sampled_from(LANGUAGES),
            st.lists(st.sampled_from(["x = 1\n", "  y\n", "\n", "print(x)\n"]), max_size=12),
        ),
        st.sampled_from(["", "a" * 120, "漢字" * 40]),
    )
    separator = st.sampled_from(["\n", "\n\n", "\r\n"])  # a fence line ends at a newline
    pieces = draw(st.lists(st.tuples(part, separator), max_size=12))
    return "".join(text + sep for text, sep in pieces)


limits = st.integers(50, MESSAGE_LIMIT)
reserves = st.integers(0, 10)
SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@SETTINGS
@given(text=texts(), limit=limits, reserve=reserves)
def test_pieces_fit_are_balanced_and_keep_the_text(text: str, limit: int, reserve: int) -> None:
    pieces = split_message(text, limit, reserve=reserve)
    _check_pieces(text, pieces, limit - reserve)
    if fence_walk(text)[1] == 0:  # every fence line opens or closes: counting them works too
        assert all(len(fence_lines(piece)) % 2 == 0 for piece in pieces)


@SETTINGS
@given(
    text=texts(),
    limit=limits,
    reserve=reserves,
    cuts=st.lists(st.floats(0, 1), min_size=1, max_size=4),
)
def test_prefixes_are_stable(text: str, limit: int, reserve: int, cuts: list[float]) -> None:
    for cut in cuts:
        prefix = text[: int(len(text) * cut)]
        _check_stable(prefix, text, limit, reserve)
        _check_pieces(prefix, split_message(prefix, limit, reserve=reserve), limit - reserve)


@SETTINGS
@given(text=texts(), limit=st.integers(50, 300), data=st.data())
def test_growing_text_is_stable_near_the_cuts(text: str, limit: int, data: st.DataObject) -> None:
    # Small limits and prefixes ending around where pieces end: the hardest corners.
    pieces = split_message(text, limit)
    ends = {len(text) * k // 8 for k in range(9)}
    position = 0
    for piece in pieces:
        position = text.find(piece[:10], position) + len(piece)
        ends.update(range(max(0, position - 3), min(len(text), position + 5)))
    chosen = data.draw(st.lists(st.sampled_from(sorted(ends)), max_size=6))
    for end in chosen:
        _check_stable(text[:end], text, limit, 0)
