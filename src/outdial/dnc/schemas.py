from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from outdial.phones import E164

MAX_BATCH = 1000
MAX_CHECK = 500


class DncCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phone_number: E164
    reason: str | None = Field(default=None, max_length=500)


class DncBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phone_numbers: list[E164] = Field(min_length=1, max_length=MAX_BATCH)
    reason: str | None = Field(default=None, max_length=500)


class DncCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phone_numbers: list[E164] = Field(min_length=1, max_length=MAX_CHECK)


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
