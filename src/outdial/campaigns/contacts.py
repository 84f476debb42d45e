"""Contact import: the JSON body and a streamed CSV body of any size, inserted in chunks.

A number is stored once per campaign: the unique index decides, so duplicates within an
upload and against earlier uploads are counted alike, and nothing is held in memory but the
chunk being inserted."""

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from json.encoder import encode_basestring  # type: ignore[attr-defined]

from sqlalchemy.ext.asyncio import AsyncSession

from outdial.calls.schemas import _zone_names
from outdial.campaigns.models import CampaignContact
from outdial.campaigns.schemas import MAX_LISTED_INVALID, ContactIn, InvalidRow
from outdial.campaigns.statuses import ContactStatus
from outdial.csvstream import Batch, CsvStream
from outdial.db import insert_ignoring_duplicates, utcnow
from outdial.errors import ValidationFailed
from outdial.ids import new_ids
from outdial.phones import InvalidPhoneNumber, to_e164

CHUNK_ROWS = 10_000
PHONE_COLUMN = "phone_number"
TIMEZONE_COLUMN = "timezone"


@dataclass(slots=True)
class ImportResult:
    inserted: int = 0
    duplicates: int = 0
    invalid_count: int = 0
    invalid: list[InvalidRow] = field(default_factory=list)

    def reject(self, row: int, reason: str) -> None:
        self.invalid_count += 1
        if len(self.invalid) < MAX_LISTED_INVALID:
            self.invalid.append(InvalidRow(row=row, reason=reason))


NewContact = tuple[str, str, str | None]
"""(E.164 number, variables as a JSON object, IANA zone or None): a plain tuple, as a
million-row import makes a million of them."""


def _contact(
    result: ImportResult,
    row: int,
    raw_number: str,
    variables_json: str,
    zone: str | None,
) -> NewContact | None:
    """The contact a row describes, or None (and the row listed as invalid)."""
    try:
        number = to_e164(raw_number, plus_optional=True)
    except InvalidPhoneNumber as exc:
        result.reject(row, f"phone_number {raw_number!r} is {exc}")
        return None
    if zone and zone not in _zone_names():
        result.reject(row, f"timezone {zone!r} is not an IANA time zone")
        return None
    return number, variables_json, zone or None


class ContactWriter:
    """Inserts contacts into one campaign, a chunk at a time, counting what the unique
    index refused. A chunk is inserted while the next one is read and parsed (never two
    statements at once on the session's connection): the database and the parsing overlap."""

    def __init__(self, session: AsyncSession, campaign_id: str) -> None:
        self.session = session
        self.campaign_id = campaign_id
        self.result = ImportResult()
        self._chunk: list[NewContact] = []
        self._inserting: asyncio.Task[None] | None = None

    async def add(self, contact: NewContact) -> None:
        await self.extend([contact])

    async def extend(self, contacts: list[NewContact]) -> None:
        self._chunk.extend(contacts)
        if len(self._chunk) >= CHUNK_ROWS:
            await self._send()

    async def finish(self) -> ImportResult:
        await self._send()
        await self._settled()
        return self.result

    async def abandon(self) -> None:
        """Let an insert under way end (its error, if any, is the caller's to ignore)."""
        if self._inserting is not None:
            await asyncio.gather(self._inserting, return_exceptions=True)
            self._inserting = None

    async def _send(self) -> None:
        chunk, self._chunk = self._chunk, []
        await self._settled()
        if chunk:
            self._inserting = asyncio.create_task(self._insert(chunk))

    async def _settled(self) -> None:
        if self._inserting is not None:
            task, self._inserting = self._inserting, None
            await task

    async def _insert(self, chunk: list[NewContact]) -> None:
        inserted = await _insert_ignoring_duplicates(self.session, self.campaign_id, chunk)
        self.result.inserted += inserted
        self.result.duplicates += len(chunk) - inserted


_COLUMNS = ("campaign_id", "id", "phone_number", "variables", "timezone", "status", "created_at")


async def _insert_ignoring_duplicates(
    session: AsyncSession, campaign_id: str, contacts: list[NewContact]
) -> int:
    """Insert a chunk of contacts; answers how many went in (the rest were duplicates)."""
    ids = new_ids("contact", len(contacts))
    now = utcnow()
    pending = str(ContactStatus.PENDING)
    return await insert_ignoring_duplicates(
        session,
        CampaignContact.__table__,
        _COLUMNS,
        [(campaign_id, i, *c, pending, now) for i, c in zip(ids, contacts, strict=True)],
    )


async def insert_json(
    session: AsyncSession, *, campaign_id: str, contacts: Iterable[ContactIn]
) -> ImportResult:
    """Contacts from the JSON body; an invalid one is listed by its index."""
    writer = ContactWriter(session, campaign_id)
    try:
        for index, c in enumerate(contacts):
            variables = json.dumps(c.variables, separators=(",", ":"))
            contact = _contact(writer.result, index, c.phone_number, variables, c.timezone)
            if contact is not None:
                await writer.add(contact)
        return await writer.finish()
    finally:
        await writer.abandon()


async def insert_csv(
    session: AsyncSession, *, campaign_id: str, body: AsyncIterator[bytes]
) -> ImportResult:
    """Contacts from a UTF-8 CSV body read as it arrives (see `outdial.csvstream`): a header
    row naming a `phone_number` column (and optionally `timezone`); every other column becomes
    a variable. An invalid row is listed by its row number; a bad header or a body that is not
    CSV refuses the whole upload."""
    writer = ContactWriter(session, campaign_id)
    stream = CsvStream(body)
    rows = _RowReader(_checked_header(await stream.read_header()), writer.result)
    try:
        async for batch in stream:
            await writer.extend(rows.contacts(batch))
        return await writer.finish()
    finally:
        await writer.abandon()


class _RowReader:
    """Turns a batch of CSV records into contacts (a million-row file is read a batch at a
    time, not a record at a time)."""

    def __init__(self, header: list[str], result: ImportResult) -> None:
        self.width = len(header)
        self.phone_at = header.index(PHONE_COLUMN)
        self.zone_at = header.index(TIMEZONE_COLUMN) if TIMEZONE_COLUMN in header else None
        self.variables = _VariablesEncoder(header, skip={self.phone_at, self.zone_at})
        self.result = result

    def contacts(self, batch: Batch) -> list[NewContact]:
        found: list[NewContact] = []
        for row, record in enumerate(batch.records, batch.first_row):
            if not record:
                continue  # a blank line
            if len(record) != self.width:
                self.result.reject(row, f"expected {self.width} columns, found {len(record)}")
                continue
            contact = _contact(
                self.result,
                row,
                record[self.phone_at],
                self.variables.encode(record),
                record[self.zone_at] if self.zone_at is not None else None,
            )
            if contact is not None:
                found.append(contact)
        return found


class _VariablesEncoder:
    """A row's variables (its other columns, as strings) as a JSON object, with the keys
    encoded once per upload: a third of the cost of `json.dumps` on a dict per row."""

    def __init__(self, header: list[str], *, skip: set[int | None]) -> None:
        self._columns = [(i, encode_basestring(name) + ":") for i, name in enumerate(header)]
        self._columns = [(i, key) for i, key in self._columns if i not in skip]

    def encode(self, record: list[str]) -> str:
        return "{" + ",".join(key + encode_basestring(record[i]) for i, key in self._columns) + "}"


def _checked_header(header: list[str]) -> list[str]:
    header = [name.strip() for name in header]
    if PHONE_COLUMN not in header:
        raise ValidationFailed(
            f"The CSV header must name a {PHONE_COLUMN!r} column; it names {header!r}.",
            code="invalid_csv_header",
        )
    if len(set(header)) != len(header):
        raise ValidationFailed(
            "The CSV header names a column more than once.", code="invalid_csv_header"
        )
    return header
