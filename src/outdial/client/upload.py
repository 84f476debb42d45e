"""Sending a CSV file of any size as a streamed `text/csv` body, with a progress bar that counts
bytes and rows as they leave (the file is read a chunk at a time, never whole)."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from outdial.client.api import Exit, api_client, checked, err, fail

CHUNK_BYTES = 256 * 1024


def _chunks(path: Path, progress: Progress, task: TaskID) -> Iterator[bytes]:
    rows = -1  # the header is not a row
    last = b"\n"
    with path.open("rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            rows += chunk.count(b"\n")
            last = chunk[-1:]
            progress.update(task, advance=len(chunk), rows=max(rows, 0))
            yield chunk
    if last != b"\n":  # a last row without its newline
        progress.update(task, rows=rows + 1)


def stream_csv(
    path: Path, url: str, *, idempotency_key: str | None = None, quiet: bool = False
) -> Any:
    """POST the file to `url` as text/csv, showing bytes and rows sent; the answer's JSON."""
    if not path.is_file():
        fail(f"{path}: no such file", Exit.USAGE)
    headers = {"Content-Type": "text/csv"}
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TextColumn("{task.fields[rows]:,} rows"),
        TimeElapsedColumn(),
        console=err,
        disable=quiet,
        transient=False,
    )
    import httpx

    # The server answers once it has read and committed the whole file: give it time.
    with api_client(read_timeout=None) as client, progress:
        task = progress.add_task(path.name, total=path.stat().st_size, rows=0)
        try:
            response = client.post(url, content=_chunks(path, progress, task), headers=headers)
        except httpx.RemoteProtocolError as exc:
            # A server that refuses early (a bad header row, 4xx) may close while we send.
            fail(f"the server closed the upload: {exc}", Exit.UNAVAILABLE)
        progress.update(task, description=f"{path.name} sent")
        return checked(response)
