"""Per-id asyncio locks, so concurrent requests in one replica never write the same adapter folder at once."""

from __future__ import annotations

import asyncio
import contextlib


class KeyedLocks:
    """asyncio locks by key, created on demand and dropped when unused; several keys are taken in sorted order."""

    def __init__(self):
        self._locks: dict[str, list] = {}  # key -> [lock, users]

    @contextlib.asynccontextmanager
    async def hold(self, keys: list[str]):
        keys = sorted(set(keys))
        entries = []
        for key in keys:
            entry = self._locks.setdefault(key, [asyncio.Lock(), 0])
            entry[1] += 1
            entries.append((key, entry))
        acquired = []
        try:
            for _, entry in entries:
                await entry[0].acquire()
                acquired.append(entry[0])
            yield
        finally:
            for lock in acquired:
                lock.release()
            for key, entry in entries:
                entry[1] -= 1
                if entry[1] == 0:
                    self._locks.pop(key, None)
