"""The calls one dialer process has handed to its provider and not yet seen end."""

import asyncio
from collections.abc import Iterable

from outdial import observability as obs


class LiveCalls:
    """Attempt ids of this dialer's calls in the provider's hands (outdial_live_calls), and
    a way to wait for none to be left (graceful shutdown)."""

    def __init__(self) -> None:
        self._ids: set[str] = set()
        self._none_left = asyncio.Event()
        self._none_left.set()

    def __len__(self) -> int:
        return len(self._ids)

    def ids(self) -> list[str]:
        return list(self._ids)

    def started(self, attempt_id: str) -> None:
        self._ids.add(attempt_id)
        self._none_left.clear()
        obs.live_calls_changed(+1)

    def ended(self, attempt_ids: Iterable[str]) -> None:
        before = len(self._ids)
        self._ids.difference_update(attempt_ids)
        obs.live_calls_changed(len(self._ids) - before)
        if not self._ids:
            self._none_left.set()

    async def all_ended(self, within: float) -> bool:
        """Wait up to `within` seconds for every live call to end; True if they all did."""
        try:
            await asyncio.wait_for(self._none_left.wait(), within)
        except TimeoutError:
            return False
        return True
