"""What the two REST carriers (Plivo, Twilio) share: one HTTP client, the callback URLs that
name the attempt, and what a failed `place` tells reconciliation.

Their calls' progress reaches us as signed HTTP callbacks to the API process
(`telephony/routes.py`), which writes it to the database; the dialer hears nothing itself."""

import logging
from abc import abstractmethod
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import httpx

from outdial.telephony.base import (
    AttemptState,
    CallEvent,
    CarrierUnreachable,
    DialRequest,
    EventSink,
    TelephonyProvider,
)

log = logging.getLogger("outdial.telephony")

REMEMBERED = 100_000
"""Attempts whose carrier id (or failed placing) a process keeps in memory; older ones are
found through the id the database stored."""
HTTP_TIMEOUT_SECONDS = 10.0
ANSWER_HOLD_SECONDS = 300
"""How long an answered call is held open (silent). The contract has no media bridge to the
agent yet, so the answer document only keeps the line up until either side hangs up."""


def now() -> datetime:
    return datetime.now(UTC)


def callback_url(public_url: str, path: str, **query: str) -> str:
    """`public_url` + `path`, with `query` (the attempt id first) in the query string."""
    return f"{public_url.rstrip('/')}{path}?{urlencode(query)}"


class PlaceRefused(Exception):
    """The carrier answered the dial request with an error: it did not take the call."""


class RestCarrier(TelephonyProvider):
    """A carrier driven over its REST API, reporting through signed callbacks."""

    def __init__(
        self,
        events: EventSink,
        *,
        base_url: str,
        auth: tuple[str, str],
        public_url: str,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(events)
        self.public_url = public_url
        self.http = httpx.AsyncClient(
            base_url=base_url, auth=auth, timeout=HTTP_TIMEOUT_SECONDS, transport=transport
        )
        self._call_ids: OrderedDict[str, str] = OrderedDict()
        self._failed: OrderedDict[str, AttemptState] = OrderedDict()

    async def place(self, request: DialRequest) -> str:
        """Ask the carrier to dial; answers its id for the call. A request that never left
        (no connection: CarrierUnreachable) or that the carrier refused is remembered for
        `lookup`."""
        try:
            call_id = await self._create_call(request)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            self._remember(self._failed, request.attempt_id, AttemptState("never_received"))
            raise CarrierUnreachable(f"{self.name}: {self.http.base_url} {exc}") from exc
        except PlaceRefused:
            # Refused outright (bad number, caller ID or account): it will not go better on a
            # redial, so the attempt ends here instead of being queued again.
            refused = CallEvent(request.attempt_id, "ended", now(), "carrier_error")
            self._remember(self._failed, request.attempt_id, AttemptState("ended", end=refused))
            raise
        self._remember(self._call_ids, request.attempt_id, call_id)
        return call_id

    async def hangup(self, attempt_id: str, *, provider_call_id: str | None = None) -> None:
        """End the attempt's call if it is still up; failures are logged, not raised, so one
        call the carrier cannot end never stops the others from being hung up."""
        call_id = provider_call_id or self._call_ids.get(attempt_id)
        if call_id is None:
            return
        try:
            await self._end_call(call_id)
        except httpx.HTTPError as exc:
            log.warning("%s: hanging up %s (%s) failed: %s", self.name, attempt_id, call_id, exc)

    async def lookup(self, attempt_id: str, *, provider_call_id: str | None = None) -> AttemptState:
        """Ask the carrier about the attempt's call. Without an id for it, only a placing this
        process saw fail is known; otherwise its fate is unknown."""
        call_id = provider_call_id or self._call_ids.get(attempt_id)
        if call_id is None:
            return self._failed.get(attempt_id, AttemptState("unknown"))
        return await self._call_state(attempt_id, call_id)

    async def aclose(self) -> None:
        """Close the HTTP client. Live calls go on: their callbacks still reach the API."""
        await self.http.aclose()

    @staticmethod
    def _remember(memory: OrderedDict[str, Any], key: str, value: Any) -> None:
        memory[key] = value
        while len(memory) > REMEMBERED:
            memory.popitem(last=False)

    @staticmethod
    def _check(response: httpx.Response) -> None:
        """4xx from a dial request: refused. 5xx: raised as is (the carrier may have it)."""
        if response.is_client_error:
            raise PlaceRefused(f"{response.status_code}: {response.text[:300]}")
        response.raise_for_status()

    @abstractmethod
    async def _create_call(self, request: DialRequest) -> str: ...

    @abstractmethod
    async def _end_call(self, call_id: str) -> None: ...

    @abstractmethod
    async def _call_state(self, attempt_id: str, call_id: str) -> AttemptState: ...


def first(params: Mapping[str, str], *names: str) -> str:
    """The first of these callback parameters that is present and not empty, else ''."""
    return next((params[n] for n in names if params.get(n)), "")


def seconds(value: object) -> int:
    """A carrier's duration field as whole seconds (0 when absent or malformed)."""
    try:
        return max(0, int(float(str(value))))
    except ValueError:
        return 0
