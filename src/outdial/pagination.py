from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel
from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000


class Page(BaseModel, Generic[T]):
    data: list[T]
    next_cursor: str | None


class PageParams(BaseModel):
    limit: int = DEFAULT_LIMIT
    after: str | None = None


def page_params(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    after: Annotated[str | None, Query(max_length=255)] = None,
) -> PageParams:
    return PageParams(limit=limit, after=after)


def paginate(stmt: Select[Any], key: InstrumentedAttribute[Any], params: PageParams) -> Select[Any]:
    """Keyset pagination on a unique, sortable key; fetch one extra row to know if more follow."""
    if params.after is not None:
        stmt = stmt.where(key > params.after)
    return stmt.order_by(key).limit(params.limit + 1)


def page_of(rows: list[Any], params: PageParams, cursor_of: Any) -> tuple[list[Any], str | None]:
    if len(rows) > params.limit:
        rows = rows[: params.limit]
        return rows, cursor_of(rows[-1])
    return rows, None
