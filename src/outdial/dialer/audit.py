"""Each dial attempt's audit: the checks that allowed it, as they stood when the claim that
made it committed (API.md, "Calls": `GET /v1/calls/{id}/attempts`).

One JSON object per attempt, stored with it (`dial_attempts.checks`):

    {"dnc": {"listed": false, "checked_at": "…"},
     "caller_id": {"number": "+1…", "owned": true},
     "agent": {"exists": true},
     "credit": {"available": 12.5},
     "window": null | {"start", "end", "days",
                       "zones": [{"zone": "America/New_York", "local_time": "…-04:00"}]},
     "state_rule": null | {"state": "FL", "hours": [{"start", "end", "days"}],
                           "source": "Fla. Stat. § 501.616(6)(a)", "zones": [...]},
     "frequency": null | {"dials_in_24h": 1, "limit": 3, "source": "…"}}

`null` says the rule did not bind this dial (no window asked for; state rules off, or none for
the number's state; no cap without state rules). `dials_in_24h` counts the number's dials by
the tenant in the 24 hours before this one. Written in the claim's own transaction, so an
attempt never exists without its checks. Attempts alike share one object, which the bulk
insert serialises once (db._memoized): a claim of 500 dials writes a handful of distinct ones."""

from datetime import datetime
from typing import Any

from outdial.billing.service import from_micros
from outdial.calls.schemas import CallingWindow
from outdial.dialer.state_rules import FREQUENCY_CAP_SOURCE
from outdial.dialer.windows import Judged

Checks = dict[str, Any]


class ClaimAudit:
    """The checks of one claim's dials: what the claim read once (its instant, the credit)
    and, per dial, what was judged for it."""

    def __init__(self, *, now: datetime, available_micros: int) -> None:
        self.now = now
        self._dnc = {"listed": False, "checked_at": now.isoformat()}
        self._credit = {"available": from_micros(available_micros)}
        self._agent = {"exists": True}
        self._made: dict[tuple[Any, ...], Checks] = {}

    def checks(
        self,
        *,
        from_number: str,
        window: CallingWindow | None,
        judged: Judged | None,
        dials_in_24h: int | None,
        limit: int | None,
    ) -> Checks:
        """The checks that allowed one dial: from `from_number`, inside `window` as `judged`
        (None: no window nor state rule bound it), with the frequency cap's count and limit
        (None: no cap)."""
        window_key = (window.start, window.end, tuple(window.days)) if window else None
        key = (from_number, window_key, judged, dials_in_24h, limit)
        made = self._made.get(key)
        if made is None:
            made = self._made[key] = {
                "dnc": self._dnc,
                "caller_id": {"number": from_number, "owned": True},
                "agent": self._agent,
                "credit": self._credit,
                "window": self._window(window, judged),
                "state_rule": self._state_rule(judged),
                "frequency": None
                if limit is None
                else {"dials_in_24h": dials_in_24h, "limit": limit, "source": FREQUENCY_CAP_SOURCE},
            }
        return made

    def _window(self, window: CallingWindow | None, judged: Judged | None) -> Checks | None:
        if window is None or judged is None:
            return None
        return {
            "start": window.start,
            "end": window.end,
            "days": list(window.days),
            "zones": self._local_times(judged.window_zones),
        }

    def _state_rule(self, judged: Judged | None) -> Checks | None:
        if judged is None or judged.state_rule is None:
            return None
        rule = judged.state_rule
        return {
            "state": rule.state,
            "hours": [
                {"start": start, "end": end, "days": list(days)} for start, end, days in rule.hours
            ],
            "source": rule.source,
            "zones": self._local_times(judged.state_zones),
        }

    def _local_times(self, zones: Any) -> list[dict[str, str]]:
        return [
            {"zone": zone.key, "local_time": self.now.astimezone(zone).isoformat()}
            for zone in zones
        ]
