"""`outdial queue watch`."""

import time
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.table import Table

from outdial.client.api import JsonOption, api_client, checked, out, print_json

app = typer.Typer(help="Watch the dial queue.", no_args_is_help=True)

STATES = ("waiting", "active", "completed", "failed")


def queue_table(stats: dict[str, Any], previous: dict[str, Any] | None, seconds: float) -> Table:
    table = Table("", *STATES, title="dial queue", title_justify="left")
    table.add_row("jobs", *(f"{stats[s]:,}" for s in STATES))
    if previous is not None and seconds > 0:
        table.add_row(
            "per second", *(f"{(stats[s] - previous[s]) / seconds:+,.1f}" for s in STATES)
        )
    return table


@app.command()
def watch(
    interval: Annotated[float, typer.Option(min=0.2, help="Seconds between refreshes.")] = 1.0,
    count: Annotated[
        int | None, typer.Option(min=1, help="Stop after this many refreshes [default: never].")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Follow the tenant's dial queue live (jobs per state, and how fast each moves).
    With --json, one JSON line per refresh."""
    with api_client() as client:

        def fetch() -> Any:
            return checked(client.get("/v1/calls/queue/stats"))

        stats, previous, seen = fetch(), None, 1
        try:
            if as_json:
                print_json(stats)
                while count is None or seen < count:
                    time.sleep(interval)
                    stats, seen = fetch(), seen + 1
                    print_json(stats)
                return
            with Live(queue_table(stats, None, 0), console=out, auto_refresh=False) as live:
                while count is None or seen < count:
                    time.sleep(interval)
                    previous, stats, seen = stats, fetch(), seen + 1
                    live.update(queue_table(stats, previous, interval), refresh=True)
        except KeyboardInterrupt:
            return
