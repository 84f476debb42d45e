"""Metrics and logs. What other code calls is all here:

from outdial import observability as obs
obs.dial_placed(due_at=…, tenant_id=…, call_id=…, participant_id=…, attempt_id=…)
obs.dial_ended("busy", tenant_id=…, call_id=…, participant_id=…, attempt_id=…)
obs.media_streams_changed(+1) … obs.media_streams_changed(-1)
obs.provider_circuit_changed("sip", "closed", "open", "why")   # the dialer's circuit breaker
obs.record_webhook_delivery("delivered" | "failed"); obs.set_webhook_lag(seconds)
with obs.log_context(tenant_id=…, call_id=…): …   # or obs.bind_log_context(...)
"""

from outdial.observability.dials import dial_ended, dial_placed, provider_circuit_changed
from outdial.observability.logs import bind_log_context, log_context
from outdial.observability.metrics import (
    live_calls_changed,
    media_streams_changed,
    observe_dial_latency,
    record_dial_outcome,
    record_webhook_delivery,
    set_webhook_lag,
)

__all__ = [
    "bind_log_context",
    "dial_ended",
    "dial_placed",
    "live_calls_changed",
    "log_context",
    "media_streams_changed",
    "observe_dial_latency",
    "provider_circuit_changed",
    "record_dial_outcome",
    "record_webhook_delivery",
    "set_webhook_lag",
]
