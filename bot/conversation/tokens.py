"""Counting tokens without a tokenizer.

Exact tokenizers either download their tables at run time or pin one model family; the budget
only needs a safe upper bound. UTF-8 bytes / 3 over-counts English (about 4 characters a token)
and roughly matches CJK text (about one token a character), so a budget computed this way is never
exceeded in practice.
"""

from __future__ import annotations

# Each message costs a few tokens of framing (role, separators) in the chat format.
MESSAGE_OVERHEAD = 4
# What one attached image costs at most with detail "auto" on current vision models.
IMAGE_TOKENS = 800

# Context windows by model-name prefix; the longest matching prefix wins.
_CONTEXT_WINDOWS = {
    "gpt-3.5": 16_000,
    "gpt-4": 8_000,
    "gpt-4-turbo": 128_000,
    "gpt-4o": 128_000,
    "gpt-4.1": 1_000_000,
    "gpt-5": 400_000,
    "o1": 200_000,
    "o3": 200_000,
    "o4": 200_000,
}
_DEFAULT_WINDOW = 32_000

# The most a model writes in one answer, by model-name prefix.
_OUTPUT_LIMITS = {
    "gpt-3.5": 4_096,
    "gpt-4": 8_192,
    "gpt-4-turbo": 4_096,
    "gpt-4o": 16_384,
    "gpt-4.1": 32_768,
    "gpt-5": 128_000,
    "o1": 100_000,
    "o3": 100_000,
    "o4": 100_000,
}
_DEFAULT_OUTPUT_LIMIT = 4_096


# The most one attached image (at most 2048 px a side) may be billed at, by model-name prefix:
# a budget holds this much for it. gpt-4o-mini bills images at about 33 times gpt-4o's rate.
_IMAGE_TOKENS_AT_MOST = {
    "gpt-4o": 765,
    "gpt-4o-mini": 25_501,
    "gpt-4.1": 765,
    "gpt-4.1-mini": 2_488,
    "gpt-4.1-nano": 3_780,
    "gpt-5": 765,
    "gpt-5-mini": 1_844,
}
_IMAGE_TOKENS_UNKNOWN = 4_000


def image_tokens_at_most(model: str) -> int:
    return _by_prefix(_IMAGE_TOKENS_AT_MOST, model, _IMAGE_TOKENS_UNKNOWN)


def estimate_tokens(text: str, *, images: int = 0) -> int:
    return -(-len(text.encode()) // 3) + MESSAGE_OVERHEAD + images * IMAGE_TOKENS


def context_window(model: str) -> int:
    return _by_prefix(_CONTEXT_WINDOWS, model, _DEFAULT_WINDOW)


def output_limit(model: str) -> int:
    return _by_prefix(_OUTPUT_LIMITS, model, _DEFAULT_OUTPUT_LIMIT)


def _by_prefix(table: dict[str, int], model: str, default: int) -> int:
    name = model.lower().split(":", 1)[0]  # "gpt-4o-mini:free" is gpt-4o-mini
    matches = [prefix for prefix in table if name.startswith(prefix)]
    return table[max(matches, key=len)] if matches else default
