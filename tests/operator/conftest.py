"""One real `outdial serve` process (SQLite, the simulated carrier at high speed) shared by the
operator tests: the browser, the CLI, /metrics and the log it writes."""

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from outdial.billing.service import to_micros
from outdial.db import create_engine, create_sessionmaker
from outdial.tenants import service as tenants
from tests.campaigns.conftest import open_window
from tests.conftest import TenantHandle

SECRETS = {
    "OUTDIAL_METRICS_TOKEN": "metrics-token-" + uuid.uuid4().hex,
    "OUTDIAL_TWILIO_AUTH_TOKEN": "twilio-token-" + uuid.uuid4().hex,
    "OUTDIAL_PLIVO_AUTH_TOKEN": "plivo-token-" + uuid.uuid4().hex,
    "OUTDIAL_SIP_PASSWORD": "sip-password-" + uuid.uuid4().hex,
    "OUTDIAL_LIVEKIT_API_SECRET": "livekit-secret-" + uuid.uuid4().hex,
}


_caller_ids = itertools.count()


@dataclass
class Server:
    url: str
    database_url: str
    log_path: Path
    process: subprocess.Popen[bytes]
    used_secrets: set[str] = field(default_factory=set)
    """Every secret the tests sent it (API keys, whsec secrets …), for the log check."""

    def client(self, key: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        if key:
            self.used_secrets.add(key)
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30)

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line]

    async def make_tenant(self, *, credits: float = 1000) -> TenantHandle:
        engine = create_engine(self.database_url)
        try:
            async with create_sessionmaker(engine)() as session, session.begin():
                tenant, key = await tenants.create_tenant(
                    session,
                    name=f"tenant-{uuid.uuid4().hex[:6]}",
                    max_concurrency=50,
                    calls_per_second=100,
                    credits_micros=to_micros(credits),
                )
        finally:
            await engine.dispose()
        self.used_secrets.add(key)
        return TenantHandle(id=tenant.id, key=key)

    async def campaign(
        self, tenant: TenantHandle, *, contacts: int, calls_per_second: float, name: str = "c"
    ) -> str:
        """A draft campaign with `contacts` numbers that all answer (…00 to …69)."""
        async with self.client(tenant.key) as api:
            numbers = (await api.get("/v1/numbers")).json()["data"]
            if numbers:
                caller_id = numbers[0]["phone_number"]
            else:  # a number belongs to one tenant: each gets its own
                caller_id = f"+1555999{next(_caller_ids):04d}"
                created = await api.post("/v1/numbers", json={"phone_number": caller_id})
                assert created.status_code == 201, created.text
            agent = await api.post("/v1/agents", json={"name": "Ava", "rate_per_minute": 0.1})
            assert agent.status_code == 201, agent.text
            if agent.json().get("stream_secret"):  # once agents have one (issue 9)
                self.used_secrets.add(agent.json()["stream_secret"])
            settings = {
                "calls_per_second": calls_per_second,
                "max_concurrency": 20,
                "calling_window": open_window(),  # whatever the time of day the tests run
            }
            body = {
                "name": name,
                "agent_id": agent.json()["id"],
                "call_from_number": caller_id,
                "settings": settings,
            }
            created = await api.post("/v1/campaigns", json=body)
            assert created.status_code == 201, created.text
            campaign_id = created.json()["campaign_id"]
            rows = [{"phone_number": f"+1555{i // 70:03d}{i % 70:04d}"} for i in range(contacts)]
            added = await api.post(f"/v1/campaigns/{campaign_id}/contacts", json={"contacts": rows})
            assert added.status_code == 201 and added.json()["inserted_count"] == contacts
        return campaign_id


def _wait_for_url(log_path: Path, process: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = re.search(r"Uvicorn running on (http://[0-9.:]+)", log_path.read_text())
        if found:
            return found.group(1)
        if process.poll() is not None:
            raise RuntimeError(f"outdial serve exited: {log_path.read_text()[-2000:]}")
        time.sleep(0.05)
    raise RuntimeError("outdial serve did not start in 30 s")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("served")
    database_url = f"sqlite:///{workdir / 'outdial.db'}"
    log_path = workdir / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTDIAL_")}
    env |= SECRETS | {
        "OUTDIAL_DATABASE_URL": database_url,
        "OUTDIAL_SIMULATED_SPEED": "200",
        "OUTDIAL_LOG_FORMAT": "json",
        "OUTDIAL_LOG_LEVEL": "DEBUG",
        "OUTDIAL_METRICS_QUEUE_MAX_AGE_SECONDS": "0.1",
    }
    script = Path(sys.executable).parent / "outdial"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(script), "serve", "--port", "0"],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    try:
        served = Server(_wait_for_url(log_path, process), database_url, log_path, process)
        served.used_secrets.update(SECRETS.values())
        yield served
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
async def shared_tenant(server: Server) -> TenantHandle:
    return await server.make_tenant()
