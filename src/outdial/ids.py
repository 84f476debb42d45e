import itertools
import os
import time
import uuid

# A per-process sequence keeps ids made in the same millisecond in creation order.
_sequence = itertools.count()


def _stem(prefix: str) -> str:
    return f"{prefix}_{time.time_ns() // 1_000_000:012x}"


def new_id(prefix: str) -> str:
    """An opaque id such as `call_0193f0c2a1b4000001c9d2f3a4b5`: 48 bits of milliseconds, a
    24-bit per-process sequence, then 40 random bits, in hex, so ids sort by creation time
    (list cursors rely on that)."""
    return f"{_stem(prefix)}{next(_sequence) % 0x1000000:06x}{os.urandom(5).hex()}"


def new_ids(prefix: str, count: int) -> list[str]:
    """`count` ids at once, for bulk inserts: one clock read, one call for the randomness."""
    stem = _stem(prefix)
    randomness = os.urandom(5 * count).hex()
    return [
        f"{stem}{next(_sequence) % 0x1000000:06x}{randomness[i * 10 : (i + 1) * 10]}"
        for i in range(count)
    ]


_last_uuid_stamp = (0, 0)  # (milliseconds, counter) of the last UUID made in this process


def new_uuid() -> str:
    """A UUIDv7 (RFC 9562) with a 12-bit counter after the milliseconds (its "monotonic
    random" method), so agents, whose ids the seed shows as UUIDs, list in creation order."""
    global _last_uuid_stamp
    millis, counter = time.time_ns() // 1_000_000, 0
    last_millis, last_counter = _last_uuid_stamp
    if millis <= last_millis:  # same millisecond (or the clock stepped back): count on
        millis, counter = last_millis, last_counter + 1
        if counter > 0xFFF:
            millis, counter = last_millis + 1, 0
    _last_uuid_stamp = (millis, counter)
    value = millis << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62
    value |= int.from_bytes(os.urandom(8)) & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))
