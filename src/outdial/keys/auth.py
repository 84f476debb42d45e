from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from outdial.db import get_session
from outdial.errors import Forbidden, Unauthorized
from outdial.keys.service import Principal, authenticate

_bearer = HTTPBearer(auto_error=False, description="A secret or publishable outdial API key.")

Session = Annotated[AsyncSession, Depends(get_session, scope="function")]


async def any_key(
    session: Session,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized(
            "Missing API key: send Authorization: Bearer <key>.", code="missing_api_key"
        )
    return await authenticate(session, token=credentials.credentials)


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
