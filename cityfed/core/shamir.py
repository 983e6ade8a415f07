"""Shamir's secret sharing over the prime field of the Mersenne prime 2**521 - 1.

Written here rather than taken from PyCryptodome (which Flower's SecAgg+ helpers
use): PyCryptodome splits 16-byte blocks over GF(2^128) with multiplication in
pure Python, about 30 microseconds per product, so a secure sum of 100 cities
(each splitting two seeds for every other city, the coordinator rebuilding a
seed per city) spent over two minutes in it. Over a prime field Python's own
integers do the arithmetic in C: the same sum takes about a second. The scheme is
the textbook one: a random polynomial of degree ``threshold - 1`` whose constant
term is the secret, a share per x-coordinate ``1..count``, Lagrange interpolation
at 0 to rebuild. Coefficients come from :mod:`secrets`.

Any ``threshold`` shares rebuild the secret; fewer say nothing about it (every
secret is equally consistent with them).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

__all__ = ["PRIME", "SHARE_BYTES", "combine", "split"]

#: The field's modulus: the Mersenne prime 2**521 - 1 (a 32-byte secret fits many times).
PRIME = (1 << 521) - 1
#: Bytes of one share (an element of the field, little-endian).
SHARE_BYTES = 66


def split(secret: bytes, threshold: int, count: int) -> list[bytes]:
    """Shares of ``secret`` (at most 64 bytes) for x = 1..count; any ``threshold`` rebuild it.

    Raises
    ------
    ValueError
        If ``threshold`` is not in ``1..count`` or the secret is too long.
    """
    if not 1 <= threshold <= count:
        raise ValueError(f"threshold {threshold} for {count} shares")
    if len(secret) > 64:
        raise ValueError("a secret of more than 64 bytes")
    coefficients = [int.from_bytes(secret, "little")]
    coefficients += [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    shares = []
    for x in range(1, count + 1):
        value = 0
        for c in reversed(coefficients):  # Horner
            value = (value * x + c) % PRIME
        shares.append(value.to_bytes(SHARE_BYTES, "little"))
    return shares


def combine(shares: Sequence[tuple[int, bytes]], size: int = 32) -> bytes:
    """The ``size``-byte secret from ``(x, share)`` pairs (Lagrange interpolation at 0).

    Raises
    ------
    ValueError
        If two shares have the same x, a share is malformed, or the result does not
        fit in ``size`` bytes (the shares do not belong together).
    """
    xs = [int(x) for x, _ in shares]
    if len(set(xs)) != len(xs) or any(x < 1 for x in xs):
        raise ValueError("shares with repeated or invalid x-coordinates")
    ys = []
    for _, share in shares:
        if len(share) != SHARE_BYTES:
            raise ValueError(f"a share is not {SHARE_BYTES} bytes")
        y = int.from_bytes(share, "little")
        if y >= PRIME:
            raise ValueError("a share is not an element of the field")
        ys.append(y)
    secret = 0
    for i, (xi, yi) in enumerate(zip(xs, ys, strict=True)):
        numerator, denominator = 1, 1
        for j, xj in enumerate(xs):
            if j != i:
                numerator = numerator * xj % PRIME
                denominator = denominator * (xj - xi) % PRIME
        secret = (secret + yi * numerator * pow(denominator, -1, PRIME)) % PRIME
    if secret >= 1 << (8 * size):
        raise ValueError("the shares do not rebuild a secret of this size")
    return secret.to_bytes(size, "little")
