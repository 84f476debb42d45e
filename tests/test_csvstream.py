"""The streamed CSV reader: the records Python's `csv` module reads from the whole text, however
the body is cut into chunks and slices; every refusal names its row."""

import asyncio
import csv
import hashlib
import io
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outdial.csvstream import MAX_RECORD_BYTES, SLICE_BYTES, CsvError, CsvStream


async def chunked(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def read_all(
    data: bytes, *, chunk: int = 4096, limit: int = MAX_RECORD_BYTES, slices: int = SLICE_BYTES
) -> tuple[list[str], list[list[str]], list[int]]:
    """The header, every record after it, and each batch's first row."""
    stream = CsvStream(chunked(data, chunk), max_record_bytes=limit, slice_bytes=slices)
    header = await stream.read_header()
    records: list[list[str]] = []
    firsts: list[int] = []
    async for batch in stream:
        assert batch.first_row == len(records) + 2
        firsts.append(batch.first_row)
        records += batch.records
    return header, records, firsts


def reference(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


CELL = st.text(alphabet=st.sampled_from(["a", "é", ",", '"', "\n", "\r", " ", "7", "€"]))


@st.composite
def csv_bodies(draw: st.DrawFn) -> str:
    rows = draw(st.lists(st.lists(CELL, min_size=1, max_size=4), min_size=1, max_size=12))
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator=draw(st.sampled_from(["\n", "\r\n", "\r"])))
    writer.writerows(rows)
    text = out.getvalue()
    return text if draw(st.booleans()) else text.rstrip("\r\n")


@settings(max_examples=300, deadline=None)
@given(csv_bodies(), st.integers(1, 40), st.integers(48, 200), st.integers(8, 200))
def test_records_match_the_csv_module_however_the_body_is_cut(
    text: str, chunk: int, limit: int, slices: int
) -> None:
    longest = max(record_sizes(text), default=0)
    if not reference(text):
        with pytest.raises(CsvError, match="empty"):
            asyncio.run(read_all(text.encode(), chunk=chunk, limit=limit, slices=slices))
    elif longest > limit:
        with pytest.raises(CsvError, match="longer than"):
            asyncio.run(read_all(text.encode(), chunk=chunk, limit=limit, slices=slices))
    elif longest < limit:  # (a record of exactly the limit ending in a lone CR is refused)
        header, records, _ = asyncio.run(
            read_all(text.encode(), chunk=chunk, limit=limit, slices=slices)
        )
        assert [header, *records] == reference(text)


def record_sizes(text: str) -> list[int]:
    """Each record's size in bytes, its line end included."""
    lines = io.StringIO(text, newline="")
    sizes, start = [], 0
    for _ in csv.reader(lines):
        end = lines.tell()
        sizes.append(len(text[start:end].encode()))
        start = end
    return sizes


async def test_rows_are_numbered_across_slices() -> None:
    body = "phone_number\n" + "".join(f"+1555{i:07d}\n" for i in range(20_000))
    header, records, firsts = await read_all(body.encode(), chunk=1000)
    assert header == ["phone_number"]
    assert len(records) == 20_000
    assert records[-1] == ["+15550019999"]
    assert len(firsts) > 1  # more than one slice
    assert firsts[0] == 2


async def test_a_byte_order_mark_is_not_part_of_the_header() -> None:
    header, records, _ = await read_all(b"\xef\xbb\xbfphone_number\n+15557770001\n", chunk=1)
    assert header == ["phone_number"]
    assert records == [["+15557770001"]]


async def test_a_quoted_field_spans_lines_and_slices() -> None:
    note = "x" * 40 + "\n" + "y" * 40
    body = f'n,note\n1,"{note}"\n2,b\n'.encode()
    _, records, _ = await read_all(body, chunk=3, limit=100)
    assert records == [["1", note], ["2", "b"]]


@pytest.mark.parametrize(
    ("body", "row", "message"),
    [
        (b"", None, "empty"),
        (b"\xef\xbb\xbf", None, "empty"),
        (b"a,b\n" + b"x" * (MAX_RECORD_BYTES + 1) + b"\n", 2, "longer than 65,536 bytes"),
        (b'a,b\n1,"' + b"\n" * 300_000, 2, "longer than 65,536 bytes"),
        (b"a" * (MAX_RECORD_BYTES + 1), 1, "longer than 65,536 bytes"),
        (b'a,b\n1,2\n3,"open\n', 3, "never closed"),
        (b"a,b\n1,2\n3,\xff\n", 3, "not UTF-8"),
        (b"a,b\n1,\xc3", 2, "not UTF-8"),
        (b'a,b\n1,2\n3,"x\ny\xff\n"\n', 3, "not UTF-8"),
        (b"a,\xffb\n1,2\n", 1, "not UTF-8"),
        (b'a,"b\n\xff"\n1,2\n', 1, "not UTF-8"),
    ],
    ids=[
        "empty",
        "bom-only",
        "long",
        "unclosed-long",
        "long-header",
        "unclosed",
        "utf8",
        "utf8-cut",
        "utf8-in-quoted-lines",
        "utf8-header",
        "utf8-header-lines",
    ],
)
async def test_refusals(body: bytes, row: int | None, message: str) -> None:
    with pytest.raises(CsvError) as refused:
        await read_all(body, chunk=65_536)
    assert refused.value.code == "invalid_csv"
    assert message in refused.value.message
    if row is not None:
        assert refused.value.details["row"] == row


async def test_a_record_of_exactly_the_limit_is_read() -> None:
    long_cell = "x" * (MAX_RECORD_BYTES - 3)
    _, records, _ = await read_all(f"a,b\n{long_cell},1\n".encode())
    assert records == [[long_cell, "1"]]


async def test_invalid_utf8_names_the_byte() -> None:
    with pytest.raises(CsvError) as refused:
        await read_all(b"a,b\n1,2\n3,\xff\n")
    assert refused.value.details == {"row": 3, "byte": 10}


@pytest.mark.parametrize(
    ("body", "details"),
    [
        (b"phone_number,name\n+15557770001,A\x00B\n", {"row": 2, "column": "name"}),
        (b"phone_number,name\n1,2\n3,4,\x00\n", {"row": 3, "column": 3}),
        (b"phone\x00number\n", {"row": 1, "column": 1}),
    ],
)
async def test_a_nul_character_is_refused_naming_its_column(body: bytes, details) -> None:
    with pytest.raises(CsvError) as refused:
        await read_all(body)
    assert refused.value.details == details
    assert "NUL" in refused.value.message


async def test_skip_passes_over_a_prefix_and_hashes_it() -> None:
    body = b"phone_number\n" + b"".join(b"+1555%07d\n" % i for i in range(1000))
    first = CsvStream(chunked(body, 333), hashed=True, max_record_bytes=1024)
    await first.read_header()
    seen = 0
    async for batch in first:
        seen += len(batch.records)
        if seen >= 300:
            break
    offset, rows, digest = first.consumed, first.rows, first.digest.hexdigest()
    assert digest == hashlib.sha256(body[:offset]).hexdigest()

    again = CsvStream(chunked(body, 97), hashed=True, max_record_bytes=1024)
    await again.read_header()
    await again.skip(offset, rows=rows)
    assert again.digest.hexdigest() == digest
    rest = [record async for batch in again for record in batch.records]
    assert rest[0] == [f"+1555{rows - 1:07d}"]
    assert rows - 1 + len(rest) == 1000
    assert again.digest.hexdigest() == hashlib.sha256(body).hexdigest()


async def test_slices_hand_the_event_loop_back() -> None:
    body = b"phone_number\n" + b"+15557770001\n" * 100_000  # ~20 slices
    turns = 0
    done = asyncio.Event()

    async def count_turns() -> None:
        nonlocal turns
        while not done.is_set():
            turns += 1
            await asyncio.sleep(0)

    counter = asyncio.create_task(count_turns())
    stream = CsvStream(chunked(body, len(body)))  # one chunk: no await would yield by itself
    await stream.read_header()
    async for _ in stream:
        pass
    done.set()
    await counter
    assert turns >= len(body) // MAX_RECORD_BYTES
