"""Long-term memory: turns embedded in the background, recalled into requests when they no
longer fit the history, and searched by /recall and /forget."""

from bot.memory._memory import MEMORY_OFF, Found, Memory, MemoryOptions

__all__ = ["MEMORY_OFF", "Found", "Memory", "MemoryOptions"]
