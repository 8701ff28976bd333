"""Wiegand formats: bit streams checked against independently computed parity, round trips,
refusals, and the D0/D1 pulse train."""

from __future__ import annotations

import pytest

from facelink.access.wiegand import FORMATS, Credential, decode, pack, pulse_train, unpack
from facelink.errors import InvalidParameterException


def _h10301_reference(facility: int, card: int) -> str:
    """H10301 written out by hand: P + 8 facility bits + 16 card bits + P."""
    body = f"{facility:08b}{card:016b}"
    even = body[:12].count("1") % 2  # leading bit makes the first 13 bits even
    odd = 1 - body[12:].count("1") % 2  # trailing bit makes the last 13 bits odd
    return f"{even}{body}{odd}"


@pytest.mark.parametrize("facility,card", [(18, 12345), (0, 0), (255, 65535), (1, 1), (123, 4567)])
def test_h10301_bits_match_the_reference(facility, card):
    bits = Credential("H10301", facility, card).bits()
    assert "".join(map(str, bits)) == _h10301_reference(facility, card)
    assert len(bits) == 26


def test_known_h10301_vector():
    # facility 18, card 12345: 0 00010010 0011000000111001 1 (published converters agree)
    assert "".join(map(str, Credential("H10301", 18, 12345).bits())) == "00001001000110000001110011"


@pytest.mark.parametrize("fmt,facility,card", [("H10301", 18, 12345), ("H10306", 4242, 65000),
                                                ("H10304", 65535, 524287), ("H10304", 7, 300000)])
def test_round_trip_through_bits_and_bytes(fmt, facility, card):
    cred = Credential(fmt, facility, card)
    bits = cred.bits()
    assert len(bits) == FORMATS[fmt].bits
    assert decode(unpack(pack(bits), len(bits))) == cred
    assert Credential.parse(str(cred)) == cred


def test_parity_errors_are_refused():
    bits = Credential("H10306", 100, 200).bits()
    for i in range(len(bits)):  # any single flipped bit breaks a parity
        flipped = list(bits)
        flipped[i] ^= 1
        with pytest.raises(InvalidParameterException, match="parity"):
            decode(flipped)


@pytest.mark.parametrize("text", ["H10301:256:1", "H10301:1:65536", "X99:1:1", "H10301:1", "H10301:a:1", ""])
def test_bad_credentials_are_typed_errors(text):
    with pytest.raises(InvalidParameterException):
        Credential.parse(text)


def test_pulse_train_follows_h10301_timing():
    bits = Credential("H10301", 18, 12345).bits()
    pulses = pulse_train(bits)
    assert [p.line for p in pulses] == ["D1" if b else "D0" for b in bits]
    assert all(p.width_us == 50 for p in pulses)
    assert [p.start_us for p in pulses] == [2000 * i for i in range(26)]
    with pytest.raises(InvalidParameterException):
        pulse_train(bits, width_us=500)
