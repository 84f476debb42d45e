"""`outdial calls list`."""

from typing import Annotated, Any

import typer
from rich.table import Column, Table

from outdial.client.api import JsonOption, api_client, checked, out, print_json

app = typer.Typer(help="Look at calls.", no_args_is_help=True)


@app.command("list")
def list_calls(
    campaign_id: Annotated[str | None, typer.Option(help="Only this campaign's calls.")] = None,
    batch_id: Annotated[str | None, typer.Option(help="Only this batch's calls.")] = None,
    status: Annotated[str | None, typer.Option(help="Only calls in this status.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 50,
    after: Annotated[str | None, typer.Option(help="The cursor a previous page gave.")] = None,
    as_json: JsonOption = False,
) -> None:
    """List calls, oldest first (one page; --after with the printed cursor for the next)."""
    params: dict[str, Any] = {"limit": limit}
    for name, value in (
        ("campaign_id", campaign_id),
        ("batch_id", batch_id),
        ("status", status),
        ("after", after),
    ):
        if value is not None:
            params[name] = value
    with api_client() as client:
        page = checked(client.get("/v1/calls", params=params))
    if as_json:
        print_json(page)
        return
    table = Table(
        Column("id", no_wrap=True),
        "status",
        Column("batch / campaign", overflow="fold"),
        Column("created", overflow="fold"),
    )
    for call in page["data"]:
        table.add_row(
            call["id"],
            call["status"],
            call.get("campaign_id") or call.get("batch_id") or "",
            str(call.get("created_at", ""))[:19].replace("T", " "),
        )
    out.print(table)
    if page.get("next_cursor"):
        out.print(f"more: --after {page['next_cursor']}", highlight=False)
