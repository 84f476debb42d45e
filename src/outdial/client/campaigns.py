"""`outdial campaign create|upload|start|pause|resume|status|watch`."""

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Column, Table

from outdial.client.api import Exit, JsonOption, api_client, checked, err, fail, out, print_json
from outdial.client.upload import stream_csv

app = typer.Typer(help="Create, fill, run and watch campaigns.", no_args_is_help=True)

CampaignId = Annotated[str, typer.Argument(help="The campaign's id (cmp_…).")]
CONTACT_STATUSES = ("pending", "dialed", "completed", "failed", "skipped_dnc")
FINAL_STATUSES = {"completed"}


@app.command()
def create(
    name: Annotated[str, typer.Option(help="The campaign's name.")],
    agent_id: Annotated[str, typer.Option(help="The agent that takes its calls.")],
    from_number: Annotated[str, typer.Option("--from", help="Caller ID (E.164) it dials from.")],
    settings: Annotated[
        str | None,
        typer.Option(help="Settings as JSON, e.g. '{\"max_concurrency\": 5}' (see the API)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Create a draft campaign; prints its id."""
    body: dict[str, Any] = {"name": name, "agent_id": agent_id, "call_from_number": from_number}
    if settings is not None:
        try:
            body["settings"] = json.loads(settings)
        except ValueError as exc:
            fail(f"--settings is not JSON: {exc}", Exit.USAGE)
    with api_client() as client:
        created = checked(client.post("/v1/campaigns", json=body))
    if as_json:
        print_json(created)
    else:
        out.print(created["campaign_id"], highlight=False)


@app.command()
def upload(
    campaign_id: CampaignId,
    file: Annotated[Path, typer.Argument(help="A CSV file with a phone_number column.")],
    idempotency_key: Annotated[
        str | None, typer.Option(help="Send this Idempotency-Key (a retry then adds nothing).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Upload contacts from a CSV file of any size (streamed, with a progress bar)."""
    answer = stream_csv(
        file, f"/v1/campaigns/{campaign_id}/contacts", idempotency_key=idempotency_key
    )
    if as_json:
        print_json(answer)
        return
    out.print(
        f"inserted {answer['inserted_count']:,}, duplicates {answer['duplicate_count']:,}, "
        f"invalid {answer.get('invalid_count', len(answer.get('invalid', []))):,}",
        highlight=False,
    )
    for row in answer.get("invalid", [])[:20]:
        err.print(f"  invalid: {row}", highlight=False)


def _transition(campaign_id: str, action: str, as_json: bool) -> None:
    with api_client() as client:
        answer = checked(client.post(f"/v1/campaigns/{campaign_id}/{action}"))
    if as_json:
        print_json(answer)
    elif action == "start":
        out.print(
            f"started: {answer['contacts_dialed']:,} contacts to dial, "
            f"{answer['contacts_skipped_dnc']:,} skipped (do-not-call)",
            highlight=False,
        )
    else:
        out.print(f"{campaign_id} {answer['status']}", highlight=False)


@app.command()
def start(campaign_id: CampaignId, as_json: JsonOption = False) -> None:
    """Start a draft campaign (its do-not-call contacts are skipped)."""
    _transition(campaign_id, "start", as_json)


@app.command()
def pause(campaign_id: CampaignId, as_json: JsonOption = False) -> None:
    """Pause a running campaign: no new dial starts once this returns."""
    _transition(campaign_id, "pause", as_json)


@app.command()
def resume(campaign_id: CampaignId, as_json: JsonOption = False) -> None:
    """Resume a paused campaign."""
    _transition(campaign_id, "resume", as_json)


def status_table(campaign: dict[str, Any]) -> Table:
    contacts = campaign["contacts"]
    table = Table(
        "contacts",
        Column("count", justify="right"),
        title=f"{campaign['name']} ({campaign['id']})\n{campaign['status']}, "
        f"{campaign['progress']:.0%} done",
        title_justify="left",
    )
    for name in (*CONTACT_STATUSES, "total"):
        table.add_row(name, f"{contacts[name]:,}")
    table.add_row("attempts", f"{campaign['attempts']:,}")
    table.add_row("answered", f"{campaign['answered']:,}")
    return table


def live_view(campaign: dict[str, Any]) -> Group:
    bar = ProgressBar(total=100, completed=campaign["progress"] * 100, width=60)
    return Group(status_table(campaign), bar)


@app.command()
def status(campaign_id: CampaignId, as_json: JsonOption = False) -> None:
    """A campaign's state, progress and contacts per status."""
    with api_client() as client:
        campaign = checked(client.get(f"/v1/campaigns/{campaign_id}"))
    if as_json:
        print_json(campaign)
    else:
        out.print(status_table(campaign))


@app.command()
def watch(
    campaign_id: CampaignId,
    interval: Annotated[float, typer.Option(min=0.2, help="Seconds between refreshes.")] = 1.0,
    as_json: JsonOption = False,
) -> None:
    """Follow a campaign live until it completes (Ctrl-C stops watching, not the campaign).
    With --json, one JSON line per refresh."""
    with api_client() as client:

        def fetch() -> Any:
            return checked(client.get(f"/v1/campaigns/{campaign_id}"))

        campaign = fetch()
        try:
            if as_json:
                while True:
                    print_json(campaign)
                    if campaign["status"] in FINAL_STATUSES:
                        return
                    time.sleep(interval)
                    campaign = fetch()
            with Live(live_view(campaign), console=out, auto_refresh=False) as live:
                while campaign["status"] not in FINAL_STATUSES:
                    time.sleep(interval)
                    campaign = fetch()
                    live.update(live_view(campaign), refresh=True)
        except KeyboardInterrupt:
            return
