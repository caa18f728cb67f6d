"""Spawn progress: the stages a spawn goes through, as JupyterHub's ``progress()`` events.

A spawn reports stages as it reaches them (some run in parallel); readers (the spawn page, the REST event stream,
possibly several at once) each get every event from the start. Percentages never go backwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

# The share of the bar reached when each stage is done. Pulling an image moves the bar between "image" and
# "pulled" by the bytes downloaded.
STAGE_PERCENT = {
    "image": 5,
    "pulled": 30,
    "volume": 40,
    "network": 45,
    "service-started": 55,
    "container-started": 70,
    "service-ready": 85,
    "server-starting": 90,
}


@dataclass(frozen=True)
class ProgressEvent:
    progress: int
    message: str

    def as_dict(self) -> dict[str, object]:
        return {"progress": self.progress, "message": self.message}


def pull_percent(downloaded: int, total: int) -> int:
    """Where the bar stands while an image pull has ``downloaded`` of ``total`` bytes."""
    low, high = STAGE_PERCENT["image"], STAGE_PERCENT["pulled"]
    if total <= 0:
        return low
    return low + int((high - low) * min(downloaded, total) / total)


class SpawnProgress:
    def __init__(self) -> None:
        self.events: list[ProgressEvent] = []
        self._changed = asyncio.Event()
        self._percent = 0

    def stage(self, stage: str, message: str) -> None:
        self.report(STAGE_PERCENT[stage], message)

    def report(self, percent: int, message: str) -> None:
        self._percent = max(self._percent, percent)
        self.events.append(ProgressEvent(self._percent, message))
        self._changed.set()

    async def follow(self) -> AsyncIterator[ProgressEvent]:
        """Every event so far, then each new one; runs until the reader stops (the hub stops reading when the
        spawn ends)."""
        seen = 0
        while True:
            while seen < len(self.events):
                yield self.events[seen]
                seen += 1
            self._changed.clear()
            await self._changed.wait()
