"""Failures of the dialer's loops, logged once per failure window: a database that is down
fails every round of every loop, and a traceback per round would bury the one line that
matters (issue 10: 36 tracebacks in 10 s)."""

import logging
import time

REMIND_SECONDS = 60.0
"""While a loop keeps failing, it says so again this often."""


class FailureWindow:
    """One loop's record of consecutive failures: the first is logged (one line, with what
    went wrong), the rest are counted and summed up when the loop recovers, with a reminder
    every REMIND_SECONDS while it does not."""

    def __init__(self, log: logging.Logger, what: str) -> None:
        self.log = log
        self.what = what
        self._failures = 0
        self._since = 0.0
        self._reminded = 0.0

    def failed(self, exc: BaseException) -> None:
        """Record a failure of the loop's round (call it from the `except` block)."""
        now = time.monotonic()
        self._failures += 1
        if self._failures == 1:
            self._since = self._reminded = now
            self.log.error("%s failing: %s", self.what, _summary(exc))
            self.log.debug("%s failure", self.what, exc_info=exc)
        elif now - self._reminded >= REMIND_SECONDS:
            self._reminded = now
            self.log.error(
                "%s still failing (%d failures in %.0f s): %s",
                self.what,
                self._failures,
                now - self._since,
                _summary(exc),
            )

    def succeeded(self) -> None:
        """Record a round that worked: ends the failure window, if one was open."""
        if self._failures:
            self.log.warning(
                "%s recovered after %d failures in %.1f s",
                self.what,
                self._failures,
                time.monotonic() - self._since,
            )
            self._failures = 0


def _summary(exc: BaseException) -> str:
    # SQLAlchemy's messages carry the statement (never its parameters: engines hide them);
    # its first line names the error.
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
