from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from outdial.phones import E164
from outdial.validation import Label


class NumberCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phone_number: E164
    label: Label | None = None
    is_default: bool = False


class NumberUpdate(BaseModel):
    """Fields left out keep their values."""

    model_config = ConfigDict(extra="forbid")

    label: Label | None = Field(default=None, description="null clears the label.")
    is_default: bool | None = Field(
        default=None,
        description="true makes this the tenant's default caller ID (the previous default "
        "stops being it); false on the default is a 409: make another number the default.",
    )


class NumberOut(BaseModel):
    phone_number: str
    label: str | None
    is_default: bool
    created_at: datetime
