from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from outdial.campaigns.schemas import MAX_LISTED_INVALID, InvalidRow
from outdial.phones import E164
from outdial.validation import Note, at_most

MAX_BATCH = 1000
MAX_CHECK = 500
MAX_REASON = 500


class DncCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phone_number: E164
    reason: Note | None = None


class DncBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phone_numbers: Annotated[
        list[E164], Field(min_length=1, max_length=MAX_BATCH), at_most(MAX_BATCH)
    ]
    reason: Note | None = None


class DncCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phone_numbers: Annotated[
        list[E164], Field(min_length=1, max_length=MAX_CHECK), at_most(MAX_CHECK)
    ]


class DncOut(BaseModel):
    phone_number: str
    reason: str | None
    source: str
    created_at: datetime


class DncBatchResult(BaseModel):
    added: int
    already_listed: int


class DncCheckItem(BaseModel):
    phone_number: str
    blocked: bool


class DncCheckResult(BaseModel):
    results: list[DncCheckItem]


class DncImported(BaseModel):
    inserted_count: int = Field(description="Numbers added to the do-not-call list.")
    duplicate_count: int = Field(
        description="Numbers already on the list, or given more than once in this file."
    )
    invalid_count: int = Field(description="Rows refused: not a number, or malformed.")
    invalid: list[InvalidRow] = Field(
        description=f"The first {MAX_LISTED_INVALID} rows refused (see invalid_count)."
    )
