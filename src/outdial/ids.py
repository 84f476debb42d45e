import uuid

from ulid import ULID


def new_id(prefix: str) -> str:
    """An opaque id, e.g. `call_01jd…`; ULIDs sort by creation time, which list cursors use."""
    return f"{prefix}_{str(ULID()).lower()}"


def new_uuid() -> str:
    return str(uuid.uuid4())
