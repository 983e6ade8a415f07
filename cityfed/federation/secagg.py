"""Secure aggregation (Bonawitz et al., CCS 2017): the messages and their cryptography.

One secure sum takes five exchanges. Every city ``u`` of the roster

1. **keys**: advertises two X25519 public keys, ``c_u`` (to receive shares) and
   ``s_u`` (for pairwise masks), and a SHA-256 commitment to its self-mask seed
   ``b_u``;
2. **shares**: splits the seeds of ``s_u`` and ``b_u`` into Shamir shares
   (threshold ``t``), one per city, each sealed with AES-GCM under the key agreed
   from ``c_u`` and the recipient's ``c_v``; the coordinator only relays them;
3. **masked**: sends its statistics as exact fixed-point integers
   (:mod:`cityfed.core.fixedpoint`) plus ``PRG(b_u)`` plus, for every other city
   ``v`` that sent shares, ``+PRG(s_uv)`` if ``u < v`` else ``-PRG(s_uv)``,
   where ``s_uv`` is agreed from ``s_u`` and ``s_v``: the pairwise masks cancel
   in the sum;
4. **confirm**: says it is still there (the consistency round), for the set of
   cities whose masked input arrived;
5. **unmask**: reveals, for every city that confirmed, its share of that city's
   ``b`` and, for every city that sent shares but did not confirm, its share of
   that city's ``s`` seed, never both for one city. With ``t`` answers the
   coordinator removes the self masks and the dropped cities' pairwise masks,
   and holds the exact sum of the confirmed cities' statistics and nothing else.

The keys are fresh for every aggregation (derived by each city from a secret
that never leaves it), so a seed revealed in one aggregation unmasks nothing in
another. Cryptography comes from maintained libraries: X25519, HKDF-SHA256,
ChaCha20, AES-GCM and Ed25519 from ``cryptography``; Shamir's scheme over the
prime field of 2**521 - 1 is :mod:`cityfed.core.shamir` (which says why it is not
PyCryptodome's). Nothing here imports Flower.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cityfed.config.spec import IDENTITY_PREFIX, parse_identity
from cityfed.core import shamir
from cityfed.core.fixedpoint import LIMBS, Limbs, from_bytes

__all__ = [
    "IDENTITY_PREFIX",
    "SHARE_BYTES",
    "STEPS",
    "Member",
    "SecAgg",
    "SecAggKeys",
    "Step",
    "combine",
    "commitment",
    "derive",
    "identity_public",
    "keys_signed_by",
    "mask",
    "open_share",
    "pair_key",
    "parse_identity",
    "public_key",
    "roster_digest",
    "seal_share",
    "sign_keys",
    "split",
]

#: The exchanges of one secure sum (the statistics travel in ``masked``).
Step = Literal["keys", "shares", "masked", "confirm", "unmask"]
STEPS: tuple[Step, ...] = ("keys", "shares", "masked", "confirm", "unmask")

#: Bytes of a seed: a private key's or the self mask's.
SEED_BYTES = 32
#: Bytes of one Shamir share of a seed (:mod:`cityfed.core.shamir`).
SHARE_BYTES = shamir.SHARE_BYTES


@dataclass(frozen=True)
class SecAggKeys:
    """What a city advertises in the ``keys`` step."""

    cipher_key: bytes  # X25519 public key c_u (raw, 32 bytes)
    mask_key: bytes  # X25519 public key s_u
    self_commitment: bytes  # SHA-256 of b_u
    #: Ed25519 signature of the three by the city's identity key (when the
    #: federation lists the cities' keys: ``[privacy.city_keys]``), else empty.
    signature: bytes = b""


@dataclass(frozen=True)
class Member:
    """One city of a secure sum's roster, as the coordinator relays it."""

    index: int  # 1..N: the Shamir x-coordinate and the order of the pairwise signs
    city: str
    keys: SecAggKeys


@dataclass(frozen=True)
class SecAgg:
    """The secure-aggregation part of an instruction.

    Attributes
    ----------
    aggregation : int
        Which secure sum of the run (keys are derived per aggregation).
    step : Step
        The step asked.
    threshold : int
        Shares needed to reconstruct a seed (more than half the roster).
    roster : tuple of Member
        Every city that advertised keys (steps ``shares``, ``masked``, ``unmask``).
    included : tuple of int
        ``masked``, ``unmask``: the indices of the cities that sent shares.
    survivors : tuple of int
        ``confirm``: the indices of the cities whose masked input arrived;
        ``unmask``: of those that confirmed.
    inbox : tuple of (int, bytes)
        ``unmask``: the sealed shares addressed to this city, by sender index.
    """

    aggregation: int
    step: Step
    threshold: int = 0
    roster: tuple[Member, ...] = ()
    included: tuple[int, ...] = ()
    survivors: tuple[int, ...] = ()
    inbox: tuple[tuple[int, bytes], ...] = ()

    def member(self, index: int) -> Member:
        """The roster entry with ``index``.

        Raises
        ------
        KeyError
            If there is none.
        """
        for entry in self.roster:
            if entry.index == index:
                return entry
        raise KeyError(index)


def roster_digest(roster: Sequence[Member]) -> str:
    """``sha256:`` of a roster: what a city binds its shares to."""
    digest = hashlib.sha256()
    for m in roster:
        for part in (str(m.index).encode(), m.city.encode(), *_key_parts(m.keys)):
            digest.update(len(part).to_bytes(4, "little") + part)
    return "sha256:" + digest.hexdigest()


def _key_parts(keys: SecAggKeys) -> tuple[bytes, bytes, bytes]:
    return keys.cipher_key, keys.mask_key, keys.self_commitment


def identity_public(seed: bytes) -> str:
    """A city's identity public key as the federation lists it: ``ed25519:<base64>``."""
    key = Ed25519PrivateKey.from_private_bytes(seed).public_key()
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return IDENTITY_PREFIX + base64.b64encode(raw).decode("ascii")


def _signed_text(keys: SecAggKeys, city: str, context: str) -> bytes:
    parts = (b"cityfed-secagg-keys-v1", context.encode(), city.encode(), *_key_parts(keys))
    return b"".join(len(p).to_bytes(4, "little") + p for p in parts)


def sign_keys(seed: bytes, keys: SecAggKeys, city: str, context: str) -> SecAggKeys:
    """``keys`` signed by the city's identity key (``context``: federation and aggregation)."""
    signature = Ed25519PrivateKey.from_private_bytes(seed).sign(_signed_text(keys, city, context))
    return SecAggKeys(keys.cipher_key, keys.mask_key, keys.self_commitment, signature)


def keys_signed_by(identity: str, keys: SecAggKeys, city: str, context: str) -> bool:
    """Whether ``keys`` carry ``city``'s signature under the listed ``identity`` key."""
    try:
        public = Ed25519PublicKey.from_public_bytes(parse_identity(identity))
        public.verify(keys.signature, _signed_text(keys, city, context))
    except (InvalidSignature, ValueError):
        return False
    return True


def derive(secret: bytes, *context: str) -> bytes:
    """A 32-byte seed from a city's secret and a context (run, aggregation, purpose)."""
    info = "|".join(("cityfed-secagg-v1", *context)).encode()
    return HKDF(hashes.SHA256(), SEED_BYTES, salt=None, info=info).derive(secret)


def public_key(seed: bytes) -> bytes:
    """The raw X25519 public key of a private-key seed."""
    key = X25519PrivateKey.from_private_bytes(seed).public_key()
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def commitment(seed: bytes) -> bytes:
    """SHA-256 of a self-mask seed: checks its reconstruction."""
    return hashlib.sha256(b"cityfed-secagg-self|" + seed).digest()


def pair_key(seed: bytes, peer: bytes, purpose: str, context: str) -> bytes:
    """A 32-byte key agreed by X25519 between ``seed``'s owner and the owner of ``peer``.

    Raises
    ------
    ValueError
        If ``peer`` is not a valid public key (or gives the all-zero secret).
    """
    shared = X25519PrivateKey.from_private_bytes(seed).exchange(
        X25519PublicKey.from_public_bytes(peer)
    )
    info = f"cityfed-secagg-v1|{purpose}|{context}".encode()
    return HKDF(hashes.SHA256(), SEED_BYTES, salt=None, info=info).derive(shared)


def mask(key: bytes, count: int) -> Limbs:
    """``count`` pseudo-random ring elements: the ChaCha20 keystream of ``key``."""
    stream = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()
    return from_bytes(stream.update(bytes(8 * LIMBS * count)), count)


def split(seed: bytes, threshold: int, count: int) -> list[bytes]:
    """Shamir shares of a 32-byte seed for indices ``1..count`` (any ``threshold`` rebuild it)."""
    return shamir.split(seed, threshold, count)


def combine(shares: Sequence[tuple[int, bytes]]) -> bytes:
    """The 32-byte seed from ``(index, share)`` pairs (exactly ``threshold`` of them).

    Raises
    ------
    ValueError
        If the shares are malformed or do not belong together.
    """
    return shamir.combine(shares, SEED_BYTES)


def seal_share(key: bytes, sender: int, recipient: int, share: bytes, context: str) -> bytes:
    """AES-GCM of ``sender | recipient | share`` (a random nonce in front)."""
    nonce = os.urandom(12)
    plain = sender.to_bytes(4, "little") + recipient.to_bytes(4, "little") + share
    return nonce + AESGCM(key).encrypt(nonce, plain, context.encode())


def open_share(key: bytes, sealed: bytes, sender: int, recipient: int, context: str) -> bytes:
    """The share sealed by :func:`seal_share`, checked to be from ``sender`` to ``recipient``.

    Raises
    ------
    ValueError
        If it was tampered with, sealed for another pair or another aggregation.
    """
    try:
        plain = AESGCM(key).decrypt(sealed[:12], sealed[12:], context.encode())
    except (InvalidTag, ValueError):
        raise ValueError(f"the share from city {sender} does not open (tampered?)") from None
    if (
        int.from_bytes(plain[:4], "little") != sender
        or int.from_bytes(plain[4:8], "little") != recipient
    ):
        raise ValueError(f"the share from city {sender} was sealed for another city")
    return plain[8:]
