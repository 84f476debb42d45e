"""Keyset pagination: pages keyed by a unique, sortable id (routes take the page asked for
through `pagination_query.page_params`)."""

from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000

CURSOR_PATTERN = (
    r"^([a-z]+_[0-9a-f]{12,28}"  # an id (outdial.ids.new_id; a delivery's is shorter)
    r"|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"  # an agent's UUID
    r"|\+[1-9][0-9]{1,14})$"  # a number, in the lists of numbers
)
"""A cursor is the key of the last item of a page (what `next_cursor` gives): one of these."""


class Page(BaseModel, Generic[T]):
    data: list[T]
    next_cursor: str | None


class PageParams(BaseModel):
    limit: int = DEFAULT_LIMIT
    after: str | None = None


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
