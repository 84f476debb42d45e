from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from outdial.signing import new_secret, signature_headers


def test_headers_verify_with_the_standard_webhooks_package() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    headers = signature_headers(secret, msg_id="evt_1", payload='{"a": 1}')
    assert Webhook(secret).verify('{"a": 1}', headers) == {"a": 1}


def test_a_tampered_payload_or_another_secret_fails() -> None:
    secret = new_secret()
    headers = signature_headers(secret, msg_id="evt_1", payload="x")
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify("y", headers, json_parse=False)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify("x", headers, json_parse=False)


def test_the_timestamp_is_the_one_signed() -> None:
    secret = new_secret()
    old = datetime.now(UTC) - timedelta(minutes=10)
    headers = signature_headers(secret, msg_id="evt_1", payload="x", at=old)
    assert headers["webhook-timestamp"] == str(int(old.timestamp()))
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify("x", headers, json_parse=False)
