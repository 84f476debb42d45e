"""The agent's audio waiting to be played to the callee, 20 ms a packet, and its marks."""

from collections import deque
from collections.abc import Callable

from outdial.telephony.media.g711 import FRAME_BYTES, ULAW_SILENCE

COMPACT_AFTER = 1 << 16
"""Played audio is dropped from the front of the queue once this much of it has piled up."""
_SILENCE_FRAME = bytes([ULAW_SILENCE]) * FRAME_BYTES


class Playout:
    """The agent's audio waiting to be played to the callee, 20 ms at a time, and its marks,
    each echoed once the audio queued before it has been played (or dropped by `clear`)."""

    def __init__(self, echo_mark: Callable[[str], None]) -> None:
        self._echo_mark = echo_mark
        self._audio = bytearray()
        self._read = 0
        self._queued = 0
        """Bytes ever queued; a mark waits for the audio up to this position."""
        self._played = 0
        self._marks: deque[tuple[int, str]] = deque()
        self._grew = False

    @property
    def waiting(self) -> int:
        """Bytes queued and not yet played."""
        return len(self._audio) - self._read

    def add_audio(self, ulaw: bytes) -> None:
        self._audio += ulaw
        self._queued += len(ulaw)
        self._grew = True

    def add_mark(self, name: str) -> None:
        self._marks.append((self._queued, name))

    def clear(self) -> None:
        """Drop the audio not yet played; its marks are echoed now (as Twilio does)."""
        self._audio.clear()
        self._read = 0
        self._played = self._queued
        self._echo_due()

    def next_frame(self) -> bytes | None:
        """The next 20 ms to play (μ-law), or None when there is nothing to play. A partial
        frame is played (padded with silence) once no more audio came since the last tick;
        while audio is still arriving it waits a tick to be completed."""
        grew, self._grew = self._grew, False
        available = len(self._audio) - self._read
        if available >= FRAME_BYTES:
            frame = bytes(self._audio[self._read : self._read + FRAME_BYTES])
            taken = FRAME_BYTES
        elif available and not grew:
            frame = bytes(self._audio[self._read :]) + _SILENCE_FRAME[available:]
            taken = available
        else:
            frame, taken = None, 0
        if taken:
            self._read += taken
            self._played += taken
            if self._read >= COMPACT_AFTER or self._read == len(self._audio):
                del self._audio[: self._read]
                self._read = 0
        return frame

    def echo_played_marks(self) -> None:
        """Echo the marks whose audio has all been taken by `next_frame` (call it once that
        audio is on its way to the callee)."""
        if self._marks:
            self._echo_due()

    def _echo_due(self) -> None:
        while self._marks and self._marks[0][0] <= self._played:
            self._echo_mark(self._marks.popleft()[1])
