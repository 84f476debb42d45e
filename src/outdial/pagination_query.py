"""The page a route is asked for, from its query string."""

import re
from typing import Annotated

from fastapi import Query
from fastapi.exceptions import RequestValidationError

from outdial.pagination import CURSOR_PATTERN, DEFAULT_LIMIT, MAX_LIMIT, PageParams

_CURSOR = re.compile(CURSOR_PATTERN)


def page_params(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    after: Annotated[
        str | None,
        Query(
            max_length=255,
            description="The previous page's `next_cursor`: the id (or number) of the last "
            "item seen.",
            json_schema_extra={"pattern": CURSOR_PATTERN},
        ),
    ] = None,
) -> PageParams:
    """The page asked for; a cursor that is not one of ours is a 400 (an empty page would
    hide the mistake)."""
    if after is not None and not _CURSOR.match(after):
        raise RequestValidationError(
            [
                {
                    "type": "invalid_cursor",
                    "loc": ("query", "after"),
                    "msg": "Not a cursor: pass the previous page's next_cursor (the id or "
                    "number of the last item seen), URL-encoded.",
                    "input": after,
                }
            ]
        )
    return PageParams(limit=limit, after=after)
