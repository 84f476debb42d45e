"""G.711 (ITU-T): μ-law (PCMU) and A-law (PCMA) 8-bit companded audio, 8,000 samples a second.

The agent's stream is always μ-law; a callee's leg may be either. Converting one to the other is
a byte-for-byte mapping, done with `bytes.translate` and a 256-byte table (as fast as a copy),
built here once from the G.711 companding curves (Python's `audioop`, which did this, is gone in
Python 3.13)."""

SAMPLE_RATE = 8000
FRAME_MS = 20
FRAME_BYTES = SAMPLE_RATE * FRAME_MS // 1000
"""One 20 ms frame: 160 samples, one byte each."""
ULAW_SILENCE = 0xFF
ALAW_SILENCE = 0xD5

_ULAW_BIAS = 0x84
_ULAW_CLIP = 8159
_ULAW_SEGMENT_ENDS = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)
_ALAW_SEGMENT_ENDS = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)


def ulaw_to_linear(code: int) -> int:
    """A μ-law byte as a 16-bit linear sample."""
    code = ~code & 0xFF
    exponent, mantissa = (code >> 4) & 0x07, code & 0x0F
    magnitude = (((mantissa << 3) + _ULAW_BIAS) << exponent) - _ULAW_BIAS
    return -magnitude if code & 0x80 else magnitude


def linear_to_ulaw(sample: int) -> int:
    """A 16-bit linear sample as a μ-law byte (14 significant bits, as G.711 codes them)."""
    value = sample >> 2
    if value < 0:
        value, mask = -value, 0x7F
    else:
        mask = 0xFF
    value = min(value, _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    segment = next((i for i, end in enumerate(_ULAW_SEGMENT_ENDS) if value <= end), 8)
    if segment == 8:
        return 0x7F ^ mask
    return (segment << 4 | (value >> (segment + 1)) & 0x0F) ^ mask


def alaw_to_linear(code: int) -> int:
    """An A-law byte as a 16-bit linear sample."""
    code ^= 0x55
    segment = (code & 0x70) >> 4
    magnitude = (code & 0x0F) << 4
    magnitude += 8 if segment == 0 else 0x108
    if segment > 1:
        magnitude <<= segment - 1
    return magnitude if code & 0x80 else -magnitude


def linear_to_alaw(sample: int) -> int:
    """A 16-bit linear sample as an A-law byte."""
    value = sample >> 3  # A-law codes 13 bits
    if value >= 0:
        mask = 0xD5
    else:
        mask = 0x55
        value = -value - 1
    segment = next((i for i, end in enumerate(_ALAW_SEGMENT_ENDS) if value <= end), 8)
    if segment == 8:
        return 0x7F ^ mask
    code = segment << 4 | ((value >> 1) if segment < 2 else (value >> segment)) & 0x0F
    return code ^ mask


ALAW_TO_ULAW = bytes(linear_to_ulaw(alaw_to_linear(code)) for code in range(256))
"""`alaw.translate(ALAW_TO_ULAW)` is the same audio in μ-law."""
ULAW_TO_ALAW = bytes(linear_to_alaw(ulaw_to_linear(code)) for code in range(256))
"""`ulaw.translate(ULAW_TO_ALAW)` is the same audio in A-law."""
