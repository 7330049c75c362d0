"""The history store for synchronous code (``Client.history``): the async store's own
methods, each run on an event loop this object keeps in a thread of its own, so there is one
implementation of every query and two ways to call it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from datetime import datetime
from typing import Any, TypeVar

from .config import HistoryConfig
from .query import Page, SearchQuery, StatsQuery, StatsRow
from .records import JobRecord
from .store import HistoryStore, MigrationResult, PruneResult, open_store

T = TypeVar("T")


class SyncHistory:
    """Search, read and count finished jobs from synchronous code.

    ::

        with Client.from_url(url, history_url="postgresql://...") as client:
            failed = SearchQuery(task="send_email", states=["failed"])
            for job in client.history.search(failed).items:
                print(job.id, job.error_message)
    """

    def __init__(self, url: str, config: HistoryConfig | None = None) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="conveyor-history", daemon=True)
        self._thread.start()
        try:
            self.store: HistoryStore = self._call(open_store(url, config))
        except BaseException:
            self._stop_loop()
            raise

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def get(self, queue: str, job_id: str) -> JobRecord | None:
        """The latest record of a job, with its attempts; None if there is none."""
        return self._call(self.store.get(queue, job_id))

    def search(self, query: SearchQuery) -> Page:
        """One page of matching records, newest first; ``page.next_cursor`` (as
        ``SearchQuery(cursor=...)``) asks for the next page."""
        return self._call(self.store.search(query))

    def stats(self, query: StatsQuery) -> list[StatsRow]:
        return self._call(self.store.stats(query))

    def prune(self, now: datetime | None = None) -> PruneResult:
        return self._call(self.store.prune(now))

    def migrate(self) -> MigrationResult:
        return self._call(self.store.migrate())

    def close(self) -> None:
        if self._thread.is_alive():
            try:
                self._call(self.store.close())
            finally:
                self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> SyncHistory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
