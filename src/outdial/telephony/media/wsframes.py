"""The WebSocket frames (RFC 6455 §5) of an agent stream's hot path, written and split here
instead of through `websockets`' protocol object, which costs several times more per frame
(a `Frame` object, its checks, a generator-based parser, a `getrandom` system call for every
mask): with 50 frames a second each way per call, that was a third of the relay's CPU.

Only the common case is handled here: text frames we send (masked, as a client must), and
complete unfragmented text frames the agent sends. Everything else (the handshake, control
frames, fragments, frames too large, protocol errors) is still `websockets`' to handle:
`frame_bounds` says where each frame ends, so whole frames can be handed to it."""

import os
import struct

try:
    from websockets.speedups import apply_mask
except ImportError:  # no C extension on this platform
    from websockets.utils import apply_mask

_FIN_TEXT = 0x81
_MASKED = 0x80
_HEAD_16 = struct.Struct("!BBH")
_HEAD_64 = struct.Struct("!BBQ")
_LENGTH_16 = struct.Struct("!H")
_LENGTH_64 = struct.Struct("!Q")
_MASK_KEYS_AT_ONCE = 1024


class MaskKeys:
    """Fresh 4-byte masking keys from the system's strong random source (RFC 6455 §5.3), read
    a thousand at a time rather than one system call per frame."""

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0

    def next(self) -> bytes:
        if self._at >= len(self._pool):
            self._pool, self._at = os.urandom(4 * _MASK_KEYS_AT_ONCE), 0
        key = self._pool[self._at : self._at + 4]
        self._at += 4
        return key


def text_frame(payload: bytes, mask: bytes) -> bytes:
    """One final, masked text frame carrying `payload` (UTF-8)."""
    length = len(payload)
    if length < 126:
        head = bytes((_FIN_TEXT, _MASKED | length))
    elif length < 1 << 16:
        head = _HEAD_16.pack(_FIN_TEXT, _MASKED | 126, length)
    else:
        head = _HEAD_64.pack(_FIN_TEXT, _MASKED | 127, length)
    return head + mask + apply_mask(payload, mask)


def frame_bounds(buffer: bytes | bytearray, start: int) -> tuple[int, int] | None:
    """Where the payload of the frame at `start` of `buffer` starts and where the frame ends,
    once its header has arrived (None before; the end may lie beyond what has arrived yet)."""
    available = len(buffer) - start
    if available < 2:
        return None
    second = buffer[start + 1]
    length = second & 0x7F
    at = start + 2
    if length == 126:
        if available < 4:
            return None
        (length,) = _LENGTH_16.unpack_from(buffer, at)
        at += 2
    elif length == 127:
        if available < 10:
            return None
        (length,) = _LENGTH_64.unpack_from(buffer, at)
        at += 8
    if second & _MASKED:
        at += 4
    return at, at + length


def is_plain_text(buffer: bytes | bytearray, start: int) -> bool:
    """Whether the frame at `start` is a final, unmasked text frame with no extension bits:
    its payload is the message as it is. (Any other frame is for `websockets`.)"""
    return buffer[start] == _FIN_TEXT and not buffer[start + 1] & _MASKED
