"""Talking to the outdial API from the terminal: the client, what a failure prints and the
exit code it ends with, and printing answers for people (tables) or scripts (`--json`)."""

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:  # httpx is imported when a command talks to the API, not by every `outdial`
    import httpx

DEFAULT_API_URL = "http://127.0.0.1:8000"

out = Console()
err = Console(stderr=True)


class Exit(IntEnum):
    """What each command's exit code means (the README lists them)."""

    OK = 0
    REFUSED = 1
    """The API answered 4xx: bad input, not found, wrong state, no credit …"""
    USAGE = 2
    """The command itself was wrong (typer's own code for bad options), or no API key."""
    UNAVAILABLE = 3
    """The API could not be reached, timed out, or answered 5xx."""


JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def fail(message: str, code: Exit) -> NoReturn:
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    raise typer.Exit(int(code))


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value))


class ApiError(Exception):
    def __init__(self, response: "httpx.Response") -> None:
        self.response = response
        super().__init__(response.status_code)


@contextmanager
def api_client(*, read_timeout: float | None = 60.0) -> Iterator["httpx.Client"]:
    """A client for `OUTDIAL_API_URL` with `OUTDIAL_API_KEY`; any failure inside the block
    ends the command with a plain message and its exit code, never a traceback."""
    import httpx

    key = os.environ.get("OUTDIAL_API_KEY", "").strip()
    if not key:
        fail("set OUTDIAL_API_KEY to a secret API key (sb_secret_…)", Exit.USAGE)
    base_url = os.environ.get("OUTDIAL_API_URL", "").strip() or DEFAULT_API_URL
    timeout = httpx.Timeout(10.0, read=read_timeout)
    try:
        with httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout
        ) as client:
            yield client
    except ApiError as exc:
        explain(exc.response)
    except httpx.TimeoutException:
        fail(f"{base_url} did not answer in time", Exit.UNAVAILABLE)
    except httpx.TransportError as exc:
        fail(f"cannot reach {base_url}: {exc}", Exit.UNAVAILABLE)
    except httpx.InvalidURL as exc:
        fail(f"OUTDIAL_API_URL is not a URL: {exc}", Exit.USAGE)


def checked(response: "httpx.Response") -> Any:
    """The answer's JSON, or ApiError for anything but a 2xx."""
    if not response.is_success:
        raise ApiError(response)
    return response.json() if response.content else None


def explain(response: "httpx.Response") -> NoReturn:
    """Print the contract's error (its message, its code, and each detail) and exit."""
    code = Exit.UNAVAILABLE if response.status_code >= 500 else Exit.REFUSED
    try:
        error = response.json()["error"]
        message, error_code, details = error["message"], error["code"], error.get("details")
    except (ValueError, KeyError, TypeError):
        fail(f"HTTP {response.status_code}: {response.text[:200] or response.reason_phrase}", code)
    err.print(
        f"[red]error:[/red] {escape(message)} [dim]({escape(error_code)}, HTTP "
        f"{response.status_code})[/dim]",
        highlight=False,
    )
    for line in _detail_lines(details):
        err.print(f"  - {escape(line)}", highlight=False)
    raise typer.Exit(int(code))


def _detail_lines(details: Any) -> list[str]:
    if isinstance(details, list):
        return [_one_detail(item) for item in details[:20]]
    if isinstance(details, dict):
        return [f"{key}: {value}" for key, value in details.items()]
    return []


def _one_detail(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    where = item.get("loc") or item.get("field") or item.get("index") or item.get("row")
    what = item.get("msg") or item.get("message") or item.get("reason") or item
    if isinstance(where, list):
        where = ".".join(str(part) for part in where)
    return f"{where}: {what}" if where is not None else str(what)
