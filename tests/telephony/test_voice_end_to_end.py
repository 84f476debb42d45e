"""The whole voice path on the embedded default, both backends: a batch queued through the API
for an agent with a stream_url, dialed by a running dialer through the simulated carrier,
connected to a real WebSocket agent; a silent agent's call ends failed / agent_unavailable.

Expected to fail until the dialer builds its DialRequests with `stream=`
(`dialer/streams.stream_targets`), which the lead wires after the dialer refactor (issue 11):
strict, so it fails the suite the day the wiring works, to have this marker removed."""

from pathlib import Path
from typing import Any

from outdial.config import Settings
from tests.conftest import create_agent, register_number
from tests.dialer.conftest import dialer_running, wait_until
from tests.telephony.agent_peer import AgentCall, agent_peer, greet

TALKS = "+15551230001"  # answered
SILENT = "+15551230002"  # answered; its agent never speaks


async def talks_unless_silent(call: AgentCall) -> None:
    await call.wait_for_event("start")
    if call.start["start"]["customParameters"]["to"] != SILENT:
        await greet(call)


async def test_a_batch_reaches_its_agent_and_a_silent_agent_is_abandoned(
    client, app, database_url: str, tenant, tmp_path: Path
) -> None:
    await register_number(client, tenant, "+15559990000")
    async with agent_peer(talks_unless_silent) as agent:
        streaming = await create_agent(client, tenant, stream_url=agent.url)
        agent.secret = streaming["stream_secret"]
        queued = await client.post(
            "/v1/calls/batch",
            json={"agent_id": streaming["id"], "to": [TALKS, SILENT], "variables": {"n": 1}},
            headers=tenant.headers,
        )
        call_id = queued.json()["id"]
        settings = Settings(
            database_url=database_url,
            simulated_speed=4,  # rings 0.75 s, talks 2.75 s (01) and 3 s (02)
            simulated_cdr=str(tmp_path / "cdr.jsonl"),
            dialer_poll_seconds=0.02,
        )
        async with dialer_running(app, settings):
            first = await agent.next_call(within=3)
            second = await agent.next_call(within=3)

            async def ended() -> bool:
                found = await participants(client, tenant, call_id)
                return all(p["status"] in ("completed", "failed") for p in found.values())

            await wait_until(ended, within=10)
    found = await participants(client, tenant, call_id)
    assert (found[TALKS]["status"], found[TALKS]["end_reason"]) == ("completed", "answered")
    assert (found[SILENT]["status"], found[SILENT]["end_reason"]) == (
        "failed",
        "agent_unavailable",
    )
    streams = {s.start["start"]["customParameters"]["to"]: s for s in (first, second)}
    parameters = streams[TALKS].start["start"]["customParameters"]
    assert parameters["participant_id"] == found[TALKS]["id"]
    assert parameters["call_id"] == call_id and parameters["variables"] == '{"n":1}'
    assert streams[TALKS].signature_valid and streams[TALKS].events[-1] == "stop"


async def participants(client, tenant, call_id: str) -> dict[str, dict[str, Any]]:
    call = (await client.get(f"/v1/calls/{call_id}", headers=tenant.headers)).json()
    return {p["identity"]: p for p in call["participants"]}
