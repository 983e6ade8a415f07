"""Exact fixed-point numbers in the ring of integers modulo 2**320, for secure sums.

Secure aggregation adds masked integers modulo a power of two: the masks cancel
only in exact integer arithmetic. A statistic ``v`` (a double) is encoded as the
integer ``round(v * 2**160)`` modulo ``2**320``, held as five little-endian
64-bit limbs; sums of encodings are exact, so the only error is each city's
rounding to ``2**-160`` (about 7e-49, absolute).

The ring is wide enough for the federations CityFed promises: 10,000 cities of
10**8 rows with features from 1e-6 to 1e9 give sums of squares up to about
1e30 (2**100); one city may encode magnitudes up to ``2**144`` (2.2e43) and
16,384 of them still sum inside the signed half of the ring, with 2**-160 of
resolution below. A value outside that range is refused with ``ValueError``
rather than wrapped around.

Encoding and decoding go through Python's exact integers (``float.as_integer_ratio``
and correctly rounded ``int / int``); sums and masks are vectorised over limbs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fractions import Fraction

import numpy as np
import numpy.typing as npt

from cityfed.typing import FloatArray

__all__ = [
    "FRACTION_BITS",
    "LIMBS",
    "MAX_MAGNITUDE",
    "MAX_TERMS",
    "RING_BITS",
    "Limbs",
    "add",
    "decode",
    "decode_fractions",
    "encode",
    "fixed",
    "from_bytes",
    "negate",
    "subtract",
    "to_bytes",
    "total",
]

#: 64-bit limbs per number, least significant first.
LIMBS = 5
RING_BITS = 64 * LIMBS
#: Bits after the binary point: the resolution is ``2**-FRACTION_BITS``.
FRACTION_BITS = 160
#: How many encodings may be summed (cities) without leaving the signed half of the ring.
MAX_TERMS = 2**14
#: The largest magnitude one encoding may have (in value units): ``2**144``.
MAX_MAGNITUDE = 2 ** (RING_BITS - 1 - 14 - FRACTION_BITS - 1)

_MODULUS = 1 << RING_BITS
_HALF = 1 << (RING_BITS - 1)
_BOUND = MAX_MAGNITUDE << FRACTION_BITS

#: A vector of ring elements: shape ``(m, LIMBS)``, dtype ``uint64``.
Limbs = npt.NDArray[np.uint64]


def fixed(value: float | Fraction, times: int = 1) -> int:
    """``round(value * times * 2**FRACTION_BITS)`` exactly (ties to even).

    Raises
    ------
    ValueError
        If ``value`` is not finite or the product exceeds :data:`MAX_MAGNITUDE`.
    """
    if isinstance(value, float) and not np.isfinite(value):
        raise ValueError(f"cannot encode {value!r}: not a finite number")
    numerator, denominator = value.as_integer_ratio()
    scaled = Fraction(numerator * times << FRACTION_BITS, denominator)
    result = round(scaled)
    if abs(result) >= _BOUND:
        raise ValueError(
            f"cannot encode {float(value) * times:.6g}: larger than the secure sum's "
            f"range ({float(MAX_MAGNITUDE):.3g})"
        )
    return result


def encode(values: Iterable[int]) -> Limbs:
    """Integers (from :func:`fixed`) as ring elements, two's complement in limbs."""
    rows = [int(v) % _MODULUS for v in values]
    data = b"".join(v.to_bytes(8 * LIMBS, "little") for v in rows)
    return from_bytes(data, len(rows))


def from_bytes(data: bytes, count: int) -> Limbs:
    """``count`` ring elements from ``8 * LIMBS * count`` little-endian bytes.

    Raises
    ------
    ValueError
        If the length does not match.
    """
    if len(data) != 8 * LIMBS * count:
        raise ValueError(f"expected {8 * LIMBS * count} bytes for {count} numbers, got {len(data)}")
    return np.frombuffer(data, dtype="<u8").astype(np.uint64).reshape(count, LIMBS)


def to_bytes(values: Limbs) -> bytes:
    """The little-endian bytes of ring elements (the inverse of :func:`from_bytes`)."""
    return np.ascontiguousarray(values, dtype="<u8").tobytes()


def add(a: Limbs, b: Limbs) -> Limbs:
    """``a + b`` modulo ``2**RING_BITS``, element by element.

    Raises
    ------
    ValueError
        If the shapes differ.
    """
    if a.shape != b.shape:
        raise ValueError(f"cannot add ring vectors of shapes {a.shape} and {b.shape}")
    out = np.empty_like(a)
    carry = np.zeros(a.shape[0], dtype=np.uint64)
    for j in range(LIMBS):
        partial = a[:, j] + b[:, j]  # uint64 arithmetic wraps modulo 2**64
        first = partial < a[:, j]
        out[:, j] = partial + carry
        second = out[:, j] < partial
        carry = (first | second).astype(np.uint64)
    return out


def negate(a: Limbs) -> Limbs:
    """``-a`` modulo ``2**RING_BITS`` (two's complement: invert, add one)."""
    one = np.zeros_like(a)
    one[:, 0] = 1
    return add(np.invert(a), one)


def subtract(a: Limbs, b: Limbs) -> Limbs:
    """``a - b`` modulo ``2**RING_BITS``."""
    return add(a, negate(b))


def total(parts: Sequence[Limbs], count: int) -> Limbs:
    """The sum of ring vectors of ``count`` elements each (zeros when there are none)."""
    result = np.zeros((count, LIMBS), dtype=np.uint64)
    for part in parts:
        result = add(result, part)
    return result


def _signed(values: Limbs) -> list[int]:
    out = []
    for row in np.ascontiguousarray(values, dtype="<u8"):
        v = int.from_bytes(row.tobytes(), "little")
        out.append(v - _MODULUS if v >= _HALF else v)
    return out


def decode_fractions(values: Limbs) -> list[Fraction]:
    """Ring elements back to exact rationals (signed, divided by ``2**FRACTION_BITS``)."""
    return [Fraction(v, 1 << FRACTION_BITS) for v in _signed(values)]


def decode(values: Limbs) -> FloatArray:
    """Ring elements back to doubles, each correctly rounded."""
    return np.array([v / (1 << FRACTION_BITS) for v in _signed(values)], dtype=np.float64)
