"""HISTORY_RETENTION_DAYS: turns older than that are deleted, once a day, a small batch at a
time so that answers' writes go on meanwhile (on SQLite a long write would hold them up).

Every process runs it: on a shared PostgreSQL two may pick the same batch, and the second then
finds those turns gone, which is harmless."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from bot.db.failures import DATABASE_ERRORS
from bot.db.repository import ConversationStore

log = logging.getLogger(__name__)

DAY = 24 * 3600.0


class Retention:
    def __init__(
        self,
        conversations: ConversationStore,
        days: int,
        clock: Callable[[], datetime],
        *,
        batch_size: int = 500,
        pause: float = 0.05,  # seconds between batches, for other writers
        first_after: float = 60.0,  # the first run, this long after start
        every: float = DAY,
        retry_after: float = 3600.0,  # after a failed run
    ) -> None:
        self._conversations = conversations
        self._days = days
        self._clock = clock
        self._batch_size = batch_size
        self._pause = pause
        self._first_after = first_after
        self._every = every
        self._retry_after = retry_after

    async def sweep(self) -> int:
        """Delete every turn older than the retention period; returns how many went."""
        before = self._clock() - timedelta(days=self._days)
        deleted = 0
        while True:
            batch = await self._conversations.delete_older(before, limit=self._batch_size)
            deleted += batch
            if batch < self._batch_size:
                break
            await asyncio.sleep(self._pause)
        log.info("Deleted %d turns older than %d days", deleted, self._days)
        return deleted

    async def run(self) -> None:
        """This process's background task: a sweep shortly after start, then one a day."""
        await asyncio.sleep(self._first_after)
        while True:
            try:
                await self.sweep()
                pause = self._every
            except DATABASE_ERRORS as exc:
                pause = self._retry_after
                log.warning(
                    "Deleting old turns failed (%s); trying again in %gs",
                    type(exc).__name__,
                    pause,
                )
            await asyncio.sleep(pause)
