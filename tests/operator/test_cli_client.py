"""`outdial campaign|calls|queue|dnc …` against the real server, run in-process (typer's runner)
with OUTDIAL_API_URL and OUTDIAL_API_KEY."""

import asyncio
import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner, Result

from outdial.cli import app as cli
from tests.campaigns.conftest import open_window
from tests.conftest import TenantHandle
from tests.operator.conftest import Server


def run(server_url: str, key: str | None, *args: str) -> Result:
    env = {"OUTDIAL_API_URL": server_url, "OUTDIAL_API_KEY": key or "", "COLUMNS": "200"}
    return CliRunner().invoke(cli, list(args), env=env)


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


async def test_a_campaign_from_create_to_completed(
    server: Server, shared_tenant: TenantHandle, tmp_path: Path
) -> None:
    url, key = server.url, shared_tenant.key
    template = await server.campaign(shared_tenant, contacts=1, calls_per_second=1)
    async with server.client(key) as api:
        agent_id = (await api.get(f"/v1/campaigns/{template}")).json()["agent_id"]
        caller_id = (await api.get("/v1/numbers")).json()["data"][0]["phone_number"]
    settings = json.dumps(
        {"calls_per_second": 50, "max_concurrency": 20, "calling_window": open_window()}
    )

    def cli_run(*args: str) -> Result:
        return run(url, key, *args)

    created = await asyncio.to_thread(
        cli_run, "campaign", "create", "--name", "CLI", "--agent-id", agent_id,
        "--from", caller_id, "--settings", settings, "--json",
    )  # fmt: skip
    campaign_id = as_json(created)["campaign_id"]
    csv = tmp_path / "contacts.csv"
    rows = [f"+1555{i:07d},n{i}" for i in range(20)] + ["+15550000001,dup", "12,bad"]
    csv.write_text("phone_number,name\n" + "\n".join(rows))  # no final newline
    uploaded = as_json(
        await asyncio.to_thread(cli_run, "campaign", "upload", campaign_id, str(csv), "--json")
    )
    assert (uploaded["inserted_count"], uploaded["duplicate_count"]) == (20, 1)
    assert uploaded["invalid_count"] == 1
    shown = await asyncio.to_thread(cli_run, "campaign", "upload", campaign_id, str(csv))
    assert "22 rows" in shown.stderr and "inserted 0, duplicates 21, invalid 1" in shown.stdout

    started = as_json(await asyncio.to_thread(cli_run, "campaign", "start", campaign_id, "--json"))
    assert started["contacts_dialed"] == 20
    watched = await asyncio.to_thread(
        cli_run, "campaign", "watch", campaign_id, "--interval", "0.2", "--json"
    )
    assert watched.exit_code == 0, watched.output
    last = json.loads(watched.stdout.splitlines()[-1])
    assert last["status"] == "completed" and last["progress"] == 1.0
    status = await asyncio.to_thread(cli_run, "campaign", "status", campaign_id)
    assert "completed, 100% done" in status.stdout and "20" in status.stdout

    page = as_json(
        await asyncio.to_thread(
            cli_run, "calls", "list", "--campaign-id", campaign_id, "--limit", "5", "--json"
        )
    )
    assert len(page["data"]) == 5 and page["next_cursor"]
    lines = (
        await asyncio.to_thread(
            cli_run, "queue", "watch", "--count", "2", "--interval", "0.2", "--json"
        )
    ).stdout.splitlines()
    assert len(lines) == 2 and set(json.loads(lines[0])) == {
        "waiting",
        "active",
        "completed",
        "failed",
    }

    again = await asyncio.to_thread(cli_run, "campaign", "start", campaign_id)
    assert again.exit_code == 1
    assert (
        "it cannot start" in again.stderr and "(invalid_campaign_state, HTTP 409)" in again.stderr
    )
    assert "Traceback" not in again.output


async def test_errors_have_plain_messages_and_their_exit_codes(server: Server) -> None:
    unknown = await asyncio.to_thread(
        run, server.url, "sb_secret_nope", "campaign", "status", "cmp_x"
    )
    assert unknown.exit_code == 1 and "Unknown API key." in unknown.stderr
    no_key = await asyncio.to_thread(run, server.url, None, "calls", "list")
    assert no_key.exit_code == 2 and "OUTDIAL_API_KEY" in no_key.stderr
    down = await asyncio.to_thread(run, "http://127.0.0.1:9", "sb_secret_x", "calls", "list")
    assert down.exit_code == 3 and "cannot reach http://127.0.0.1:9" in down.stderr
    bad_settings = await asyncio.to_thread(
        run, server.url, "sb_secret_x", "campaign", "create", "--name", "n",
        "--agent-id", "a", "--from", "+1", "--settings", "{nope",
    )  # fmt: skip
    assert bad_settings.exit_code == 2 and "--settings is not JSON" in bad_settings.stderr
    for result in (unknown, no_key, down, bad_settings):
        assert "Traceback" not in result.output


# --- dnc import, against the real route --------------------------------------------------


async def test_dnc_import_streams_the_file_and_prints_the_counts(
    server: Server, tmp_path: Path
) -> None:
    tenant = await server.make_tenant()
    url, key = server.url, tenant.key
    csv = tmp_path / "dnc.csv"
    with csv.open("w") as f:
        f.write("phone_number\n")
        for i in range(60_000):  # ~800 kB: several chunks
            f.write(f"+1555{i:07d}\n")
        f.write("+15550000001\nnot-a-number\n")
    result = await asyncio.to_thread(run, url, key, "dnc", "import", str(csv))
    assert result.exit_code == 0, result.output
    assert "inserted 60,000, duplicate 1, invalid 1" in result.stdout
    assert "60,002 rows" in result.stderr  # the progress bar's row count
    async with server.client(key) as api:
        listed = await api.post("/v1/dnc/check", json={"phone_numbers": ["+15550059999"]})
    assert listed.status_code == 200, listed.text
    assert listed.json()["results"] == [{"phone_number": "+15550059999", "blocked": True}]
    # Again, for a script: everything is already listed.
    again = await asyncio.to_thread(run, url, key, "dnc", "import", str(csv), "--json")
    answer = json.loads(again.stdout)
    assert (answer["inserted_count"], answer["duplicate_count"]) == (0, 60_001)
    missing = await asyncio.to_thread(run, url, key, "dnc", "import", str(tmp_path / "nope.csv"))
    assert missing.exit_code == 2 and "no such file" in " ".join(missing.stderr.split())
