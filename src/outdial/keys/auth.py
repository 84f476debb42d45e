from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from outdial.errors import Forbidden, Unauthorized
from outdial.keys.service import Principal, authenticate
from outdial.ratelimit.limiter import RateLimiter, client_address


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request; committed before the response is sent, rolled back on error."""
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    async with sessionmaker() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        else:
            await session.commit()


_bearer = HTTPBearer(auto_error=False, description="A secret or publishable outdial API key.")

Session = Annotated[AsyncSession, Depends(get_session, scope="function")]


async def any_key(
    request: Request,
    session: Session,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The request's key, once its rate limits allow the request (429 otherwise); an unknown
    key counts towards its address's lockout."""
    bearer = credentials is not None and credentials.scheme.lower() == "bearer"
    token = credentials.credentials if credentials is not None and bearer else None
    limiter: RateLimiter = request.app.state.rate_limiter
    address = client_address(request)
    await limiter.check(address=address, token=token)
    if token is None:
        raise Unauthorized(
            "Missing API key: send Authorization: Bearer <key>.", code="missing_api_key"
        )
    try:
        return await authenticate(session, token=token)
    except Unauthorized:
        await limiter.failed(address=address)
        raise


async def secret_key(
    request: Request, principal: Annotated[Principal, Depends(any_key)]
) -> Principal:
    if not principal.is_secret:
        raise Forbidden(
            f"A publishable key cannot use {request.method} {request.url.path}.",
            code="publishable_key_forbidden",
        )
    return principal


AnyKey = Annotated[Principal, Depends(any_key)]
SecretKey = Annotated[Principal, Depends(secret_key)]
