"""Shamir's secret sharing over GF(2^8), in the layout Vault uses.

A share is the polynomial values for every secret byte followed by one byte holding the x
coordinate, so a share of a 32-byte key is 33 bytes. x coordinates are distinct and non-zero.
"""

from __future__ import annotations

import secrets

_EXP = [0] * 512
_LOG = [0] * 256


def _build_tables() -> None:
    value = 1
    for power in range(255):
        _EXP[power] = value
        _LOG[value] = power
        # multiply by the generator 3 in GF(2^8) with the AES polynomial 0x11b
        doubled = value << 1
        if doubled & 0x100:
            doubled ^= 0x11B
        value = doubled ^ value
    for power in range(255, 512):
        _EXP[power] = _EXP[power - 255]


_build_tables()


def _mul(a: int, b: int) -> int:
    if a == 0 or b == 0:
        return 0
    return _EXP[_LOG[a] + _LOG[b]]


def _div(a: int, b: int) -> int:
    if b == 0:
        raise ZeroDivisionError("division by zero in GF(256)")
    if a == 0:
        return 0
    return _EXP[(_LOG[a] - _LOG[b]) % 255]


class CombineError(ValueError):
    """Shares that cannot be combined (lengths differ, duplicate x coordinates ...)."""


def split(secret: bytes, parts: int, threshold: int) -> list[bytes]:
    if not 2 <= threshold <= parts <= 255:
        raise ValueError("need 2 <= threshold <= parts <= 255")
    xs: list[int] = []
    while len(xs) < parts:
        x = 1 + secrets.randbelow(255)
        if x not in xs:
            xs.append(x)
    out = [bytearray() for _ in range(parts)]
    for byte in secret:
        coefficients = [byte] + [secrets.randbelow(256) for _ in range(threshold - 1)]
        for index, x in enumerate(xs):
            y = 0
            for coefficient in reversed(coefficients):  # Horner
                y = _mul(y, x) ^ coefficient
            out[index].append(y)
    for index, x in enumerate(xs):
        out[index].append(x)
    return [bytes(share) for share in out]


def combine(shares: list[bytes]) -> bytes:
    if len(shares) < 2:
        raise CombineError("less than two parts cannot be used to reconstruct the secret")
    length = len(shares[0])
    if length < 2:
        raise CombineError("parts must be at least two bytes")
    if any(len(share) != length for share in shares):
        raise CombineError("all parts must be the same length")
    xs = [share[-1] for share in shares]
    if len(set(xs)) != len(xs):
        raise CombineError("duplicate part detected")
    secret = bytearray()
    for position in range(length - 1):
        value = 0
        for i, x_i in enumerate(xs):
            basis = 1
            for j, x_j in enumerate(xs):
                if i != j:
                    basis = _mul(basis, _div(x_j, x_j ^ x_i))
            value ^= _mul(shares[i][position], basis)
        secret.append(value)
    return bytes(secret)
