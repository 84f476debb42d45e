"""The `outdial` command: run the service and administer tenants."""

import asyncio
import json
import signal
from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from outdial.agents import demo as demo_agent
from outdial.client import calls as client_calls
from outdial.client import campaigns as client_campaigns
from outdial.client import dnc as client_dnc
from outdial.client import queue as client_queue
from outdial.config import get_settings
from outdial.errors import OutdialError
from outdial.observability.logs import configure_logging_from
from outdial.permissions.schemas import country_code
from outdial.process import freeze_startup_objects, run_process

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

# What a command needs beyond this is imported in the command: SQLAlchemy, Alembic, FastAPI
# and the services cost over a second of start-up, and `outdial --help` or an API client
# command needs none of them.

app = typer.Typer(help="outdial: outbound calling for AI voice agents.", no_args_is_help=True)
tenant_app = typer.Typer(help="Create and change tenants.", no_args_is_help=True)
credits_app = typer.Typer(help="Top up tenants' credits.", no_args_is_help=True)
app.add_typer(tenant_app, name="tenant")
app.add_typer(credits_app, name="credits")
# The API from the terminal (OUTDIAL_API_URL, OUTDIAL_API_KEY): outdial/client/.
app.add_typer(client_campaigns.app, name="campaign")
app.add_typer(client_calls.app, name="calls")
app.add_typer(client_queue.app, name="queue")
app.add_typer(client_dnc.app, name="dnc")
app.command("demo-agent")(demo_agent.command)

err = Console(stderr=True)
T = TypeVar("T")

Host = Annotated[str, typer.Option(help="Interface to listen on.")]
Port = Annotated[int, typer.Option(help="Port to listen on.")]

# Bounds that keep every value inside its column on every backend (INTEGER, BIGINT micros).
MAX_CREDITS = Decimal(1_000_000_000)
MAX_CONCURRENCY = 100_000
MAX_CALLS_PER_SECOND = 1_000.0
MAX_NAME_LENGTH = 200


def _credits(value: str, *, positive: bool = False) -> Decimal:
    try:
        amount = Decimal(value.strip())
    except InvalidOperation:
        raise typer.BadParameter(f"{value!r} is not a number") from None
    if not amount.is_finite() or amount < 0 or (positive and amount == 0):
        raise typer.BadParameter(
            "must be a positive number" if positive else "must be a non-negative number"
        )
    if amount > MAX_CREDITS:
        raise typer.BadParameter(f"must be at most {MAX_CREDITS:,} credits")
    if amount != amount.quantize(Decimal("0.000001")):
        raise typer.BadParameter("at most 6 decimal places (credits are kept in micro-credits)")
    return amount


def _name(value: str) -> str:
    name = value.strip()
    if not name or len(name) > MAX_NAME_LENGTH:
        raise typer.BadParameter(f"must be 1 to {MAX_NAME_LENGTH} characters")
    return name


def _in_transaction(work: Callable[["AsyncSession"], Awaitable[T]]) -> T:
    """Bring the schema up to date, then run `work` in one committed transaction."""
    from alembic.util import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    from outdial import migrate
    from outdial.db import create_engine, create_sessionmaker

    async def run() -> T:
        url = get_settings().database_url
        await migrate.upgrade(url)
        engine = create_engine(url)
        try:
            async with create_sessionmaker(engine)() as session, session.begin():
                return await work(session)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except OutdialError as exc:
        err.print(f"[red]error:[/red] {escape(exc.message)}", highlight=False)
        raise typer.Exit(1) from None
    except (SQLAlchemyError, CommandError, OSError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        err.print(f"[red]database error:[/red] {escape(first_line)}", highlight=False)
        raise typer.Exit(1) from None


def _print_json(value: object) -> None:
    typer.echo(json.dumps(value))


@app.command("migrate")
def migrate_command() -> None:
    """Bring the database schema up to date."""
    from outdial import migrate

    asyncio.run(migrate.upgrade(get_settings().database_url))
    err.print("schema is up to date")


@app.command()
def serve(
    host: Host = "127.0.0.1",
    port: Port = 8000,
    first_run_hint: Annotated[bool, typer.Option(hidden=True)] = False,
) -> None:
    """Serve the API (schema migrated first)."""
    from outdial import migrate

    configure_logging_from(get_settings())
    asyncio.run(migrate.upgrade(get_settings().database_url))
    if first_run_hint:
        _print_first_call_hint(host, port)
    from outdial.app import create_app
    from outdial.observability.server import run_api_server

    application = create_app(with_dialer=True)
    freeze_startup_objects()
    run_api_server(application, host=host, port=port)


@app.command()
def api(host: Host = "127.0.0.1", port: Port = 8000) -> None:
    """Serve the API only (run as many as you like)."""
    from outdial.app import create_app
    from outdial.observability.server import run_api_server

    configure_logging_from(get_settings())
    application = create_app()
    freeze_startup_objects()
    run_api_server(application, host=host, port=port)


@app.command()
def dialer(
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            help="Serve this dialer's /metrics on this port [env OUTDIAL_DIALER_METRICS_PORT].",
        ),
    ] = None,
) -> None:
    """Run a dialer: any number of them on PostgreSQL. Stops gracefully on SIGTERM/SIGINT."""
    from outdial.dialer.worker import run_dialer
    from outdial.observability.server import serve_metrics
    from outdial.wiring import plug_all

    plug_all()
    settings = get_settings()
    configure_logging_from(settings)
    port = metrics_port if metrics_port is not None else settings.dialer_metrics_port

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        metrics = (
            serve_metrics(settings, host=settings.dialer_metrics_host, port=port, stop=stop)
            if port is not None
            else stop.wait()
        )
        await asyncio.gather(run_dialer(settings, stop), metrics)

    freeze_startup_objects()
    run_process(main())


@app.command()
def webhooks() -> None:
    """Send webhooks: any number of delivery processes on PostgreSQL. Stops on SIGTERM/SIGINT."""
    from outdial.webhooks.worker import main

    main()


def _print_first_call_hint(host: str, port: int) -> None:
    base = f"http://{host}:{port}"
    err.print(
        f"""[bold]outdial[/bold] on {base} — API docs at {base}/docs

Make a first call, from another shell (the demo agent greets each call, then echoes it):
  .venv/bin/outdial demo-agent --port 8765 &
  KEY=$(.venv/bin/outdial tenant create --name demo --credits 100 | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])')
  curl -s -X POST {base}/v1/numbers -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' -d '{{"phone_number": "+15559990000"}}'
  AGENT=$(curl -s -X POST {base}/v1/agents -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' -d '{{"name": "demo", "rate_per_minute": 0.1, "stream_url": "ws://127.0.0.1:8765"}}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  curl -s -X POST {base}/v1/calls/batch -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' -d "{{\\"agent_id\\": \\"$AGENT\\", \\"to\\": [\\"+15559990001\\", \\"+15559990002\\"]}}"
The demo agent prints each call: what it heard from the callee and what it said back.
""",  # noqa: E501
        soft_wrap=True,  # the commands must stay copy-pastable, whatever the terminal's width
    )


@tenant_app.command("create")
def tenant_create(
    name: Annotated[str, typer.Option(help="The tenant's name.")],
    credits: Annotated[str, typer.Option(help="Starting credits.")] = "0",
    max_concurrency: Annotated[
        int | None,
        typer.Option(min=1, max=MAX_CONCURRENCY, help="Concurrent calls at most [default: 50]."),
    ] = None,
    calls_per_second: Annotated[
        float | None,
        typer.Option(
            min=0.01,
            max=MAX_CALLS_PER_SECOND,
            help="Dials per second per caller ID [default: 10].",
        ),
    ] = None,
) -> None:
    """Create a tenant; prints {"tenant_id", "api_key"} as JSON."""
    from outdial.billing import service as billing
    from outdial.tenants import service as tenants

    settings = get_settings()
    name = _name(name)
    amount = _credits(credits)

    async def work(session: "AsyncSession") -> tuple[str, str]:
        tenant, key = await tenants.create_tenant(
            session,
            name=name,
            max_concurrency=max_concurrency or settings.default_max_concurrency,
            calls_per_second=calls_per_second or settings.default_calls_per_second,
            credits_micros=billing.to_micros(amount),
        )
        return tenant.id, key

    tenant_id, key = _in_transaction(work)
    _print_json({"tenant_id": tenant_id, "api_key": key})


@tenant_app.command("update")
def tenant_update(
    tenant_id: Annotated[str, typer.Argument(help="The tenant to change.")],
    max_concurrency: Annotated[int | None, typer.Option(min=1, max=MAX_CONCURRENCY)] = None,
    calls_per_second: Annotated[
        float | None, typer.Option(min=0.01, max=MAX_CALLS_PER_SECOND)
    ] = None,
) -> None:
    """Change a tenant's limits; prints them as JSON."""
    from outdial.tenants import service as tenants

    async def work(session: "AsyncSession") -> dict[str, object]:
        tenant = await tenants.update_limits(
            session,
            tenant_id=tenant_id,
            max_concurrency=max_concurrency,
            calls_per_second=calls_per_second,
        )
        return {
            "tenant_id": tenant.id,
            "max_concurrency": tenant.max_concurrency,
            "calls_per_second": tenant.calls_per_second,
        }

    _print_json(_in_transaction(work))


def _country_codes(values: list[str] | None) -> list[str]:
    try:
        return [country_code(value) for value in values or ()]
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@tenant_app.command("dialing-permissions")
def tenant_dialing_permissions(
    tenant_id: Annotated[str, typer.Argument(help="The tenant.")],
    allow_country: Annotated[
        list[str] | None,
        typer.Option(
            help="Allow calls to this country (ISO 3166-1 alpha-2 code, or 001 for "
            "non-geographic numbers); repeatable.",
            callback=_country_codes,
        ),
    ] = None,
    disallow_country: Annotated[
        list[str] | None,
        typer.Option(
            help="Take a country off the allowed list (its caller IDs' countries stay "
            "allowed unless --no-caller-id-countries); repeatable.",
            callback=_country_codes,
        ),
    ] = None,
    caller_id_countries: Annotated[
        bool | None,
        typer.Option(
            "--caller-id-countries/--no-caller-id-countries",
            help="Whether the countries of the tenant's caller IDs are allowed [default: yes].",
            show_default=False,
        ),
    ] = None,
    allow_premium_rate: Annotated[
        bool | None,
        typer.Option(
            "--allow-premium-rate/--no-allow-premium-rate",
            help="Whether premium-rate and shared-cost numbers may be called [default: no].",
            show_default=False,
        ),
    ] = None,
    allow_high_risk: Annotated[
        bool | None,
        typer.Option(
            "--allow-high-risk/--no-allow-high-risk",
            help="Whether the documented high-risk (revenue-share) ranges may be called "
            "[default: no].",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Show or change where a tenant may call; prints its dialing permissions as JSON."""
    from outdial.permissions import service as permissions
    from outdial.permissions.routes import permissions_out

    changes = permissions.PermissionChanges(
        allow_countries=allow_country or [],
        disallow_countries=disallow_country or [],
        caller_id_countries=caller_id_countries,
        allow_premium_rate=allow_premium_rate,
        allow_high_risk=allow_high_risk,
    )

    async def work(session: "AsyncSession") -> dict[str, object]:
        changed = await permissions.change_dialing_permissions(
            session, tenant_id=tenant_id, changes=changes
        )
        return {"tenant_id": tenant_id, **permissions_out(changed).model_dump()}

    _print_json(_in_transaction(work))


@credits_app.command("add")
def credits_add(
    tenant_id: Annotated[str, typer.Argument(help="The tenant to top up.")],
    amount: Annotated[str, typer.Argument(help="Credits to add.")],
) -> None:
    """Add credits to a tenant; prints the new balance as JSON."""
    from outdial.billing import service as billing

    micros = billing.to_micros(_credits(amount, positive=True))

    async def work(session: "AsyncSession") -> int:
        return await billing.add_credits(session, tenant_id=tenant_id, amount_micros=micros)

    balance = _in_transaction(work)
    _print_json({"tenant_id": tenant_id, "balance": billing.from_micros(balance)})


if __name__ == "__main__":
    app()
