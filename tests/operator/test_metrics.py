"""`/metrics` of a real `outdial serve` (and of a dialer's own listener), parsed with the
Prometheus client's own parser."""

import asyncio
import os
import re
import signal
import sys
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from outdial import migrate
from tests.conftest import TenantHandle
from tests.operator.conftest import SECRETS, Server

NAMED = {
    "outdial_dials": "counter",
    "outdial_queue_jobs": "gauge",
    "outdial_dial_latency_seconds": "histogram",
    "outdial_live_calls": "gauge",
    "outdial_media_streams": "gauge",
    "outdial_webhook_deliveries": "counter",
    "outdial_webhook_lag_seconds": "gauge",
    "outdial_http_requests": "counter",
    "outdial_http_request_duration_seconds": "histogram",
}
TOKEN = {"Authorization": f"Bearer {SECRETS['OUTDIAL_METRICS_TOKEN']}"}


async def scrape(api: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await api.get("/metrics", headers=TOKEN)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def test_metrics_need_the_token_when_one_is_set(server: Server) -> None:
    async with server.client() as api:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            response = await api.get("/metrics", headers=headers)
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "invalid_metrics_token"


async def test_every_named_metric_is_exposed_with_its_type(server: Server) -> None:
    async with server.client() as api:
        response = await api.get("/metrics", headers=TOKEN)
    families = {f.name: f.type for f in text_string_to_metric_families(response.text)}
    assert {name: families.get(name) for name in NAMED} == NAMED
    buckets = re.findall(r'outdial_dial_latency_seconds_bucket\{le="([^"]+)"', response.text)
    assert buckets[0] == "0.001" and "10.0" in buckets and buckets[-1] == "+Inf"


async def test_the_request_counter_moves_by_route_template(
    server: Server, shared_tenant: TenantHandle
) -> None:
    route = (("method", "GET"), ("route", "/v1/calls/{call_id}"), ("status", "404"))
    stats = (("method", "GET"), ("route", "/v1/calls/queue/stats"), ("status", "200"))
    async with server.client(shared_tenant.key) as api:
        before = await scrape(api)
        for _ in range(3):
            assert (await api.get("/v1/calls/queue/stats")).status_code == 200
        assert (await api.get("/v1/calls/call_nosuchcall123")).status_code == 404
        after = await scrape(api)
        text = (await api.get("/metrics", headers=TOKEN)).text
    key = "outdial_http_requests_total"
    assert after[(key, stats)] - before.get((key, stats), 0) == 3
    assert after[(key, route)] - before.get((key, route), 0) == 1
    timed = ("outdial_http_request_duration_seconds_count", stats[:2])
    assert after[timed] - before.get(timed, 0) == 3
    assert "call_nosuchcall123" not in text  # the raw path never becomes a label


async def test_the_queue_gauge_counts_jobs_from_the_database(server: Server) -> None:
    tenant = await server.make_tenant()
    campaign_id = await server.campaign(tenant, contacts=12, calls_per_second=50)
    async with server.client(tenant.key) as api:
        before = await scrape(api)
        assert (await api.post(f"/v1/campaigns/{campaign_id}/start")).status_code == 200
        await _until_completed(api, campaign_id)
        completed = ("outdial_queue_jobs", (("state", "completed"),))
        deadline = time.monotonic() + 10
        while (await scrape(api))[completed] < before[completed] + 12:
            assert time.monotonic() < deadline, "the gauge did not catch up"
            await asyncio.sleep(0.15)


async def test_dial_counters_move_as_calls_are_dialed(server: Server) -> None:
    tenant = await server.make_tenant()
    campaign_id = await server.campaign(tenant, contacts=10, calls_per_second=50)
    async with server.client(tenant.key) as api:
        before = await scrape(api)
        assert (await api.post(f"/v1/campaigns/{campaign_id}/start")).status_code == 200
        await _until_completed(api, campaign_id)
        after = await scrape(api)
    answered = ("outdial_dials_total", (("outcome", "answered"),))
    latency = ("outdial_dial_latency_seconds_count", ())
    assert after[answered] - before[answered] == 10
    assert after[latency] - before[latency] == 10
    assert after[("outdial_live_calls", ())] == 0


async def _until_completed(api: httpx.AsyncClient, campaign_id: str) -> None:
    deadline = time.monotonic() + 30
    while (await api.get(f"/v1/campaigns/{campaign_id}")).json()["status"] != "completed":
        assert time.monotonic() < deadline, "the campaign did not complete"
        await asyncio.sleep(0.1)


async def test_a_dialer_serves_its_own_metrics_and_stops_on_sigterm(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'dialer.db'}"
    await migrate.upgrade(database_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTDIAL_")}
    env |= {"OUTDIAL_DATABASE_URL": database_url, "OUTDIAL_LOG_FORMAT": "json"}
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "outdial"),
        "dialer",
        "--metrics-port",
        "0",
        cwd=tmp_path,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        url = None
        async with asyncio.timeout(30):
            while url is None:
                line = (await process.stderr.readline()).decode()
                assert line, "the dialer exited"
                found = re.search(r"Uvicorn running on (http://[0-9.:]+)", line)
                url = found.group(1) if found else None
        async with httpx.AsyncClient(base_url=url) as api:
            for _ in range(50):  # the first count runs in the background
                text = (await api.get("/metrics")).text
                families = {f.name: f for f in text_string_to_metric_families(text)}
                if families["outdial_queue_jobs"].samples:
                    break
                await asyncio.sleep(0.05)
        states = {s.labels["state"] for s in families["outdial_queue_jobs"].samples}
        assert states >= {"waiting", "active"}
        assert "outdial_live_calls" in families
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            assert await process.wait() == 0
