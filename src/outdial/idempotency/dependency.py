"""The `Idempotency-Key` dependency of creating POSTs: a retry replays the first answer and
creates nothing."""

import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from outdial.db import utcnow
from outdial.error_handlers import Answered
from outdial.errors import Unprocessable, ValidationFailed
from outdial.idempotency.models import IdempotencyRecord
from outdial.keys.auth import AnyKey, Session
from outdial.validation import MAX_IDEMPOTENCY_KEY_LENGTH


def _fingerprint(method: str, path: str, body: bytes) -> str:
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        canonical = body
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + canonical).hexdigest()


def _replay(record: IdempotencyRecord, fingerprint: str) -> JSONResponse:
    if record.fingerprint != fingerprint:
        raise Unprocessable(
            "This Idempotency-Key was already used with a different request.",
            code="idempotency_key_reused",
        )
    assert record.status_code is not None
    return JSONResponse(
        record.response, record.status_code, headers={"Idempotent-Replayed": "true"}
    )


async def _committed_record(
    session: AsyncSession, tenant_id: str, key: str, ttl: timedelta
) -> IdempotencyRecord | None:
    record = await session.get(IdempotencyRecord, (tenant_id, key), populate_existing=True)
    if record is None:
        return None
    if record.created_at < utcnow() - ttl:
        await session.execute(
            delete(IdempotencyRecord).where(
                IdempotencyRecord.tenant_id == tenant_id, IdempotencyRecord.key == key
            )
        )
        await session.flush()
        return None
    return record


def key_of(request: Request) -> str | None:
    """The request's Idempotency-Key, if any (400 if it is empty or too long)."""
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 0 < len(key) <= MAX_IDEMPOTENCY_KEY_LENGTH:
        limit = MAX_IDEMPOTENCY_KEY_LENGTH
        raise ValidationFailed(f"Idempotency-Key must be 1 to {limit} characters.")
    return key


async def _claim_or_replay(
    request: Request,
    session: AsyncSession,
    *,
    tenant_id: str,
    key: str,
    fingerprint: Callable[[], Awaitable[str]],
    claim_with: str,
) -> IdempotencyRecord | JSONResponse:
    """Claim the key in this transaction (its record holding `claim_with` as fingerprint),
    or answer the replay of the request that claimed it first."""
    ttl = timedelta(seconds=request.app.state.settings.idempotency_ttl_seconds)
    existing = await _committed_record(session, tenant_id, key, ttl)
    if existing is not None:
        return _replay(existing, await fingerprint())
    record = IdempotencyRecord(tenant_id=tenant_id, key=key, fingerprint=claim_with)
    session.add(record)
    try:
        await session.flush()
    except IntegrityError:
        # A concurrent request with this key committed first: answer what it answered.
        await session.rollback()
        raced = await session.get(IdempotencyRecord, (tenant_id, key), populate_existing=True)
        assert raced is not None
        return _replay(raced, await fingerprint())
    return record


class Once:
    """A creating route's answer, given once per Idempotency-Key: what `answer` (or `keep`)
    is given is stored with the key in the creating transaction, and a retry replays it."""

    def __init__(self, record: IdempotencyRecord | None) -> None:
        self._record = record

    def keep(self, body: BaseModel, status_code: int) -> dict[str, Any]:
        """Store `body` as what a retry answers; its JSON."""
        data = body.model_dump(mode="json")
        if self._record is not None:
            self._record.status_code = status_code
            self._record.response = data
        return data

    def answer(self, body: BaseModel, status_code: int) -> JSONResponse:
        """Answer `body`, and a retry the same."""
        return JSONResponse(self.keep(body, status_code), status_code)


async def once(request: Request, session: Session, principal: AnyKey) -> Once:
    """Claim the request's Idempotency-Key (if it has one) in the route's transaction, before
    the route runs; a retry of a request that claimed it is answered what that one answered
    (`Answered`), and the route does not run. A concurrent retry waits for the first."""
    key = key_of(request)
    if key is None:
        return Once(None)
    body_fingerprint = _fingerprint(request.method, request.url.path, await request.body())

    async def fingerprint() -> str:
        return body_fingerprint

    record = await _claim_or_replay(
        request,
        session,
        tenant_id=principal.tenant_id,
        key=key,
        fingerprint=fingerprint,
        claim_with=body_fingerprint,
    )
    if isinstance(record, JSONResponse):
        raise Answered(record)
    return Once(record)


Idempotent = Annotated[Once, Depends(once)]
"""A creating POST's dependency: declare it after the route's key (`SecretKey`), so that a
key that may not use the route is refused before its Idempotency-Key is claimed."""


async def idempotent_stream(
    request: Request,
    session: AsyncSession,
    *,
    tenant_id: str,
    status_code: int,
    create: Callable[[AsyncIterator[bytes]], Awaitable[BaseModel]],
) -> JSONResponse:
    """`idempotent` for a body too large to hold (a streamed CSV): `create` reads the body as
    it arrives, and the fingerprint is hashed from the same chunks (raw bytes, as
    `_fingerprint` takes a body that is not JSON)."""
    key = key_of(request)
    if key is None:
        return JSONResponse((await create(request.stream())).model_dump(mode="json"), status_code)
    digest = hashlib.sha256(f"{request.method} {request.url.path}\n".encode())

    async def hashed() -> AsyncIterator[bytes]:
        async for chunk in request.stream():
            digest.update(chunk)
            yield chunk

    body_chunks = hashed()  # the body can be read once: by `create`, then whatever is left

    async def fingerprint() -> str:
        async for _ in body_chunks:
            pass
        return digest.hexdigest()

    # Claimed before the body is read; its fingerprint is set once it has been.
    record = await _claim_or_replay(
        request, session, tenant_id=tenant_id, key=key, fingerprint=fingerprint, claim_with=""
    )
    if isinstance(record, JSONResponse):
        return record
    body = (await create(body_chunks)).model_dump(mode="json")
    record.fingerprint = await fingerprint()  # whatever `create` left unread, if anything
    record.status_code = status_code
    record.response = body
    return JSONResponse(body, status_code)


__all__ = ["IdempotencyRecord", "Idempotent", "Once", "idempotent_stream"]
