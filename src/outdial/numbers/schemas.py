from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from outdial.phones import E164


class NumberCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phone_number: E164
    label: str | None = Field(default=None, max_length=200)
    is_default: bool = False


class NumberOut(BaseModel):
    phone_number: str
    label: str | None
    is_default: bool
    created_at: datetime
