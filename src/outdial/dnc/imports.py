"""`POST /v1/dnc/import`: a do-not-call list of any size (a national registry holds hundreds of
millions of numbers), streamed in as CSV and never held whole.

The file is a header row naming a `phone_number` column, optionally a `reason` column (kept
with each number, at most 500 characters); other columns are ignored. Numbers are E.164 with
their country code (the `+` may be left out, as in contact uploads). A number already on the
list, or given twice, is counted as a duplicate and left as it is; a row that is not a number
is listed (the first 100) and skipped.

Committed a chunk at a time, not as one transaction: a registry-sized import would otherwise
hold one transaction open for many minutes (on PostgreSQL holding back vacuum of every table,
the dial queue's included; on SQLite holding the only write lock). So this is the one service
that commits: every `CHUNK_ROWS` rows, on the request's session. What was committed stays:

- The answer counts every row of the file: it is sent once the last chunk is committed.
- A fault in the file (see `outdial.csvstream`) ends the import with a 400 whose details say
  how much was imported before it (every row before the faulty one).
- With an `Idempotency-Key`, a `DncImport` row, updated in each chunk's transaction, records
  how far the import has got. A retry with the key resumes where the import stopped: the
  part of the body already committed is skipped after checking that its bytes are the same
  (SHA-256; else 422 `idempotency_key_reused`), and the rest is read from the retry (so a file
  corrected from its faulty row on carries a failed import on). Nothing is counted twice and
  the answer covers the whole file. Once the import is done, a retry with the same body
  replays its answer. A retry takes the import over from a request still running: that one
  stops at its next chunk (409 `import_superseded`), and the retry redoes its uncommitted one.
"""

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import repeat
from typing import Any

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from outdial.campaigns.schemas import MAX_LISTED_INVALID, InvalidRow
from outdial.csvstream import Batch, CsvError, CsvStream
from outdial.db import insert_ignoring_duplicates, utcnow
from outdial.dnc.models import DncEntry, DncImport, DncImportStatus
from outdial.dnc.schemas import MAX_REASON, DncImported
from outdial.errors import Conflict, Unprocessable, ValidationFailed
from outdial.phones import InvalidPhoneNumber, plain_e164, to_e164

CHUNK_ROWS = 50_000
PHONE_COLUMN = "phone_number"
REASON_COLUMN = "reason"
SOURCE = "import"


@dataclass(slots=True)
class Counts:
    inserted: int = 0
    duplicates: int = 0
    invalid_count: int = 0
    invalid: list[dict[str, Any]] = field(default_factory=list)

    def reject(self, row: int, reason: str) -> None:
        self.invalid_count += 1
        if len(self.invalid) < MAX_LISTED_INVALID:
            self.invalid.append({"row": row, "reason": reason})

    def answer(self) -> DncImported:
        return DncImported(
            inserted_count=self.inserted,
            duplicate_count=self.duplicates,
            invalid_count=self.invalid_count,
            invalid=[InvalidRow(**row) for row in self.invalid],
        )


@dataclass(frozen=True, slots=True)
class Imported:
    answer: DncImported
    replayed: bool = False


async def import_csv(
    session: AsyncSession,
    *,
    tenant_id: str,
    body: AsyncIterator[bytes],
    idempotency_key: str | None,
    ttl: timedelta,
) -> Imported:
    """Import a CSV body onto the tenant's do-not-call list, committing as it goes (see the
    module's docstring); answers the counts, or the first answer replayed."""
    stream = CsvStream(body, hashed=idempotency_key is not None)
    columns = _Columns(await stream.read_header())
    record = None
    if idempotency_key is not None:
        record, claimed = await _begin(session, tenant_id=tenant_id, key=idempotency_key, ttl=ttl)
        if record.status == DncImportStatus.COMPLETED:
            return await _replay(record, stream)
        if not claimed:
            record = await _resume(session, record, stream)
    importer = _Importer(session, tenant_id=tenant_id, record=record, columns=columns)
    try:
        try:
            async for batch in stream:
                importer.add(batch)
                if importer.pending_rows >= CHUNK_ROWS:
                    await importer.send(stream)
        except CsvError as fault:
            await importer.finish(stream, completed=False)
            raise _with_counts(fault, importer.counts) from None
        await importer.finish(stream, completed=True)
    finally:
        await importer.abandon()
    return Imported(importer.counts.answer())


# --- the file ------------------------------------------------------------------------------


class _Columns:
    """Where the header puts the number and the reason."""

    def __init__(self, header: list[str]) -> None:
        names = [name.strip() for name in header]
        if PHONE_COLUMN not in names:
            raise ValidationFailed(
                f"The CSV header must name a {PHONE_COLUMN!r} column (and may name "
                f"{REASON_COLUMN!r}); it names {names!r}.",
                code="invalid_csv_header",
            )
        if names.count(PHONE_COLUMN) > 1 or names.count(REASON_COLUMN) > 1:
            raise ValidationFailed(
                "The CSV header names a column more than once.", code="invalid_csv_header"
            )
        self.width = len(names)
        self.phone_at = names.index(PHONE_COLUMN)
        self.reason_at = names.index(REASON_COLUMN) if REASON_COLUMN in names else None


class _Importer:
    """Validates rows into chunks and inserts each chunk, committed with the import's progress,
    while the next one is read (never two statements at once on the session's connection)."""

    def __init__(
        self,
        session: AsyncSession,
        *,
        tenant_id: str,
        record: DncImport | None,
        columns: _Columns,
    ) -> None:
        self.session = session
        self.tenant_id = tenant_id
        self.record = record
        self.columns = columns
        self.counts = _counts_of(record)
        self.pending_rows = 0
        self._numbers: list[str] = []
        self._reasons: list[str | None] = []
        self._inserting: asyncio.Task[None] | None = None
        self._duplicates_seen = False

    def add(self, batch: Batch) -> None:
        """Take a batch of rows: valid numbers into the chunk, invalid rows counted."""
        width, phone_at = self.columns.width, self.columns.phone_at
        reason_at = self.columns.reason_at
        add_number, add_reason = self._numbers.append, self._reasons.append
        plain = plain_e164  # (a local: this loop runs once per row of a registry)
        for row, record in enumerate(batch.records, batch.first_row):
            if len(record) != width:
                if record:  # (a blank line is no row)
                    self.counts.reject(row, f"expected {width} columns, found {len(record)}")
                continue
            raw = record[phone_at]
            number = plain(raw) or self._checked(row, raw)
            if number is None:
                continue
            if reason_at is not None:
                reason = record[reason_at] or None
                if reason is not None and len(reason) > MAX_REASON:
                    self.counts.reject(row, f"reason is longer than {MAX_REASON} characters")
                    continue
                add_reason(reason)
            add_number(number)
        self.pending_rows += len(batch.records)

    def _checked(self, row: int, raw: str) -> str | None:
        try:
            return to_e164(raw, plus_optional=True)
        except InvalidPhoneNumber as exc:
            shown = raw if len(raw) <= 40 else raw[:40] + "…"
            self.counts.reject(row, f"phone_number {shown!r} is {exc}")
            return None

    async def send(self, stream: CsvStream, *, completed: bool = False) -> None:
        """Insert and commit the rows read so far (while the next ones are read)."""
        progress = _Progress.of(stream, self.counts) if self.record is not None else None
        numbers, self._numbers = self._numbers, []
        reasons, self._reasons = self._reasons, []
        self.pending_rows = 0
        await self._settled()
        status = DncImportStatus.COMPLETED if completed else DncImportStatus.IMPORTING
        self._inserting = asyncio.create_task(self._write(numbers, reasons, progress, status))

    async def finish(self, stream: CsvStream, *, completed: bool) -> None:
        """Commit everything read; with `completed`, the import is done."""
        await self.send(stream, completed=completed)
        await self._settled()

    async def abandon(self) -> None:
        """Let an insert under way end (its error, if any, is the caller's to ignore)."""
        if self._inserting is not None:
            await asyncio.gather(self._inserting, return_exceptions=True)
            self._inserting = None

    async def _settled(self) -> None:
        if self._inserting is not None:
            task, self._inserting = self._inserting, None
            await task

    async def _write(
        self,
        numbers: list[str],
        reasons: list[str | None],
        progress: "_Progress | None",
        status: DncImportStatus,
    ) -> None:
        if numbers:
            added = await _insert_ignoring_duplicates(
                self.session,
                self.tenant_id,
                numbers,
                reasons if self.columns.reason_at is not None else None,
                expect_duplicates=self._duplicates_seen,
            )
            self.counts.inserted += added
            self.counts.duplicates += len(numbers) - added
            # A list imported again is duplicates throughout: stop trying the plain insert.
            self._duplicates_seen |= added < len(numbers)
        if self.record is not None and progress is not None:
            await _save(self.session, self.record, progress, self.counts, status)
        await self.session.commit()


@dataclass(frozen=True, slots=True)
class _Progress:
    """Where the stream stood when a chunk was cut, and the invalid rows up to there (rows
    read after it are counted by then, but not yet behind a commit)."""

    bytes_read: int
    rows_read: int
    digest: str
    invalid_count: int
    invalid: list[dict[str, Any]]

    @classmethod
    def of(cls, stream: CsvStream, counts: Counts) -> "_Progress":
        return cls(
            bytes_read=stream.consumed,
            rows_read=stream.rows,
            digest=stream.digest.hexdigest(),
            invalid_count=counts.invalid_count,
            invalid=list(counts.invalid),
        )


def _with_counts(fault: CsvError, counts: Counts) -> CsvError:
    before = counts.answer().model_dump(mode="json")
    return CsvError(
        f"{fault.message} Every row before it was imported: {counts.inserted:,} numbers "
        f"added, {counts.duplicates:,} duplicates, {counts.invalid_count:,} rows refused.",
        details={**(fault.details or {}), **before},
    )


# --- storage -------------------------------------------------------------------------------

_COLUMNS = ("tenant_id", "phone_number", "reason", "source", "created_at")


async def _insert_ignoring_duplicates(
    session: AsyncSession,
    tenant_id: str,
    numbers: list[str],
    reasons: list[str | None] | None,
    *,
    expect_duplicates: bool,
) -> int:
    """Insert a chunk through the driver's fastest path; answers how many rows went in."""
    now = utcnow()
    return await insert_ignoring_duplicates(
        session,
        DncEntry.__table__,
        _COLUMNS,
        [
            (tenant_id, number, reason, SOURCE, now)
            for number, reason in zip(numbers, reasons or repeat(None), strict=False)
        ],
        likely_duplicates=expect_duplicates,
    )


def _counts_of(record: DncImport | None) -> Counts:
    if record is None:
        return Counts()
    return Counts(
        inserted=record.inserted_count,
        duplicates=record.duplicate_count,
        invalid_count=record.invalid_count,
        invalid=list(record.invalid),
    )


async def _save(
    session: AsyncSession,
    record: DncImport,
    progress: _Progress,
    counts: Counts,
    status: DncImportStatus,
) -> None:
    """Write the import's progress, in the transaction that commits what it counts; if
    another request has taken the import over, give up (409) and let this chunk roll back."""
    values = {
        "bytes_read": progress.bytes_read,
        "rows_read": progress.rows_read,
        "digest": progress.digest,
        "inserted_count": counts.inserted,
        "duplicate_count": counts.duplicates,
        "invalid_count": progress.invalid_count,
        "invalid": progress.invalid,
        "status": status,
        "updated_at": utcnow(),
    }
    result = await session.execute(
        update(DncImport)
        .where(
            DncImport.tenant_id == record.tenant_id,
            DncImport.idempotency_key == record.idempotency_key,
            DncImport.owner == record.owner,
        )
        .values(values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]
        raise Conflict(
            "Another request with this Idempotency-Key took this import over; it carries on "
            "from the last chunk committed.",
            code="import_superseded",
        )


# --- idempotency ---------------------------------------------------------------------------


async def _begin(
    session: AsyncSession, *, tenant_id: str, key: str, ttl: timedelta
) -> tuple[DncImport, bool]:
    """The import this key names, and whether this request has just claimed it (committed
    at once, so that a retry finds it)."""
    while True:
        record = await session.get(DncImport, (tenant_id, key), populate_existing=True)
        if record is not None and record.created_at < utcnow() - ttl:
            await session.execute(
                delete(DncImport).where(
                    DncImport.tenant_id == tenant_id, DncImport.idempotency_key == key
                )
            )
            record = None
        if record is not None:
            return record, False
        now = utcnow()
        record = DncImport(
            tenant_id=tenant_id,
            idempotency_key=key,
            owner=secrets.token_hex(16),
            status=DncImportStatus.IMPORTING,
            bytes_read=0,
            rows_read=0,
            digest="",
            inserted_count=0,
            duplicate_count=0,
            invalid_count=0,
            invalid=[],
            created_at=now,
            updated_at=now,
        )
        session.add(record)
        try:
            await session.commit()
        except IntegrityError:  # a concurrent request with this key claimed it first
            await session.rollback()
            continue
        return record, True


async def _replay(record: DncImport, stream: CsvStream) -> Imported:
    await stream.drain()
    _check_same_body(record.digest, stream)
    return Imported(_counts_of(record).answer(), replayed=True)


async def _resume(session: AsyncSession, record: DncImport, stream: CsvStream) -> DncImport:
    """Take the import over where it stands: skip the body's prefix its commits cover (after
    checking that this body starts with the same bytes)."""
    owner = secrets.token_hex(16)
    while True:
        if record.bytes_read:  # (0: claimed, nothing committed yet)
            if record.bytes_read > stream.consumed:
                await stream.skip(record.bytes_read, rows=record.rows_read)
            _check_same_body(record.digest, stream)
        taken = await session.execute(
            update(DncImport)
            .where(
                DncImport.tenant_id == record.tenant_id,
                DncImport.idempotency_key == record.idempotency_key,
                DncImport.bytes_read == record.bytes_read,
                DncImport.status == DncImportStatus.IMPORTING,
            )
            .values(owner=owner, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        await session.commit()
        if taken.rowcount == 1:  # type: ignore[attr-defined]
            await session.refresh(record)
            return record
        # It committed another chunk meanwhile (or finished): look again.
        await session.refresh(record)
        if record.status == DncImportStatus.COMPLETED:
            raise Conflict(
                "The import with this Idempotency-Key finished while this retry was being "
                "read; retry again for its answer.",
                code="import_superseded",
            )


def _check_same_body(digest: str, stream: CsvStream) -> None:
    if stream.digest.hexdigest() != digest:
        raise Unprocessable(
            "This Idempotency-Key was already used with a different request.",
            code="idempotency_key_reused",
        )


__all__ = ["CHUNK_ROWS", "Imported", "import_csv"]
