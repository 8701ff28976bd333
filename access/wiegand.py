"""Wiegand card formats: a user's credential as facility + card number, its bit stream with
parity, and the D0/D1 pulse train a Wiegand input expects.

Formats (HID names; bit 1 is sent first, "P" is a parity bit):

    H10301  26 bits  P + 8-bit facility + 16-bit card + P   even over bits 2-13, odd over 14-25
    H10306  34 bits  P + 16-bit facility + 16-bit card + P  even over bits 2-17, odd over 18-33
    H10304  37 bits  P + 16-bit facility + 19-bit card + P  even over bits 2-19, odd over 19-36

A credential is written ``H10301:<facility>:<card>`` (e.g. ``H10301:18:12345``) in the CLI, the
database, exports and change sets.
"""

from __future__ import annotations

from dataclasses import dataclass

from facelink.errors import InvalidParameterException


def is_number(text: str) -> bool:
    """ASCII digits only, at most 12 of them (``str.isdigit`` also takes "²" or "٣", which ``int``
    then refuses or reads as another number)."""
    return 0 < len(text) <= 12 and text.isascii() and text.isdigit()


@dataclass(frozen=True)
class WiegandFormat:
    name: str
    bits: int
    facility_bits: int
    card_bits: int
    even: tuple[int, int]  # 1-based inclusive range of bits covered by the leading even parity
    odd: tuple[int, int]  # ... and by the trailing odd parity


FORMATS: dict[str, WiegandFormat] = {f.name: f for f in (
    WiegandFormat("H10301", 26, 8, 16, (2, 13), (14, 25)),
    WiegandFormat("H10306", 34, 16, 16, (2, 17), (18, 33)),
    WiegandFormat("H10304", 37, 16, 19, (2, 19), (19, 36)),
)}


@dataclass(frozen=True)
class Credential:
    """A badge: a Wiegand format, a facility code and a card number."""

    format: str
    facility: int
    card: int

    def __post_init__(self) -> None:
        fmt = FORMATS.get(self.format)
        if fmt is None:
            raise InvalidParameterException(f"unknown credential format {self.format!r}: "
                                            f"one of {', '.join(FORMATS)}")
        if not 0 <= self.facility < (1 << fmt.facility_bits):
            raise InvalidParameterException(f"{self.format} facility code must be 0..{(1 << fmt.facility_bits) - 1}")
        if not 0 <= self.card < (1 << fmt.card_bits):
            raise InvalidParameterException(f"{self.format} card number must be 0..{(1 << fmt.card_bits) - 1}")

    @classmethod
    def parse(cls, text: str) -> Credential:
        """``H10301:18:12345`` -> Credential; anything else is an InvalidParameterException."""
        parts = str(text).strip().split(":")
        if len(parts) != 3 or not is_number(parts[1]) or not is_number(parts[2]):
            raise InvalidParameterException(
                f"credential {text!r} is not FORMAT:FACILITY:CARD (e.g. H10301:18:12345)")
        return cls(parts[0].upper(), int(parts[1]), int(parts[2]))

    def __str__(self) -> str:
        return f"{self.format}:{self.facility}:{self.card}"

    @property
    def wiegand_format(self) -> WiegandFormat:
        return FORMATS[self.format]

    def bits(self) -> list[int]:
        """The bit stream, first bit first, parity included."""
        fmt = self.wiegand_format
        data = (self.facility << fmt.card_bits) | self.card
        n_data = fmt.facility_bits + fmt.card_bits
        bits = [0] + [(data >> (n_data - 1 - i)) & 1 for i in range(n_data)] + [0]
        bits[0] = _parity(bits, fmt.even) % 2  # even parity: total ones in range + P is even
        bits[-1] = 1 - _parity(bits, fmt.odd) % 2  # odd parity
        return bits


def _parity(bits: list[int], span: tuple[int, int]) -> int:
    return sum(bits[span[0] - 1:span[1]])


def decode(bits: list[int]) -> Credential:
    """A received bit stream -> Credential; wrong length or parity is an InvalidParameterException."""
    fmt = next((f for f in FORMATS.values() if f.bits == len(bits)), None)
    if fmt is None:
        raise InvalidParameterException(f"no known Wiegand format has {len(bits)} bits")
    if (_parity(bits, fmt.even) + bits[0]) % 2 != 0 or (_parity(bits, fmt.odd) + bits[-1]) % 2 != 1:
        raise InvalidParameterException(f"{fmt.name}: parity error")
    if fmt.even[0] != 2 or fmt.odd[1] != fmt.bits - 1:
        raise InvalidParameterException(f"{fmt.name}: unsupported parity layout")
    data = 0
    for b in bits[1:-1]:
        data = (data << 1) | b
    return Credential(fmt.name, data >> fmt.card_bits, data & ((1 << fmt.card_bits) - 1))


def pack(bits: list[int]) -> bytes:
    """Bits to bytes, first bit in the most significant position, zero-padded (OSDP raw card data)."""
    out = bytearray((len(bits) + 7) // 8)
    for i, b in enumerate(bits):
        if b:
            out[i // 8] |= 0x80 >> (i % 8)
    return bytes(out)


def unpack(data: bytes, n_bits: int) -> list[int]:
    return [(data[i // 8] >> (7 - i % 8)) & 1 for i in range(n_bits)]


# -- the D0/D1 wire ---------------------------------------------------------------------------
PULSE_WIDTH_US = 50  # H10301 convention: 20-100 us low pulse
PULSE_INTERVAL_US = 2000  # 200 us - 20 ms between pulses; 2 ms is what most panels expect


@dataclass(frozen=True)
class Pulse:
    line: str  # "D0" (a 0 bit) or "D1" (a 1 bit); both idle high, the pulse pulls the line low
    start_us: int
    width_us: int


def pulse_train(bits: list[int], width_us: int = PULSE_WIDTH_US,
                interval_us: int = PULSE_INTERVAL_US) -> list[Pulse]:
    """One low pulse per bit on D0 (0) or D1 (1), every ``interval_us``."""
    if not 20 <= width_us <= 100 or not 200 <= interval_us <= 20000 or interval_us <= width_us:
        raise InvalidParameterException("Wiegand pulses: width 20-100 us, interval 200 us - 20 ms")
    return [Pulse("D1" if b else "D0", i * interval_us, width_us) for i, b in enumerate(bits)]
