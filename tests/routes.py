"""The application's routing table, walked route by route (helpers for tests that must cover
every route, so that a route added later without a test makes them fail)."""

import re

from fastapi import FastAPI
from fastapi.routing import APIRoute

PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    # carriers' callbacks: authenticated by the carrier's signature instead
    ("POST", "/v1/telephony/plivo/answer"),
    ("POST", "/v1/telephony/plivo/ring"),
    ("POST", "/v1/telephony/plivo/hangup"),
    ("POST", "/v1/telephony/twilio/answer"),
    ("POST", "/v1/telephony/twilio/status"),
    ("POST", "/v1/telephony/livekit/webhook"),
}
"""Routes that need no API key."""


def api_routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path) the application's API answers, hidden routes included."""
    try:
        from fastapi.routing import iter_route_contexts  # FastAPI ≥ 0.16x: lazy included routers
    except ImportError:  # pragma: no cover - older FastAPI flattens included routers itself
        contexts = list(app.routes)
    else:
        contexts = list(iter_route_contexts(app.routes))
    found = []
    for context in contexts:
        if not isinstance(getattr(context, "original_route", context), APIRoute):
            continue  # /docs, /openapi.json and the like
        for method in sorted(set(context.methods or ()) - {"HEAD", "OPTIONS"}):
            found.append((method, context.path))
    assert found, "no API route found: the routing table walk is broken"
    return found


def path_params(path: str) -> list[str]:
    return re.findall(r"\{([^}:]+)(?::[^}]*)?\}", path)


def fill(path: str, values: dict[str, str] | None = None, default: str = "x") -> str:
    """The path with each `{param}` replaced by `values[param]`, or `default`."""
    values = values or {}
    return re.sub(r"\{([^}:]+)(?::[^}]*)?\}", lambda m: values.get(m.group(1), default), path)
