"""Logs: JSON lines with the bound ids, and no secret in the log of a real run."""

import json
import logging
from collections.abc import Iterator

import pytest

from outdial.config import Settings
from outdial.observability import bind_log_context, dial_ended, log_context
from outdial.observability.logs import configure_logging, configured_secrets
from tests.conftest import TenantHandle
from tests.operator.conftest import SECRETS, Server


@pytest.fixture
def captured(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield capsys
    root.handlers[:] = handlers
    root.setLevel(level)


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_a_dial_outcome_is_one_json_line_with_its_ids(
    captured: pytest.CaptureFixture[str],
) -> None:
    configure_logging(log_format="json")
    with log_context(tenant_id="ten_1"):
        dial_ended(
            "busy",
            tenant_id="ten_1",
            call_id="call_1",
            participant_id="participant_1",
            attempt_id="att_1",
            to="+15550001190",
        )
        logging.getLogger("outdial.test").info("after")
    logging.getLogger("outdial.test").info("outside")
    first, after, outside = json_lines(captured.readouterr().err)
    assert first["message"] == "dial ended: busy" and first["level"] == "INFO"
    assert {k: first[k] for k in ("tenant_id", "call_id", "participant_id", "attempt_id")} == {
        "tenant_id": "ten_1",
        "call_id": "call_1",
        "participant_id": "participant_1",
        "attempt_id": "att_1",
    }
    assert first["outcome"] == "busy" and "time" in first
    assert after["tenant_id"] == "ten_1" and "call_id" not in after  # the block's ids only
    assert "tenant_id" not in outside


def test_text_format_and_unknown_fields(captured: pytest.CaptureFixture[str]) -> None:
    configure_logging(log_format="text")
    with log_context(call_id="call_9"):
        logging.getLogger("outdial.test").warning("hello")
    assert captured.readouterr().err.rstrip().endswith("outdial.test hello [call_id=call_9]")
    with pytest.raises(TypeError):
        bind_log_context(campaign="x")  # type: ignore[arg-type]


def test_every_configured_secret_is_masked(captured: pytest.CaptureFixture[str]) -> None:
    settings = Settings(
        database_url="sqlite://",
        plivo_auth_token="plivo-Token-1",  # type: ignore[arg-type]
        twilio_auth_token='tw"ilio\\token',  # type: ignore[arg-type]
        sip_password="sip-pass-1",  # type: ignore[arg-type]
        metrics_token="metrics-1",  # type: ignore[arg-type]
        livekit_api_secret="livekit-1",
    )
    secrets = configured_secrets(settings)
    assert set(secrets) >= {"plivo-Token-1", 'tw"ilio\\token', "sip-pass-1", "metrics-1"}
    configure_logging(log_format="json", secrets=secrets)
    log = logging.getLogger("outdial.test")
    log.info("tokens %s %s", secrets, "sb_secret_AbC-12_x sb_publishable_q whsec_ZmFrZQ==")
    log.info("extra", extra={"auth": "plivo-Token-1"})
    try:
        raise ValueError("sip-pass-1 refused")
    except ValueError:
        log.exception("failed")
    err = captured.readouterr().err
    for secret in [*secrets, "sb_secret_AbC", "sb_publishable_q", "whsec_ZmFrZQ"]:
        assert secret not in err and json.dumps(secret)[1:-1] not in err
    assert err.count("[redacted]") >= 9


async def test_the_log_of_a_run_holds_no_secret(
    server: Server, shared_tenant: TenantHandle
) -> None:
    """Every secret reaches the server (and, in query strings, its access log); none is
    written out."""
    async with server.client(shared_tenant.key) as api:
        assert (await api.get("/v1/calls")).status_code == 200
        assert (await api.get("/v1/auth/me")).status_code in (200, 404)
        for secret in [shared_tenant.key, *SECRETS.values()]:
            await api.get("/v1/calls", params={"leaked": secret})
        await api.get(
            "/metrics", headers={"Authorization": f"Bearer {SECRETS['OUTDIAL_METRICS_TOKEN']}"}
        )
        signed_in = await api.post("/dashboard/login", data={"key": shared_tenant.key})
        assert signed_in.status_code == 303
        await api.post("/dashboard/login", data={"key": "sb_secret_wrongwrongwrong"})
        page = await api.get("/dashboard")  # signed in above: the cookie is in the jar
        assert page.status_code == 200
    text = server.log_path.read_text()
    lines = server.log_lines()  # every line is JSON
    assert any("leaked=" in str(line.get("message")) for line in lines)  # the check can fail
    # the dashboard binds its viewer's tenant: its access log line carries it
    dashboard = [line for line in lines if '"GET /dashboard HTTP' in str(line.get("message"))]
    assert dashboard and dashboard[-1].get("tenant_id") == shared_tenant.id
    for secret in server.used_secrets:
        assert secret not in text, f"a secret was logged: {secret[:12]}…"
    assert "sb_secret_wrong" not in text
