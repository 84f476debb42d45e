"""Input the backends cannot both store is refused at the door, the same way on SQLite and
PostgreSQL: a NUL character or a lone surrogate in any string (issue 10, defect 2), and
free-form JSON nested too deep or too large to read back (defect 3). Validation answers list
every problem, every index, in one 400 (issue 13, defect 3)."""

import json
import typing
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from pydantic import AfterValidator, BaseModel, BeforeValidator, WrapValidator

from outdial.campaigns.schemas import ContactsUpload
from outdial.validation import MAX_AGENT_CONFIG_BYTES, MAX_JSON_BYTES, MAX_JSON_DEPTH, printable
from tests.conftest import TenantHandle, create_agent, error_code, register_number

NUL, SURROGATE = "\x00", "\ud800"
BAD = "§"  # where a case's body takes the unstorable character
N1, N2 = "+15559990001", "+15559990002"

# (method, path, body with BAD where the bad character goes, the location the 400 names)
STRING_CASES: list[tuple[str, str, dict[str, Any], list[Any]]] = [
    ("POST", "/v1/agents", {"name": "a§"}, ["name"]),
    ("POST", "/v1/agents", {"name": "a", "voicemail_message": "hi§"}, ["voicemail_message"]),
    (
        "POST",
        "/v1/agents",
        {"name": "a", "config": {"llm": {"prompt": ["ok", "§"]}}},
        ["config", "llm", "prompt", 1],
    ),
    ("POST", "/v1/agents", {"name": "a", "config": {"k§": 1}}, ["config", "k§"]),
    ("POST", "/v1/agents", {"name": "a", "post_call": {"summary": "§"}}, ["post_call", "summary"]),
    ("PUT", "/v1/agents/{agent_id}", {"name": "§"}, ["name"]),
    ("PUT", "/v1/agents/{agent_id}", {"config": {"a": [{"b": "§"}]}}, ["config", "a", 0, "b"]),
    ("POST", "/v1/numbers", {"phone_number": "+15559990005", "label": "§"}, ["label"]),
    ("PUT", "/v1/numbers/+15559990000", {"label": "§"}, ["label"]),
    ("POST", "/v1/keys", {"type": "secret", "label": "§"}, ["label"]),
    ("POST", "/v1/keys", {"type": "publishable", "agent_id": "§"}, ["agent_id"]),
    ("POST", "/v1/dnc", {"phone_number": "+15559990005", "reason": "§"}, ["reason"]),
    ("POST", "/v1/dnc/batch", {"phone_numbers": [N1], "reason": "§"}, ["reason"]),
    (
        "POST",
        "/v1/calls/batch",
        {"agent_id": "{agent_id}", "to": [N1], "batch_id": "§"},
        ["batch_id"],
    ),
    (
        "POST",
        "/v1/calls/batch",
        {"agent_id": "{agent_id}", "to": [N1], "metadata": {"§": "x"}},
        ["metadata", "§"],
    ),
    (
        "POST",
        "/v1/calls/batch",
        {"agent_id": "{agent_id}", "to": [N1], "variables": {"v": "§"}},
        ["variables", "v"],
    ),
    (
        "POST",
        "/v1/calls/batch",
        {"agent_id": "{agent_id}", "to": [N1], "post_call": {"p": {"q": "§"}}},
        ["post_call", "p", "q"],
    ),
    (
        "POST",
        "/v1/calls/batch",
        {"agent_id": "{agent_id}", "recipients": [{"to": N1}, {"to": N2, "metadata": {"m": "§"}}]},
        ["recipients", 1, "metadata", "m"],
    ),
    (
        "POST",
        "/v1/calls",
        {"agent_id": "{agent_id}", "participants": [{"transport": "webrtc", "identity": "b§"}]},
        ["participants", 0, "identity"],
    ),
    (
        "POST",
        "/v1/calls",
        {
            "agent_id": "{agent_id}",
            "participants": [{"transport": "webrtc", "identity": "bob", "name": "§"}],
        },
        ["participants", 0, "name"],
    ),
    (
        "POST",
        "/v1/calls",
        {
            "agent_id": "{agent_id}",
            "participants": [{"transport": "pstn", "identity": N1, "metadata": {"m": "§"}}],
        },
        ["participants", 0, "metadata", "m"],
    ),
    (
        "POST",
        "/v1/campaigns",
        {"agent_id": "{agent_id}", "name": "§", "call_from_number": "+15559990000"},
        ["name"],
    ),
    ("PUT", "/v1/campaigns/{campaign_id}", {"name": "§"}, ["name"]),
    ("PUT", "/v1/campaigns/{campaign_id}", {"settings": {"§": 1}}, ["settings", "§"]),
    (
        "POST",
        "/v1/campaigns/{campaign_id}/contacts",
        {"contacts": [{"phone_number": "15559990001", "variables": {"n": "§"}}]},
        ["contacts", 0, "variables", "n"],
    ),
    (
        "POST",
        "/v1/campaigns/{campaign_id}/contacts",
        {"contacts": [{"phone_number": "1555999000§"}]},
        ["contacts", 0, "phone_number"],
    ),
    (
        "POST",
        "/v1/campaigns/{campaign_id}/contacts",
        {"contacts": [{"phone_number": "15559990001", "timezone": "Europe/§"}]},
        ["contacts", 0, "timezone"],
    ),
]


async def send(
    client: httpx.AsyncClient, tenant: TenantHandle, method: str, url: str, body: Any
) -> httpx.Response:
    """`body` as JSON with ASCII escapes (`\\ud800`, `NaN`), which httpx itself refuses to
    encode."""
    return await client.request(
        method,
        url,
        content=json.dumps(body).encode(),
        headers={**tenant.headers, "Content-Type": "application/json"},
    )


def inject(value: Any, bad: str, ids: dict[str, str]) -> Any:
    """`value` with BAD replaced by `bad` in every key and string, and ids filled in."""
    if isinstance(value, dict):
        return {inject(k, bad, ids): inject(v, bad, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [inject(v, bad, ids) for v in value]
    if isinstance(value, str):
        return value.replace(BAD, bad).format(**ids) if "{" in value else value.replace(BAD, bad)
    return value


async def world(client: httpx.AsyncClient, tenant: TenantHandle) -> dict[str, str]:
    await register_number(client, tenant, "+15559990000")
    agent = await create_agent(client, tenant)
    campaign = await client.post(
        "/v1/campaigns",
        json={"agent_id": agent["id"], "name": "c", "call_from_number": "+15559990000"},
        headers=tenant.headers,
    )
    assert campaign.status_code == 201, campaign.text
    return {"agent_id": agent["id"], "campaign_id": campaign.json()["campaign_id"]}


async def everything(client: httpx.AsyncClient, tenant: TenantHandle) -> dict[str, Any]:
    """All the tenant's rows that the API shows."""
    seen = {}
    for path in ("/v1/agents", "/v1/keys", "/v1/numbers", "/v1/dnc", "/v1/calls", "/v1/campaigns"):
        response = await client.get(path, params={"limit": 1000}, headers=tenant.headers)
        assert response.status_code == 200, response.text
        seen[path] = response.json()
    return seen


@pytest.mark.parametrize(
    ("method", "path", "body", "loc"),
    STRING_CASES,
    ids=[f"{m} {p} {'.'.join(map(str, loc))}" for m, p, _, loc in STRING_CASES],
)
async def test_unstorable_text_is_400_naming_the_field(
    client, tenant, method: str, path: str, body: dict[str, Any], loc: list[Any]
) -> None:
    """On both backends: 400 naming the field (its path within a JSON value, with indexes),
    nothing stored, and the next request on the same database works."""
    ids = await world(client, tenant)
    before = await everything(client, tenant)
    for bad in (NUL, SURROGATE):
        response = await send(client, tenant, method, path.format(**ids), inject(body, bad, ids))
        assert response.status_code == 400, (bad, response.text)
        assert error_code(response) == "validation_error"
        details = response.json()["error"]["details"]
        expected = [printable(p.replace(BAD, bad)) if isinstance(p, str) else p for p in loc]
        named = [d for d in details if d["loc"] == expected]
        assert named, (expected, details)
        assert ("NUL" if bad == NUL else "surrogate") in named[0]["message"]
        assert await everything(client, tenant) == before


async def test_unstorable_text_in_the_path_or_query_is_400(client, tenant) -> None:
    await world(client, tenant)
    for url, loc in [
        ("/v1/calls/call_x%00", ["path"]),
        ("/v1/calls?batch_id=a%00b", ["query", "batch_id"]),
        ("/v1/calls?after=%00", ["query", "after"]),
        ("/v1/dnc/%2B1555%00", ["path"]),
    ]:
        response = await client.get(url, headers=tenant.headers)
        if url.startswith("/v1/dnc"):
            response = await client.delete(url, headers=tenant.headers)
        assert response.status_code == 400, (url, response.text)
        assert error_code(response) == "validation_error"
        assert [d["loc"] for d in response.json()["error"]["details"]] == [loc]
    assert (await client.get("/v1/auth/me", headers=tenant.headers)).status_code == 200


async def test_surrogate_sent_as_raw_bytes_is_400(client, tenant) -> None:
    """A surrogate can also arrive UTF-8-encoded (invalid UTF-8 that Python's JSON reader
    lets through), and bytes that are no UTF-8 at all are refused too."""
    for raw, code in (
        (b'{"name": "a\xed\xa0\x80"}', "validation_error"),
        (b'{"name": "a\xff"}', "invalid_body"),
    ):
        response = await client.post(
            "/v1/agents",
            content=raw,
            headers={**tenant.headers, "Content-Type": "application/json"},
        )
        assert response.status_code == 400, response.text
        assert error_code(response) == code, response.text
    assert (await client.get("/v1/agents", headers=tenant.headers)).json()["data"] == []


# Every request field that takes text or free-form JSON must check it: a field added later
# as a plain `str` or `dict` fails this test.


def _unguarded(annotation: Any, where: str, seen: set[type]) -> list[str]:
    """Where a request model takes text or JSON without a check (a plain `str`, `dict` or
    `Any`); types that parse their input themselves (numbers, UUIDs, URLs, literals) pass."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        inner, *meta = typing.get_args(annotation)
        if inner in (str, dict, Any) or typing.get_origin(inner) is dict:
            validators = AfterValidator | BeforeValidator | WrapValidator
            return [] if any(isinstance(m, validators) for m in meta) else [where]
        return _unguarded(inner, where, seen)
    if annotation in (str, dict, Any) or origin is dict:
        return [where]
    if origin is typing.Literal:
        return []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation in seen:
            return []
        seen.add(annotation)
        return [
            problem
            for name, field in annotation.model_fields.items()
            for problem in _unguarded(
                typing.Annotated[field.annotation, *field.metadata]
                if field.metadata
                else field.annotation,
                f"{annotation.__name__}.{name}",
                seen,
            )
        ]
    return [p for arg in typing.get_args(annotation) for p in _unguarded(arg, where, seen)]


def test_every_request_string_and_json_field_is_checked(app) -> None:
    try:
        from fastapi.routing import iter_route_contexts

        contexts = list(iter_route_contexts(app.routes))
    except ImportError:  # pragma: no cover - older FastAPI
        contexts = list(app.routes)
    models = {ContactsUpload}  # read from the raw body: CSV or JSON
    for context in contexts:
        route = getattr(context, "original_route", context)
        if isinstance(route, APIRoute) and route.body_field is not None:
            models.add(route.body_field.field_info.annotation)
    assert len(models) >= 10
    seen: set[type] = set()
    unguarded = [p for model in models for p in _unguarded(model, model.__name__, seen)]
    assert not unguarded, f"request fields taking any text or JSON: {unguarded}"


# --- free-form JSON: depth and size ---------------------------------------------------------


def nested(depth: int, size: int) -> dict[str, Any]:
    """A JSON object `depth` levels deep whose compact serialisation is `size` bytes."""

    def build(pad: str) -> dict[str, Any]:
        value: dict[str, Any] = {"pad": pad}
        for _ in range(depth - 1):
            value = {"a": value}
        return value

    bare = len(json.dumps(build(""), separators=(",", ":")))
    assert size >= bare
    built = build("x" * (size - bare))
    assert len(json.dumps(built, separators=(",", ":")).encode()) == size
    return built


def depth_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


async def test_json_too_deep_or_too_large_is_400(client, tenant, agent) -> None:
    """Depth and size are bounded at the door, on every free-form field, with the field and
    the path where the depth was exceeded named."""
    too_deep = nested(MAX_JSON_DEPTH + 1, 1000)
    too_large = nested(2, MAX_JSON_BYTES + 1)
    cases = [
        ("/v1/calls/batch", {"to": [N1], "metadata": too_deep}, ["metadata", *["a"] * 32]),
        ("/v1/calls/batch", {"to": [N1], "variables": too_large}, ["variables"]),
        ("/v1/calls/batch", {"to": [N1], "post_call": too_deep}, ["post_call", *["a"] * 32]),
        (
            "/v1/calls/batch",
            {"recipients": [{"to": N1}, {"to": N2, "metadata": too_large}]},
            ["recipients", 1, "metadata"],
        ),
        ("/v1/agents", {"name": "a", "config": nested(300, 2000)}, ["config", *["a"] * 32]),
        ("/v1/agents", {"name": "a", "config": nested(2, MAX_AGENT_CONFIG_BYTES + 1)}, ["config"]),
        ("/v1/agents", {"name": "a", "post_call": too_large}, ["post_call"]),
        (
            "/v1/calls/batch",
            {"to": [N1], "metadata": {"x": [1.5, float("nan")]}},
            ["metadata", "x", 1],
        ),
        ("/v1/agents", {"name": "a", "config": {"x": float("inf")}}, ["config", "x"]),
    ]
    for path, body, loc in cases:
        if path == "/v1/calls/batch":
            body = {"agent_id": agent["id"], **body}
        response = await send(client, tenant, "POST", path, body)
        assert response.status_code == 400, (path, loc, response.text)
        assert error_code(response) == "validation_error"
        assert [d["loc"] for d in response.json()["error"]["details"]] == [loc]
    assert (await client.get("/v1/calls", headers=tenant.headers)).json()["data"] == []
    assert len((await client.get("/v1/agents", headers=tenant.headers)).json()["data"]) == 1


async def test_deepest_and_largest_accepted_json_reads_back_everywhere(client, tenant, app) -> None:
    """What is accepted at the limits is read back whole by every GET that includes it."""
    await register_number(client, tenant, "+15559990000")
    deepest = nested(MAX_JSON_DEPTH, MAX_JSON_BYTES)
    config = nested(MAX_JSON_DEPTH, MAX_AGENT_CONFIG_BYTES)
    assert depth_of(deepest) == MAX_JSON_DEPTH
    agent = await create_agent(client, tenant, config=config, post_call=deepest)
    assert agent["config"] == config
    fetched = await client.get(f"/v1/agents/{agent['id']}", headers=tenant.headers)
    assert fetched.json()["config"] == config
    assert fetched.json()["post_call"] == deepest
    listed = await client.get("/v1/agents", headers=tenant.headers)
    assert listed.json()["data"][0]["config"] == config
    updated = await send(
        client, tenant, "PUT", f"/v1/agents/{agent['id']}", {"config": config, "post_call": {}}
    )
    assert updated.status_code == 200 and updated.json()["config"] == config

    other = {"b": nested(MAX_JSON_DEPTH - 1, MAX_JSON_BYTES - 6)}  # merged into post_call
    assert len(json.dumps(other, separators=(",", ":"))) == MAX_JSON_BYTES
    body = {
        "agent_id": agent["id"],
        "recipients": [{"to": N1, "metadata": deepest}, {"to": N2}],
        "metadata": deepest,
        "variables": deepest,
        "post_call": other,
    }
    queued = await send(client, tenant, "POST", "/v1/calls/batch", body)
    assert queued.status_code == 202, queued.text
    call_id = queued.json()["id"]
    call = (await client.get(f"/v1/calls/{call_id}", headers=tenant.headers)).json()
    assert call["metadata"] == deepest and call["variables"] == deepest
    assert call["post_call"] == other  # the agent's post_call was emptied above
    assert call["participants"][0]["metadata"] == deepest
    listed_calls = (await client.get("/v1/calls", headers=tenant.headers)).json()["data"]
    assert listed_calls[0]["metadata"] == deepest and listed_calls[0]["variables"] == deepest
    ended = await client.post(f"/v1/calls/{call_id}/end", headers=tenant.headers)
    assert ended.status_code == 200 and ended.json()["metadata"] == deepest

    campaign = await send(
        client,
        tenant,
        "POST",
        "/v1/campaigns",
        {"agent_id": agent["id"], "name": "c", "call_from_number": "+15559990000"},
    )
    campaign_id = campaign.json()["campaign_id"]
    contacts = {"contacts": [{"phone_number": "15559990003", "variables": deepest}]}
    added = await send(client, tenant, "POST", f"/v1/campaigns/{campaign_id}/contacts", contacts)
    assert added.status_code == 201 and added.json()["inserted_count"] == 1, added.text
    read = await client.get(f"/v1/campaigns/{campaign_id}/contacts", headers=tenant.headers)
    assert read.json()["data"][0]["variables"] == deepest


# --- every problem, every index, in one 400 -------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("/v1/calls/batch", {"to": []}, [(["agent_id"], "missing"), (["to"], "too_short")]),
        (
            "/v1/calls/batch",
            {"agent_id": "{agent_id}", "to": [N1, N1, "bad"]},
            [(["to", 2], "value_error"), (["to", 1], "duplicate_recipient")],
        ),
        (
            "/v1/calls/batch",
            {"to": [N1], "recipients": [{"to": N1}], "batch_id": ""},
            [(["agent_id"], "missing"), (["batch_id"], "string_too_short"), ([], "value_error")],
        ),
        (
            "/v1/calls/batch",
            {
                "agent_id": "{agent_id}",
                "recipients": [{"to": N1}, {}, {"to": N2, "from_number": "x"}, {"identity": N1}],
            },
            [
                (["recipients", 1], "missing"),
                (["recipients", 2, "from_number"], "value_error"),
                (["recipients", 3], "duplicate_recipient"),
            ],
        ),
        (
            "/v1/calls",
            {
                "participants": [
                    {"transport": "pstn", "identity": N1},
                    {"transport": "fax", "identity": N2},
                    {"transport": "pstn", "identity": " +15559990001 "},
                    {"transport": "webrtc", "identity": "bob", "from_number": N1},
                    {"transport": "webrtc", "identity": "bob"},
                ]
            },
            [
                (["participants", 1, "transport"], "literal_error"),
                (["participants", 3, "from_number"], "value_error"),
                (["participants", 2], "duplicate_recipient"),
            ],
        ),
    ],
    ids=["empty-to-no-agent", "duplicate-and-bad", "both-and-more", "recipients", "participants"],
)
async def test_every_problem_in_one_400(client, tenant, agent, app, path, body, expected) -> None:
    body = inject(body, "", {"agent_id": agent["id"]})
    response = await send(client, tenant, "POST", path, body)
    assert response.status_code == 400, response.text
    assert error_code(response) == "validation_error"  # duplicates and other problems
    details = response.json()["error"]["details"]
    assert [(d["loc"], d["type"]) for d in details] == expected
    for d in details:
        if d["type"] == "duplicate_recipient":
            assert {d["index"], d["first_index"]} <= set(range(len(body.get("to") or [1] * 9)))
            assert d["identity"] == N1
    assert (await client.get("/v1/calls", headers=tenant.headers)).json()["data"] == []
