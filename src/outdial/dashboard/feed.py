"""One live snapshot per tenant per second, shared by every open page of that tenant.

While anyone watches a tenant, one task reads its snapshot once a second (one statement, see
`service.snapshot_statement`), renders the page's fragments once, and wakes every viewer;
each viewer is sent only the fragments that changed since it last heard. With nobody
watching, nothing is read."""

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import partial

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from outdial.dashboard.service import Snapshot, load_snapshot

log = logging.getLogger("outdial.dashboard")

Fragments = dict[str, str]
Renderer = Callable[[Snapshot], Fragments]

HEARTBEAT_SECONDS = 15.0
MAX_DUTY = 10
"""A snapshot that takes t seconds is read again after at least MAX_DUTY * t."""


class KeyRevoked(Exception):
    """The viewer's key no longer exists: its stream ends."""


@dataclass(eq=False)
class _Feed:
    tenant_id: str
    viewers: dict[object, str] = field(default_factory=dict)  # viewer → its key's digest
    fragments: Fragments = field(default_factory=dict)
    live_keys: set[str] = field(default_factory=set)
    checked_keys: set[str] = field(default_factory=set)
    version: int = 0
    final_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    task: asyncio.Task[None] | None = None


class Feeds:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        render: Renderer,
        *,
        interval: float = 1.0,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._render = render
        self._interval = interval
        self._feeds: dict[str, _Feed] = {}
        self._closed = False
        self.snapshots_read = 0
        """How many snapshots have been read (bench/dashboard.py reports it)."""

    async def watch(self, tenant_id: str, key_digest: str) -> AsyncIterator[Fragments]:
        """The tenant's fragments: all of them first, then those that changed, as they change;
        an empty dict now and then as a heartbeat. Ends when the feeds close; raises
        KeyRevoked once the viewer's key is gone."""
        feed = self._feeds.get(tenant_id)
        if feed is None:
            feed = self._feeds[tenant_id] = _Feed(tenant_id)
            feed.task = asyncio.create_task(self._run(feed))
        viewer = object()
        feed.viewers[viewer] = key_digest
        sent: Fragments = {}
        seen = 0
        try:
            while not self._closed:
                async with feed.changed:
                    try:
                        await asyncio.wait_for(
                            feed.changed.wait_for(partial(self._news_since, feed, seen)),
                            HEARTBEAT_SECONDS,
                        )
                    except TimeoutError:
                        yield {}
                        continue
                if self._closed:
                    return
                seen = feed.version
                if key_digest in feed.checked_keys and key_digest not in feed.live_keys:
                    raise KeyRevoked
                changed = {k: v for k, v in feed.fragments.items() if sent.get(k) != v}
                sent.update(changed)
                if changed:
                    yield changed
        finally:
            del feed.viewers[viewer]

    def _news_since(self, feed: _Feed, seen: int) -> bool:
        return feed.version != seen or self._closed

    async def _run(self, feed: _Feed) -> None:
        loop = asyncio.get_running_loop()
        try:
            while feed.viewers and not self._closed:
                started = loop.time()
                await self._refresh(feed)
                took = loop.time() - started
                # A tenant so big that its snapshot is slow is read less often, so that
                # watching it never keeps the database busy more than 1/MAX_DUTY of the time.
                await asyncio.sleep(max(self._interval, took * MAX_DUTY) - took)
        finally:
            if self._feeds.get(feed.tenant_id) is feed:
                del self._feeds[feed.tenant_id]

    async def _refresh(self, feed: _Feed) -> None:
        try:
            digests = set(feed.viewers.values())
            async with self._sessionmaker() as session:
                snapshot = await load_snapshot(
                    session,
                    tenant_id=feed.tenant_id,
                    final_counts=feed.final_counts,
                    key_digests=digests,
                )
            self.snapshots_read += 1
            feed.fragments = self._render(snapshot)
            feed.live_keys, feed.checked_keys = snapshot.live_keys, digests
        except Exception:
            log.exception("reading the dashboard snapshot of %s failed", feed.tenant_id)
            return
        async with feed.changed:
            feed.version += 1
            feed.changed.notify_all()

    async def close(self) -> None:
        """End every stream (the server is stopping) and the tasks that feed them."""
        self._closed = True
        for feed in list(self._feeds.values()):
            async with feed.changed:
                feed.changed.notify_all()
        tasks = [f.task for f in self._feeds.values() if f.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
