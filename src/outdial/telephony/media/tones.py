"""Synthetic audio, μ-law at 8 kHz: the simulated callee's voice and the demo agent's greeting."""

import math
from functools import cache

from outdial.telephony.media.g711 import FRAME_BYTES, SAMPLE_RATE, ULAW_SILENCE, linear_to_ulaw

LEVEL = 0.3
"""Of full scale: about -10 dBFS, a comfortable speaking level."""


def tone(frequency: float, seconds: float, *, level: float = LEVEL) -> bytes:
    """A sine tone, faded in and out over 5 ms so it starts and stops without a click."""
    count = round(seconds * SAMPLE_RATE)
    fade = min(40, count // 2)
    samples = []
    for n in range(count):
        envelope = min(1.0, n / fade, (count - 1 - n) / fade) if fade else 1.0
        value = level * envelope * math.sin(2 * math.pi * frequency * n / SAMPLE_RATE)
        samples.append(linear_to_ulaw(round(value * 32767)))
    return bytes(samples)


def silence(seconds: float) -> bytes:
    return bytes([ULAW_SILENCE]) * round(seconds * SAMPLE_RATE)


def melody(*notes: tuple[float, float], gap: float = 0.05) -> bytes:
    """Tones (frequency, seconds) one after another, a short silence between them, padded
    with silence to whole 20 ms frames."""
    audio = b"".join(tone(f, s) + silence(gap) for f, s in notes)
    return audio + bytes([ULAW_SILENCE]) * (-len(audio) % FRAME_BYTES)


@cache
def callee_hello() -> bytes:
    """What a simulated callee says when it picks up ("hel-lo?", about one second)."""
    return melody((392.0, 0.25), (523.3, 0.35), (440.0, 0.3))


@cache
def greeting() -> bytes:
    """The demo agent's greeting (a rising chime)."""
    return melody((523.3, 0.2), (659.3, 0.2), (784.0, 0.35))
