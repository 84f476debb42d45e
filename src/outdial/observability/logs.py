"""Logging: JSON lines (or text on a terminal) carrying the ids of what is being worked on,
with every secret outdial knows of masked before a line is written."""

import json
import logging
import re
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

from pydantic import SecretStr

from outdial.config import Settings

CONTEXT_FIELDS = ("tenant_id", "call_id", "participant_id", "attempt_id")
_context: ContextVar[dict[str, str]] = ContextVar("outdial_log_context", default={})  # noqa: B039 (never mutated)

REDACTED = "[redacted]"
# Secrets with a recognisable shape: API keys (secret and publishable) and Standard Webhooks
# secrets (webhook endpoints' and agents' stream secrets).
_SECRET_SHAPES = re.compile(r"\b(?:sb_secret_|sb_publishable_|whsec_)[A-Za-z0-9+/=_-]+")


def bind_log_context(**ids: str | None) -> None:
    """Add ids (`tenant_id`, `call_id`, `participant_id`, `attempt_id`) to every log line
    this task writes from now on, and to the tasks it starts. Ids passed as None are left
    as they were."""
    _context.set(_merged(ids))


@contextmanager
def log_context(**ids: str | None) -> Iterator[None]:
    """The same as `bind_log_context`, for the `with` block only."""
    token = _context.set(_merged(ids))
    try:
        yield
    finally:
        _context.reset(token)


def _merged(ids: dict[str, str | None]) -> dict[str, str]:
    unknown = set(ids) - set(CONTEXT_FIELDS)
    if unknown:
        raise TypeError(f"not a log context field: {', '.join(sorted(unknown))}")
    return {**_context.get(), **{k: v for k, v in ids.items() if v is not None}}


def current_log_context() -> dict[str, str]:
    return dict(_context.get())


class ContextFilter(logging.Filter):
    """Copies the bound ids onto each record (an id given in `extra=` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _context.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class Redactor:
    """Masks secrets in a finished log line: the shapes above and the exact values of the
    configured secrets (carrier tokens, the SIP password, the metrics token …)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values = {s for s in secrets if s and len(s) >= 4}
        # A value may also appear JSON-escaped inside a JSON line.
        escaped = {_json_escaped(s) for s in values}
        alternatives = sorted(values | escaped, key=len, reverse=True)
        self._values = re.compile("|".join(map(re.escape, alternatives))) if alternatives else None

    def __call__(self, line: str) -> str:
        line = _SECRET_SHAPES.sub(REDACTED, line)
        return self._values.sub(REDACTED, line) if self._values else line


def _json_escaped(value: str) -> str:
    return json.dumps(value)[1:-1]


_RECORD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "color_message"}
"""A record's own attributes; anything else on it came in `extra=` (or the bound ids)."""


class RedactingJsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO 8601, UTC), level, logger, message, the extra
    fields and ids, and the traceback if any. Written here rather than with a JSON-logging
    package: the dialer writes a line per dial, and this costs a fifth of what one did."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in record.__dict__.items():
            if name not in _RECORD_ATTRS:
                line[name] = value
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        return self.redact(json.dumps(line, default=str))


class RedactingTextFormatter(logging.Formatter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s %(message)s%(ids)s")
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        ids = " ".join(f"{k}={getattr(record, k)}" for k in CONTEXT_FIELDS if hasattr(record, k))
        record.ids = f" [{ids}]" if ids else ""
        return self.redact(super().format(record))


def configure_logging(
    *, log_format: str | None, level: str = "INFO", secrets: Iterable[str] = ()
) -> None:
    """Send every log line to stderr, as JSON lines unless `log_format` is `text` (by default
    JSON when stderr is not a terminal), with context ids added and secrets masked."""
    chosen = log_format or ("text" if sys.stderr.isatty() else "json")
    redact = Redactor(secrets)
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(
        RedactingJsonFormatter(redact) if chosen == "json" else RedactingTextFormatter(redact)
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # uvicorn's own loggers write through the root handler, not handlers of their own.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # httpx logs every request it sends at INFO: too much at a webhook worker's pace.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))


_SECRET_NAMES = ("secret", "token", "password")


def configured_secrets(settings: Settings) -> list[str]:
    """Every secret value in the configuration: each `SecretStr` setting, and any setting
    whose name says it is one (`livekit_api_secret`), so a new secret setting is masked too."""
    found = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, str) and any(word in name for word in _SECRET_NAMES):
            found.append(value)
    return found


def configure_logging_from(settings: Settings) -> None:
    """`configure_logging` as the settings say (`OUTDIAL_LOG_FORMAT`, `OUTDIAL_LOG_LEVEL`)."""
    configure_logging(
        log_format=settings.log_format,
        level=settings.log_level,
        secrets=configured_secrets(settings),
    )
