"""The two calls the dialer makes per attempt, each moving the metrics and writing the log
line that go with it, so that wiring them in is one line at each point; and the one it makes
when its circuit breaker for a provider changes state."""

import logging
from datetime import datetime

from outdial.db import utcnow
from outdial.observability.logs import log_context
from outdial.observability.metrics import (
    observe_dial_latency,
    record_dial_outcome,
    set_provider_circuit_open,
)

log = logging.getLogger("outdial.dials")


def dial_placed(
    *, due_at: datetime, tenant_id: str, call_id: str, participant_id: str, attempt_id: str
) -> None:
    """The provider has just taken this attempt: observe how late it is against `due_at`, when
    its job was due (outdial_dial_latency_seconds). Calls in the provider's hands are counted
    by the dialer's own record of them (outdial_live_calls)."""
    late = (utcnow() - due_at).total_seconds()
    observe_dial_latency(late)
    with log_context(
        tenant_id=tenant_id, call_id=call_id, participant_id=participant_id, attempt_id=attempt_id
    ):
        log.debug("dial placed", extra={"late_seconds": round(late, 4)})


def dial_ended(
    outcome: str,
    *,
    tenant_id: str,
    call_id: str,
    participant_id: str,
    attempt_id: str | None,
    to: str | None = None,
    talk_seconds: int | None = None,
) -> None:
    """An attempt is settled (or a dial was stopped before it, by the DNC re-check): count its
    outcome (outdial_dials_total) and write its one INFO line."""
    record_dial_outcome(outcome)
    if log.isEnabledFor(logging.INFO):
        log.info(
            "dial ended: %s",
            outcome,
            extra={
                "tenant_id": tenant_id,
                "call_id": call_id,
                "participant_id": participant_id,
                "attempt_id": attempt_id,
                "outcome": outcome,
                "to": to,
                "talk_seconds": talk_seconds,
            },
        )


def provider_circuit_changed(provider: str, previous: str, state: str, why: str) -> None:
    """The dialer's circuit breaker for `provider` went from `previous` to `state` (closed,
    open, half_open): outdial_provider_circuit_open follows it, and a WARNING line says when
    it opens and an INFO line when it closes again; the probes in between log at DEBUG only,
    so an outage of any length writes two lines, never one per dial."""
    set_provider_circuit_open(provider, state != "closed")
    fields = {"provider": provider, "circuit": state, "reason": why}
    if previous == "closed":
        log.warning(
            "telephony provider %s is down: no new dials until it takes one again (%s)",
            provider,
            why,
            extra=fields,
        )
    elif state == "closed":
        log.info("telephony provider %s is up again: dialing resumes", provider, extra=fields)
    else:
        log.debug("telephony provider %s circuit %s: %s", provider, state, why, extra=fields)
