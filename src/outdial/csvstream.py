"""A streamed CSV request body, read as it arrives: linear in its size, in bounded slices.

Campaign contacts and do-not-call imports take `text/csv` bodies of any size. The body is cut
into slices of about `SLICE_BYTES`, each ending at a line end, and Python's C `csv` module
parses a slice in one call; the event loop is handed back between slices, so an upload never
holds up the other requests for more than one slice's work. A slice can end inside a quoted
field (a field may hold line ends): the record it cuts off is parsed again with the next
slice. A slice that completes no record is widened to `MAX_RECORD_BYTES`; a record that does
not end within that many bytes is refused. Every byte is thus parsed a bounded number of times,
whatever the input: the cost is linear in the body's size.

Refused with a 400 (`invalid_csv`), naming the row (the header is row 1): a record longer than
`MAX_RECORD_BYTES`, a body that is not UTF-8 (a leading byte-order mark is allowed), a NUL
character in any cell (PostgreSQL cannot store one), a quote still open at the end of the body.
"""

import asyncio
import codecs
import csv
import hashlib
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from itertools import chain, islice
from typing import NoReturn

from outdial.errors import ValidationFailed

MAX_RECORD_BYTES = 64 * 1024
"""The longest record (a row, its line end included) a CSV body may hold."""

SLICE_BYTES = 16 * 1024
"""How much of the body is parsed at a time (more only for a record longer than this): a few
milliseconds of work between two turns of the event loop."""

_END = "\ue000"
"""A line appended to each slice: parsed as a record of its own when the slice ends at a record
boundary, swallowed into the last field when the slice ends inside a quoted one."""


class CsvError(ValidationFailed):
    code = "invalid_csv"


@dataclass(slots=True)
class Batch:
    """The complete records of one slice; the first of them is row `first_row`."""

    first_row: int
    records: list[list[str]]


@dataclass(slots=True)
class _Slice:
    text: str
    size: int  # bytes of the body the text comes from
    bom: int  # of which a leading byte-order mark, not part of the text
    final: bool  # the body's last slice
    not_utf8_at: int | None = None  # a byte right after the slice (on its line) is not UTF-8


class CsvStream:
    """Records of a CSV body: `read_header()` first, then `async for batch in stream`.

    `consumed` counts the body's bytes behind the records handed out so far (and `rows` those
    records); with `hashed`, `digest` is the SHA-256 of exactly those bytes, so a caller can
    record how far it got and later `skip()` a retried body's prefix after checking it."""

    def __init__(
        self,
        body: AsyncIterator[bytes],
        *,
        hashed: bool = False,
        max_record_bytes: int = MAX_RECORD_BYTES,
        slice_bytes: int = SLICE_BYTES,
    ) -> None:
        self._body = aiter(body)
        self._limit = max_record_bytes
        self._slice_bytes = min(slice_bytes, max_record_bytes)
        self._buffer = bytearray()
        self._ended = False
        self._hashed = hashed
        self.digest = hashlib.sha256()
        self.consumed = 0
        self.rows = 0
        self.header: list[str] = []

    async def read_header(self) -> list[str]:
        """The first record (row 1) as it is; an empty body is refused."""
        for window in (self._slice_bytes, self._limit):
            piece = await self._slice(window)
            if piece is None:
                raise CsvError("The CSV body is empty: send a header row.")
            lines = io.StringIO(piece.text, newline="")
            header = next(csv.reader(chain(lines, (_END,))))
            whole = header != [_END] and not (header and header[-1].endswith(_END))
            if whole:
                break
            if header == [_END] and piece.final:  # a byte-order mark and nothing else
                raise CsvError("The CSV body is empty: send a header row.")
            if piece.not_utf8_at is not None:
                self._refuse_not_utf8(piece.not_utf8_at, row=1)
            if piece.final:
                self._refuse_cut_off(final=True, row=1)
        else:
            self._refuse_cut_off(final=False, row=1)
        if any("\x00" in name for name in header):
            self._refuse_nul(header, row=1)
        self.header = header
        self._consume(piece, lines.tell())
        self.rows = 1
        return header

    async def __aiter__(self) -> AsyncIterator[Batch]:
        while True:
            await asyncio.sleep(0)  # one slice at a time, then the other requests' turn
            batch = await self._next_batch()
            if batch is None:
                return
            yield batch

    async def skip(self, offset: int, *, rows: int) -> None:
        """Pass over the body up to byte `offset` (a record boundary, `rows` records in),
        unparsed; its bytes are hashed as if read. A body shorter than that ends the skip."""
        while self.consumed < offset and (self._buffer or await self._read()):
            self._drop(min(len(self._buffer), offset - self.consumed))
        self.rows = rows

    async def drain(self) -> None:
        """Read (and hash) whatever the body still holds."""
        while self._buffer or await self._read():
            self._drop(len(self._buffer))

    # --- slices ----------------------------------------------------------------------------

    async def _next_batch(self) -> Batch | None:
        for window in (self._slice_bytes, self._limit):
            piece = await self._slice(window)
            if piece is None:
                return None
            parsed = self._parse(piece)
            if parsed is not None:
                break
            if piece.not_utf8_at is not None:  # within the record that does not end
                self._refuse_not_utf8(piece.not_utf8_at, row=self.rows + 1)
        else:
            self._refuse_cut_off(final=False, row=self.rows + 1)
        records, end = parsed
        if "\x00" in piece.text and (nul := _first_nul(records)) is not None:
            # The records before it first, so that every row before a refusal was handed out.
            if nul == 0:
                self._refuse_nul(records[0], row=self.rows + 1)
            records, end = records[:nul], _end_of(piece.text, nul)
        batch = Batch(first_row=self.rows + 1, records=records)
        self._consume(piece, end)
        self.rows += len(records)
        return batch

    async def _read(self) -> bool:
        if self._ended:
            return False
        try:
            self._buffer += await anext(self._body)
        except StopAsyncIteration:
            self._ended = True
            return False
        return True

    async def _slice(self, window: int) -> _Slice | None:
        """The body's next `window` bytes up to their last line end (no text if they hold
        none), or None once the body is all consumed."""
        while len(self._buffer) < window and await self._read():
            pass
        if not self._buffer:
            return None
        final = self._ended and len(self._buffer) <= window
        if final:
            size = len(self._buffer)
        else:
            # After the last line end in the window; a CR at its very end may be half a CRLF.
            newline = self._buffer.rfind(b"\n", 0, window)
            size = 1 + max(newline, self._buffer.rfind(b"\r", 0, window - 1))
        bom = 3 if self.consumed == 0 and self._buffer.startswith(codecs.BOM_UTF8) else 0
        try:
            # A line end is never part of a multi-byte UTF-8 character: slices decode alone.
            return _Slice(self._buffer[bom:size].decode(), size, bom, final)
        except UnicodeDecodeError as exc:
            bad = bom + exc.start
        # The lines before the bad byte's are read first: the refusal then names its row.
        newline = self._buffer.rfind(b"\n", bom, bad)
        size = 1 + max(newline, self._buffer.rfind(b"\r", bom, bad))
        if size == 0:
            self._refuse_not_utf8(self.consumed + bad, row=self.rows + 1)
        return _Slice(self._buffer[bom:size].decode(), size, bom, False, self.consumed + bad)

    def _parse(self, piece: _Slice) -> tuple[list[list[str]], int] | None:
        """The slice's complete records and how many characters of its text they span; None
        if it completes none."""
        records = list(csv.reader(chain(io.StringIO(piece.text, newline=""), (_END,))))
        if records.pop() == [_END]:
            return (records, len(piece.text)) if records or piece.final else None
        # The slice ends inside a quoted field: the record it cuts off comes again with the
        # next slice (at the body's end, it is refused once the ones before are read).
        if not records:
            if piece.final:
                self._refuse_cut_off(final=True, row=self.rows + 1)
            return None
        return records, _end_of(piece.text, len(records))

    def _consume(self, piece: _Slice, chars: int) -> None:
        """Mark the slice's first `chars` characters as read."""
        if chars == len(piece.text):
            self._drop(piece.size)
        else:
            self._drop(piece.bom + len(piece.text[:chars].encode()))

    def _drop(self, size: int) -> None:
        if self._hashed:
            self.digest.update(memoryview(self._buffer)[:size])
        del self._buffer[:size]
        self.consumed += size

    # --- refusals --------------------------------------------------------------------------

    def _refuse_cut_off(self, final: bool, *, row: int) -> NoReturn:
        if final:
            raise CsvError(
                f"The CSV body ends inside a quoted field: the quote opened in row {row:,} "
                "is never closed.",
                details={"row": row},
            )
        raise CsvError(
            f"Row {row:,} is longer than {self._limit:,} bytes, the longest a CSV record "
            "may be (an unclosed quote?).",
            details={"row": row, "max_record_bytes": self._limit},
        )

    def _refuse_not_utf8(self, at: int, *, row: int) -> NoReturn:
        raise CsvError(
            f"The CSV body is not UTF-8: byte {at:,} (in row {row:,}) is not part of a UTF-8 "
            "character.",
            details={"row": row, "byte": at},
        )

    def _refuse_nul(self, record: list[str], *, row: int) -> NoReturn:
        column = next(i for i, cell in enumerate(record) if "\x00" in cell)
        name = self.header[column] if column < len(self.header) else None
        which = repr(name) if name is not None else f"#{column + 1}"
        raise CsvError(
            f"Row {row:,}, column {which}, holds a NUL character.",
            details={"row": row, "column": name if name is not None else column + 1},
        )


def _end_of(text: str, count: int) -> int:
    """How many characters of `text` its first `count` records span."""
    lines = io.StringIO(text, newline="")
    for _ in islice(csv.reader(lines), count):
        pass
    return lines.tell()


def _first_nul(records: list[list[str]]) -> int | None:
    for index, record in enumerate(records):
        if any("\x00" in cell for cell in record):
            return index
    return None


__all__ = ["MAX_RECORD_BYTES", "Batch", "CsvError", "CsvStream"]
