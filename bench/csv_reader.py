"""Benchmark: CPU time of reading a streamed CSV body (`outdial.csvstream`), no database.

Reads bench/contacts_import.py's 1,000,000-row contacts CSV and a 10 MB hostile body (records
that are one quoted field of 10,000 line breaks each) in 64 KiB pieces, and prints the
process CPU time of each read (best of `--repeat`): CPU time, not wall time, so that a machine
busy with other work does not blur the comparison. With `--old-contacts PATH` (the
`campaigns/contacts.py` of an older checkout, e.g. commit 33783cd), its `_csv_batches` reader
reads the contacts CSV too, as the yardstick (not the hostile body: it would take hours).
Run: `.venv/bin/python bench/csv_reader.py [--old-contacts PATH]`.
"""

import argparse
import asyncio
import importlib.util
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from contacts_import import csv_body

from outdial.csvstream import CsvStream

HOSTILE_BYTES = 10 * 1024 * 1024
PIECE = 64 * 1024


def hostile_body() -> list[bytes]:
    record = b'"' + b"\n" * 10_000 + b'"\n'
    data = b"phone_number,x\n" + record * (HOSTILE_BYTES // len(record))
    return [data[i : i + PIECE] for i in range(0, len(data), PIECE)]


async def feed(pieces: list[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


async def read_new(pieces: list[bytes]) -> int:
    stream = CsvStream(feed(pieces))
    await stream.read_header()
    return sum([len(batch.records) async for batch in stream])


def old_reader(path: str) -> Callable[[list[bytes]], Coroutine[Any, Any, int]]:
    spec = importlib.util.spec_from_file_location("old_contacts", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    async def read_old(pieces: list[bytes]) -> int:
        return sum([len(batch) async for batch in module._csv_batches(feed(pieces))]) - 1

    return read_old


def cpu_seconds(read: Callable[[list[bytes]], Coroutine[Any, Any, int]], pieces, repeat) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        asyncio.run(read(pieces))
        best = min(best, time.process_time() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-contacts", help="an older campaigns/contacts.py to compare with")
    parser.add_argument("--repeat", type=int, default=4)
    args = parser.parse_args()
    contacts = list(csv_body(1_000_000))
    readers = {"csvstream": read_new}
    if args.old_contacts:
        readers["old reader"] = old_reader(args.old_contacts)
    for name, read in readers.items():
        seconds = cpu_seconds(read, contacts, args.repeat)
        print(f"{name:>10}, 1,000,000 contacts: {seconds:.2f} s CPU ({seconds * 1000:.0f} ns/row)")
    seconds = cpu_seconds(read_new, hostile_body(), args.repeat)
    print(f"{'csvstream':>10}, 10 MB hostile body: {seconds:.2f} s CPU ({seconds * 100:.0f} ms/MB)")


if __name__ == "__main__":
    main()
