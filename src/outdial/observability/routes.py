"""`GET /metrics`: this process's metrics in the Prometheus text format."""

import hmac

from fastapi import Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from outdial.errors import Unauthorized
from outdial.observability.metrics import QueueGauge


def check_metrics_token(request: Request, token: str | None) -> None:
    """With `OUTDIAL_METRICS_TOKEN` set, a scrape must send it as a Bearer token."""
    if token is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip(), token):
        raise Unauthorized(
            "Send the metrics token: Authorization: Bearer <OUTDIAL_METRICS_TOKEN>.",
            code="invalid_metrics_token",
        )


async def metrics(request: Request) -> Response:
    """This process's metrics (Prometheus text format). A plain route (`app.add_route`), not an
    API route: it is guarded by its own token, not by API keys."""
    settings = request.app.state.settings
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    check_metrics_token(request, token)
    gauge: QueueGauge | None = getattr(request.app.state, "queue_gauge", None)
    if gauge is not None:
        gauge.refresh_if_stale()
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
