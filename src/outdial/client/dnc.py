"""`outdial dnc import FILE`."""

from pathlib import Path
from typing import Annotated

import typer

from outdial.client.api import JsonOption, out, print_json
from outdial.client.upload import stream_csv

app = typer.Typer(help="The do-not-call list.", no_args_is_help=True)


@app.command("import")
def import_file(
    file: Annotated[Path, typer.Argument(help="A CSV file of numbers (any size: streamed).")],
    idempotency_key: Annotated[
        str | None, typer.Option(help="Send this Idempotency-Key (a retry then adds nothing).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Add every number in a CSV file to the do-not-call list, with a progress bar."""
    answer = stream_csv(file, "/v1/dnc/import", idempotency_key=idempotency_key)
    if as_json:
        print_json(answer)
        return
    # Print whichever counts the API answered (imported, duplicates, invalid …).
    counts = ", ".join(
        f"{name.removesuffix('_count')} {value:,}"
        for name, value in answer.items()
        if isinstance(value, int) and not isinstance(value, bool)
    )
    out.print(counts or str(answer), highlight=False)
