"""What an answer's message shows before its first word, while the model thinks."""

from __future__ import annotations

# Shown this many lines of the model's reasoning summary at most, the newest: enough to follow
# along, and short enough that the status always fits in one message.
_SUMMARY_LINES = 4
_SUMMARY_LINE_CHARS = 300


def thinking_status(seconds: float, summary: str = "") -> str:
    """How long the model has been thinking, under the newest lines of its summary in small
    text."""
    lines = [line.strip() for line in summary.splitlines() if line.strip()]
    shown = [_shortened(line) for line in lines[-_SUMMARY_LINES:]]
    return "\n".join([*(f"-# {line}" for line in shown), f"💭 Thinking… {_elapsed(seconds)}"])


def _shortened(line: str) -> str:
    if len(line) <= _SUMMARY_LINE_CHARS:
        return line
    return "…" + line[-(_SUMMARY_LINE_CHARS - 1) :]


def _elapsed(seconds: float) -> str:
    whole = max(0, int(seconds))
    minutes, rest = divmod(whole, 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"
