"""`Idempotency-Key` on creating POSTs: a retry replays the first answer and creates nothing."""

import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import Integer, String, delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from outdial.db import Base, JSONType, UTCDateTime, utcnow
from outdial.errors import Unprocessable, ValidationFailed

MAX_KEY_LENGTH = 255


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_keys"

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key: Mapped[str] = mapped_column(String(MAX_KEY_LENGTH), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int | None] = mapped_column(Integer)
    response: Mapped[Any] = mapped_column(JSONType, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


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


def _key_of(request: Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 0 < len(key) <= MAX_KEY_LENGTH:
        raise ValidationFailed(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters.")
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


async def idempotent(
    request: Request,
    session: AsyncSession,
    *,
    tenant_id: str,
    status_code: int,
    create: Callable[[], Awaitable[BaseModel]],
) -> JSONResponse:
    """Run `create` once per Idempotency-Key; the key is claimed in the creating transaction,
    so a concurrent retry waits for it and then replays its answer."""
    key = _key_of(request)
    if key is None:
        return JSONResponse((await create()).model_dump(mode="json"), status_code)
    body_fingerprint = _fingerprint(request.method, request.url.path, await request.body())

    async def fingerprint() -> str:
        return body_fingerprint

    record = await _claim_or_replay(
        request,
        session,
        tenant_id=tenant_id,
        key=key,
        fingerprint=fingerprint,
        claim_with=body_fingerprint,
    )
    if isinstance(record, JSONResponse):
        return record
    body = (await create()).model_dump(mode="json")
    record.status_code = status_code
    record.response = body
    return JSONResponse(body, status_code)


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
    key = _key_of(request)
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


__all__ = ["IdempotencyRecord", "idempotent", "idempotent_stream"]
