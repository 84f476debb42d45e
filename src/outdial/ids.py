import os
import time
import uuid


def new_id(prefix: str) -> str:
    """An opaque id such as `call_0193f0c2a1b4e1c9d2f3a4b5c6d7`: 48 bits of milliseconds then
    64 random bits, in hex, so ids sort by creation time (list cursors rely on that)."""
    return f"{prefix}_{time.time_ns() // 1_000_000:012x}{os.urandom(8).hex()}"


def new_ids(prefix: str, count: int) -> list[str]:
    """`count` ids at once, for bulk inserts: one clock read, one call for the randomness."""
    stem = f"{prefix}_{time.time_ns() // 1_000_000:012x}"
    randomness = os.urandom(8 * count).hex()
    return [stem + randomness[i * 16 : (i + 1) * 16] for i in range(count)]


def new_uuid() -> str:
    return str(uuid.uuid4())
