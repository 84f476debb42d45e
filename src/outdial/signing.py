"""Standard Webhooks signing (https://www.standardwebhooks.com), shared by webhook deliveries
and the signed upgrade of an agent's media stream, done with the spec's own `standardwebhooks`
package so that receivers verify with the same code."""

import base64
import secrets
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24


def new_secret() -> str:
    """A fresh signing secret, `whsec_` + base64 of 24 random bytes (the spec's format)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def signature_headers(
    secret: str, *, msg_id: str, payload: str, at: datetime | None = None
) -> dict[str, str]:
    """The three headers that sign `payload` as message `msg_id` sent at `at` (now)."""
    at = at or datetime.now(UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id=msg_id, timestamp=at, data=payload),
    }
