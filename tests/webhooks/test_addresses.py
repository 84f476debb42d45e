"""Addresses are checked again at delivery, on the connection itself: the host is resolved
once, every address checked, and the connection made to a checked one."""

import asyncio
import ipaddress

import httpx
import pytest

from outdial.webhooks.addresses import refused
from tests.conftest import TenantHandle
from tests.webhooks.conftest import Emit, MakeWorker, Subscribe, event
from tests.webhooks.receiver import Receiver

pytestmark = pytest.mark.api_shape  # the delivery path's storage is tested on both backends


class Resolver:
    """A DNS the test controls: `answers` per host name, and every question asked."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        if host not in self.answers:
            raise OSError(f"{host}: no such host")
        return self.answers[host]


async def point_at(
    client: httpx.AsyncClient, tenant: TenantHandle, webhook_id: str, url: str
) -> None:
    response = await client.put(
        f"/v1/webhooks/{webhook_id}", json={"url": url}, headers=tenant.headers
    )
    assert response.status_code == 200, response.text


async def test_a_private_address_is_refused_at_delivery(
    client: httpx.AsyncClient,
    tenant,
    receiver: Receiver,
    subscribe: Subscribe,
    emit: Emit,
    make_worker: MakeWorker,
) -> None:
    """Accepted while the API allowed private URLs; the delivery process does not."""
    endpoint = await subscribe(tenant, receiver)
    await emit(event(tenant))
    [outcome] = await make_worker(webhook_allow_private_urls=False).deliver_due()
    assert outcome.status_code is None
    assert "127.0.0.1: not a public address, refused" in outcome.error
    assert receiver.received == []
    log = await client.get(f"/v1/webhooks/{endpoint['id']}/deliveries", headers=tenant.headers)
    [delivery] = log.json()["data"]
    assert delivery["status"] == "pending"  # retried later: the address may change back
    assert "refused" in delivery["attempts"][0]["error"]


async def test_dns_that_changes_to_a_private_address_is_refused(
    client: httpx.AsyncClient,
    tenant,
    receiver: Receiver,
    subscribe: Subscribe,
    emit: Emit,
    make_worker: MakeWorker,
) -> None:
    endpoint = await subscribe(tenant, receiver)
    port = receiver.url.split(":")[2].split("/")[0]
    await point_at(client, tenant, endpoint["id"], f"http://hooks.example:{port}/hooks")
    # A public address and a private one: any private answer refuses the host.
    dns = Resolver({"hooks.example": ["93.184.215.14", "127.0.0.1"]})
    await emit(event(tenant))
    [outcome] = await make_worker(webhook_allow_private_urls=False, resolver=dns).deliver_due()
    assert "resolves to 127.0.0.1" in outcome.error
    assert dns.asked == ["hooks.example"]
    assert receiver.received == []


async def test_the_connection_goes_to_the_address_resolved(
    client: httpx.AsyncClient,
    tenant,
    receiver: Receiver,
    subscribe: Subscribe,
    emit: Emit,
    make_worker: MakeWorker,
) -> None:
    """A host name only the worker's resolver knows is reached: the connection is made to
    the address it answered, not to a second lookup; a kept-alive connection asks no more."""
    endpoint = await subscribe(tenant, receiver)
    port = receiver.url.split(":")[2].split("/")[0]
    await point_at(client, tenant, endpoint["id"], f"http://hooks.example:{port}/hooks")
    dns = Resolver({"hooks.example": ["127.0.0.1"]})
    await emit(*(event(tenant, "call_1", step=i) for i in range(3)))  # one after the other
    worker = make_worker(resolver=dns)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        await receiver.wait_for(3)
    finally:
        stop.set()
        await running
    assert [e["data"]["step"] for e in receiver.events] == [0, 1, 2]
    assert all(r.verified for r in receiver.received)
    assert receiver.received[0].headers["host"] == f"hooks.example:{port}"
    assert dns.asked == ["hooks.example"]


async def test_a_host_that_stops_resolving_is_retried(
    client: httpx.AsyncClient,
    tenant,
    receiver: Receiver,
    subscribe: Subscribe,
    emit: Emit,
    make_worker: MakeWorker,
) -> None:
    endpoint = await subscribe(tenant, receiver)
    await point_at(client, tenant, endpoint["id"], "http://gone.example/hooks")
    await emit(event(tenant))
    [outcome] = await make_worker(resolver=Resolver({})).deliver_due()
    assert "gone.example does not resolve" in outcome.error


@pytest.mark.parametrize(
    ("address", "is_refused"),
    [
        ("93.184.215.14", False),
        ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", False),
        ("::ffff:93.184.215.14", False),  # IPv4-mapped public: judged as the IPv4 address
        ("127.0.0.1", True),
        ("10.0.0.1", True),
        ("169.254.1.1", True),
        ("0.0.0.0", True),
        ("239.1.1.1", True),
        ("240.0.0.1", True),
        ("::1", True),
        ("fe80::1", True),
        ("fd00::1", True),
        ("ff05::2", True),
        ("::ffff:192.168.0.1", True),
        ("64:ff9b::7f00:1", True),
        ("2002:c0a8:1::", True),
    ],
)
def test_which_addresses_are_refused(address: str, is_refused: bool) -> None:
    assert refused(ipaddress.ip_address(address)) is is_refused
