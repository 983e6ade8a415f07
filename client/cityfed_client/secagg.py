"""The city's side of a secure sum: its keys, its shares, its masked input, its reveals.

The city's seeds are derived from a secret that never leaves its node state
folder (``secagg.key``, 0600), per run and per aggregation, so that nothing
needs to be kept between the steps and a seed revealed in one sum unmasks no
other. The city does not trust the coordinator that relays everything; before
each step it checks, against what its own audit trail says it already answered:

- the roster holds the city once, under its own keys and name, and the
  threshold is more than half the roster (else two halves could each be
  unmasked) and at least the federation's ``min_cities``;
- the masked input and the reveals are for the very roster the city sealed its
  shares to (the keys cannot be swapped between steps);
- each step of an aggregation is answered for one question only: the same
  question again gets the same answer; a different masked input or a second
  set of reveals for the same aggregation is refused. So the coordinator never
  gets both a city's self-mask seed and its pairwise seed for one sum;
- reveals cover only cities that sent shares, at least ``threshold`` survivors,
  the city itself among them.

See :mod:`cityfed.federation.secagg` for the protocol and its cryptography.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cityfed.config.spec import FederationSpec, federation_digest
from cityfed.core.fixedpoint import add, encode, negate, to_bytes
from cityfed.federation.secagg import (
    SHARE_BYTES,
    SecAgg,
    SecAggKeys,
    commitment,
    derive,
    identity_public,
    keys_signed_by,
    mask,
    open_share,
    pair_key,
    public_key,
    roster_digest,
    seal_share,
    sign_keys,
    split,
)
from cityfed.files import write_atomic

__all__ = ["SecAggRefusedError", "SecureCity", "audit_fields", "context_of", "load_secret"]


class SecAggRefusedError(Exception):
    """The city will not take this step; the message says why."""


def load_secret(path: Path) -> bytes:
    """The node's secure-aggregation secret, created (32 random bytes, 0600) on first use."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = secrets.token_bytes(32)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(path, data, mode=0o600)
        return data
    if len(data) != 32:
        raise SecAggRefusedError(
            f"{path.name} is not a 32-byte secret; remove it to make a new one"
        )
    return data


def context_of(fed: FederationSpec, sa: SecAgg) -> str:
    """What every key of one sum is bound to: the federation, the aggregation, the roster."""
    return f"{federation_digest(fed)}|{sa.aggregation}|{roster_digest(sa.roster)}"


def audit_fields(sa: SecAgg, question: str, points: Sequence[str] = ()) -> dict[str, Any]:
    """What the audit trail keeps of a step (indices and digests, never seeds).

    ``question`` is the digest of the statistics asked
    (:func:`~cityfed.federation.protocol.question_digest`), ``points`` those of
    the Newton points (:func:`~cityfed.federation.protocol.point_digests`).
    """
    return {
        "question": question if sa.step == "masked" else None,
        "points": list(points) if sa.step == "masked" else [],
        "aggregation": sa.aggregation,
        "step": sa.step,
        "threshold": sa.threshold,
        "roster": roster_digest(sa.roster) if sa.roster else None,
        "included": list(sa.included),
        "survivors": list(sa.survivors),
    }


@dataclass(frozen=True)
class _Seeds:
    cipher: bytes
    mask: bytes
    self_mask: bytes


class SecureCity:
    """One city in the secure sums of one run.

    Parameters
    ----------
    secret : bytes
        The node's secret (:func:`load_secret`).
    run : str
        The run (seeds are per run and aggregation).
    city : str
        The city's name, as the roster must list it.
    fed : FederationSpec
        The federation of the run.
    answered : Mapping[tuple[int, str], Mapping[str, Any]]
        What the audit trail says this run already answered, by (aggregation,
        step): the question's digest and its :func:`audit_fields`.
    identity : bytes, optional
        The node's Ed25519 identity seed: when the federation lists the cities'
        keys (``[privacy.city_keys]``) the city signs its keys with it, and
        checks every other member's signature against the list.
    """

    def __init__(
        self,
        secret: bytes,
        run: str,
        city: str,
        fed: FederationSpec,
        answered: Mapping[tuple[int, str], Mapping[str, Any]],
        identity: bytes | None = None,
    ) -> None:
        self.identity = identity
        self.secret = secret
        self.run = run
        self.city = city
        self.fed = fed
        self.answered = answered

    def _seeds(self, aggregation: int) -> _Seeds:
        parts = (self.run, str(aggregation))
        return _Seeds(
            derive(self.secret, *parts, "cipher"),
            derive(self.secret, *parts, "mask"),
            derive(self.secret, *parts, "self"),
        )

    def keys(self, aggregation: int) -> SecAggKeys:
        """The ``keys`` step: the city's public keys and self-mask commitment."""
        seeds = self._seeds(aggregation)
        keys = SecAggKeys(
            public_key(seeds.cipher), public_key(seeds.mask), commitment(seeds.self_mask)
        )
        if self.fed.city_keys and self.identity is not None:
            keys = sign_keys(self.identity, keys, self.city, self._key_context(aggregation))
        return keys

    def _key_context(self, aggregation: int) -> str:
        """What a city's signature binds its keys to: the federation and the aggregation."""
        return f"{federation_digest(self.fed)}|{aggregation}"

    def _check_signatures(self, sa: SecAgg) -> None:
        """With ``[privacy.city_keys]``: every member's keys signed by the key listed for it."""
        listed = dict(self.fed.city_keys)
        if not listed:
            return
        if self.identity is None or listed.get(self.city) != identity_public(self.identity):
            raise SecAggRefusedError(
                f"[privacy.city_keys] does not list this node's identity key for {self.city!r} "
                "(see `cityfed city identity`)"
            )
        context = self._key_context(sa.aggregation)
        for member in sa.roster:
            key = listed.get(member.city)
            if key is None or not keys_signed_by(key, member.keys, member.city, context):
                raise SecAggRefusedError(
                    f"secure aggregation: the keys relayed for {member.city!r} are not signed "
                    "by the key [privacy.city_keys] lists for it"
                )

    def check(self, sa: SecAgg, digest: str, question: str, points: Sequence[str] = ()) -> None:
        """Refuse a step already answered for a different question, or out of order.

        ``digest`` is the instruction's, ``question`` that of the statistics it
        asks, ``points`` those of its Newton points.

        Raises
        ------
        SecAggRefusedError
            Naming the aggregation and step.
        """
        earlier = self.answered.get((sa.aggregation, sa.step))
        if earlier is not None and earlier.get("instruction") != digest:
            raise SecAggRefusedError(
                f"secure aggregation {sa.aggregation}: step {sa.step!r} was already answered "
                "for a different question; each step is answered once"
            )
        if sa.step == "masked":
            for (aggregation, step), entry in self.answered.items():
                if (
                    step == "masked"
                    and aggregation != sa.aggregation
                    and (entry.get("question") == question)
                ):
                    raise SecAggRefusedError(
                        f"secure aggregation {sa.aggregation}: these statistics were already "
                        f"masked for secure sum {aggregation} of this run; two sums of one "
                        "question over different cities would give a city's statistics away"
                    )
                if (
                    step == "masked"
                    and aggregation != sa.aggregation
                    and (set(points) & set(entry.get("points") or ()))
                ):
                    raise SecAggRefusedError(
                        f"secure aggregation {sa.aggregation}: a Newton point asked was already "
                        f"evaluated for secure sum {aggregation} of this run; a point is "
                        "evaluated in one secure sum only"
                    )
        if sa.step in ("masked", "confirm", "unmask"):
            shared = self.answered.get((sa.aggregation, "shares"))
            if shared is None or shared.get("roster") != roster_digest(sa.roster):
                raise SecAggRefusedError(
                    f"secure aggregation {sa.aggregation}: step {sa.step!r} for a roster "
                    "this city did not seal its shares to"
                )
            if shared.get("threshold") != sa.threshold:
                raise SecAggRefusedError(
                    f"secure aggregation {sa.aggregation}: the threshold changed from "
                    f"{shared.get('threshold')} to {sa.threshold}"
                )
        if sa.step in ("confirm", "unmask"):
            masked = self.answered.get((sa.aggregation, "masked"))
            if masked is None or list(masked.get("included", ())) != list(sa.included):
                raise SecAggRefusedError(
                    f"secure aggregation {sa.aggregation}: reveals asked for cities other "
                    "than those this city masked its input against"
                )
        if sa.step == "unmask":
            confirmed = self.answered.get((sa.aggregation, "confirm"))
            if confirmed is None or not set(sa.survivors) <= set(confirmed.get("survivors", ())):
                raise SecAggRefusedError(
                    f"secure aggregation {sa.aggregation}: reveals asked for survivors this "
                    "city did not confirm the sum with"
                )

    def _me(self, sa: SecAgg) -> int:
        mine = self.keys(sa.aggregation)
        indices = sorted(m.index for m in sa.roster)
        if indices != list(range(1, len(indices) + 1)):
            raise SecAggRefusedError("secure aggregation: the roster's indices are not 1..N")
        if len({m.city for m in sa.roster}) != len(sa.roster):
            raise SecAggRefusedError("secure aggregation: a city is listed twice in the roster")
        keys = [k for m in sa.roster for k in (m.keys.cipher_key, m.keys.mask_key)]
        if len(set(keys)) != len(keys):
            raise SecAggRefusedError("secure aggregation: two roster entries share a key")
        own = [m for m in sa.roster if m.keys == mine]
        if len(own) != 1 or own[0].city != self.city:
            raise SecAggRefusedError(
                "secure aggregation: this city is not in the roster under its own keys"
            )
        self._check_signatures(sa)
        n = len(sa.roster)
        floor = max(self.fed.min_cities, n // 2 + 1, 2)
        if not floor <= sa.threshold <= n:
            raise SecAggRefusedError(
                f"secure aggregation: threshold {sa.threshold} for {n} cities; this city "
                f"needs at least {floor} (more than half, and min_cities)"
            )
        return own[0].index

    def _subset(self, sa: SecAgg, indices: Sequence[int], what: str, me: int) -> None:
        known = {m.index for m in sa.roster}
        if len(set(indices)) != len(indices) or not set(indices) <= known:
            raise SecAggRefusedError(f"secure aggregation: the {what} are not cities of the roster")
        if len(indices) < sa.threshold:
            raise SecAggRefusedError(
                f"secure aggregation: {len(indices)} {what}, fewer than the threshold "
                f"{sa.threshold}"
            )
        if me not in indices:
            raise SecAggRefusedError(f"secure aggregation: this city is not among the {what}")

    def shares(self, sa: SecAgg) -> tuple[tuple[int, bytes], ...]:
        """The ``shares`` step: this city's seeds split for, and sealed to, every member."""
        me = self._me(sa)
        seeds = self._seeds(sa.aggregation)
        n = len(sa.roster)
        self_shares = split(seeds.self_mask, sa.threshold, n)
        mask_shares = split(seeds.mask, sa.threshold, n)
        context = context_of(self.fed, sa)
        sealed = []
        for member in sa.roster:
            k = member.index - 1  # Shamir's x-coordinate is the index
            key = pair_key(seeds.cipher, member.keys.cipher_key, "share", context)
            plain = self_shares[k] + mask_shares[k]
            sealed.append((member.index, seal_share(key, me, member.index, plain, context)))
        return tuple(sealed)

    def masked(self, sa: SecAgg, values: Sequence[int]) -> bytes:
        """The ``masked`` step: ``values`` plus the self mask and the pairwise masks."""
        me = self._me(sa)
        self._subset(sa, sa.included, "cities that sent shares", me)
        seeds = self._seeds(sa.aggregation)
        count = len(values)
        context = context_of(self.fed, sa)
        out = add(encode(values), mask(seeds.self_mask, count))
        for index in sa.included:
            if index == me:
                continue
            member = sa.member(index)
            pairwise = mask(pair_key(seeds.mask, member.keys.mask_key, "mask", context), count)
            out = add(out, pairwise if me < index else negate(pairwise))
        return to_bytes(out)

    def _with_survivors(self, sa: SecAgg) -> int:
        """Check the survivors (``confirm`` and ``unmask``); return this city's index.

        Raises
        ------
        SecAggRefusedError
            If the survivors are not cities that sent shares, fewer than the
            threshold, or leave this city out.
        """
        me = self._me(sa)
        self._subset(sa, sa.included, "cities that sent shares", me)
        self._subset(sa, sa.survivors, "survivors", me)
        if not set(sa.survivors) <= set(sa.included):
            raise SecAggRefusedError("secure aggregation: a survivor did not send shares")
        return me

    def confirm(self, sa: SecAgg) -> None:
        """The ``confirm`` step: the city is still there, for these survivors.

        Raises
        ------
        SecAggRefusedError
            As :meth:`_with_survivors`.
        """
        self._with_survivors(sa)

    def unmask(self, sa: SecAgg) -> tuple[tuple[int, bytes], ...]:
        """The ``unmask`` step: shares of the survivors' self seeds, of the others' mask seeds."""
        me = self._with_survivors(sa)
        seeds = self._seeds(sa.aggregation)
        context = context_of(self.fed, sa)
        senders = [sender for sender, _ in sa.inbox]
        if len(set(senders)) != len(senders) or set(senders) != set(sa.included):
            raise SecAggRefusedError(
                "secure aggregation: the shares relayed are not one from each city that sent shares"
            )
        survivors = set(sa.survivors)
        revealed = []
        for sender, sealed in sa.inbox:
            member = sa.member(sender)
            key = pair_key(seeds.cipher, member.keys.cipher_key, "share", context)
            try:
                plain = open_share(key, sealed, sender, me, context)
            except ValueError as exc:
                raise SecAggRefusedError(f"secure aggregation: {exc}") from None
            if len(plain) != 2 * SHARE_BYTES:
                raise SecAggRefusedError(
                    f"secure aggregation: the share from city {sender} is malformed"
                )
            self_share, mask_share = plain[:SHARE_BYTES], plain[SHARE_BYTES:]
            revealed.append((sender, self_share if sender in survivors else mask_share))
        return tuple(revealed)
