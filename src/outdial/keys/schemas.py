from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from outdial.phones import E164
from outdial.validation import JsonObject, Label, ShortText

Channel = Literal["web", "phone"]
MAX_KEY_VARIABLES = 100


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["secret", "publishable"]
    label: Label | None = None
    agent_id: ShortText | None = None
    channels: list[Channel] | None = Field(default=None, min_length=1)
    default_from_number: E164 | None = None
    variables: JsonObject | None = Field(
        default=None,
        max_length=MAX_KEY_VARIABLES,
        description="Publishable keys: variables every call the key places carries; a request "
        "made with the key may add others but never override these (403).",
    )

    @model_validator(mode="after")
    def _publishable_needs_agent(self) -> "KeyCreate":
        if self.type == "publishable" and self.agent_id is None:
            raise ValueError("a publishable key must name its agent_id")
        if self.type == "secret" and (
            self.agent_id or self.channels or self.default_from_number or self.variables
        ):
            raise ValueError(
                "agent_id, channels, default_from_number and variables apply to publishable "
                "keys only"
            )
        return self


class KeyOut(BaseModel):
    id: str
    type: str
    label: str | None
    last4: str
    agent_id: str | None
    channels: list[str] | None
    default_from_number: str | None
    variables: dict[str, Any] | None
    created_at: datetime


class KeyCreated(KeyOut):
    key: str | None = Field(
        description="The plaintext key, shown only in this response (null on an idempotent "
        "replay: it is not stored)."
    )


class Me(BaseModel):
    tenant_id: str
    tenant_name: str
    key_id: str
    key_type: str
    max_concurrency: int
    calls_per_second: float
