"""`outdial tenant dialing-permissions`: the operator's way to see and change where a tenant
may call, on both backends (in-process; tests/test_cli.py covers running the real script)."""

import asyncio
import json

import pytest
from typer.testing import CliRunner

from outdial import cli
from outdial.config import get_settings

ENV = {"COLUMNS": "200", "NO_COLOR": "1"}


@pytest.fixture
def operator(database_url: str, monkeypatch: pytest.MonkeyPatch):
    """Runs the command against the test database, off the event loop (it runs its own)."""
    monkeypatch.setenv("OUTDIAL_DATABASE_URL", database_url)
    get_settings.cache_clear()
    runner = CliRunner()

    async def run(*args: str):
        return await asyncio.to_thread(runner.invoke, cli.app, list(args), env=ENV)

    yield run
    get_settings.cache_clear()


async def test_show_and_change(operator, client, tenant, agent) -> None:
    shown = await operator("tenant", "dialing-permissions", tenant.id)
    assert shown.exit_code == 0, shown.stderr
    assert json.loads(shown.stdout) == {
        "tenant_id": tenant.id,
        "countries": [],
        "caller_id_countries": True,
        "allow_premium_rate": False,
        "allow_high_risk": False,
        "effective_countries": ["US"],
    }
    changed = await operator(
        "tenant", "dialing-permissions", tenant.id,
        "--allow-country", "gb", "--allow-country", "FR", "--allow-premium-rate",
    )  # fmt: skip
    assert changed.exit_code == 0, changed.stderr
    assert json.loads(changed.stdout)["effective_countries"] == ["FR", "GB", "US"]
    changed = await operator(
        "tenant", "dialing-permissions", tenant.id,
        "--disallow-country", "FR", "--no-caller-id-countries", "--allow-high-risk",
    )  # fmt: skip
    body = json.loads(changed.stdout)
    assert body["countries"] == ["GB"]
    assert body["effective_countries"] == ["GB"]
    assert (body["allow_premium_rate"], body["allow_high_risk"]) == (True, True)
    # The API sees what the operator set.
    api = await client.get("/v1/dialing-permissions", headers=tenant.headers)
    assert {**api.json(), "tenant_id": tenant.id} == body


async def test_bad_country_or_tenant_changes_nothing(operator, client, tenant) -> None:
    bad = await operator("tenant", "dialing-permissions", tenant.id, "--allow-country", "XX")
    assert bad.exit_code == 2
    assert "'XX' is not an ISO 3166-1 alpha-2 country code" in bad.stderr
    assert bad.stdout == ""
    unknown = await operator("tenant", "dialing-permissions", "ten_nope", "--allow-country", "GB")
    assert unknown.exit_code == 1
    assert unknown.stderr.strip() == "error: No tenant ten_nope."
    api = await client.get("/v1/dialing-permissions", headers=tenant.headers)
    assert api.json()["countries"] == []
