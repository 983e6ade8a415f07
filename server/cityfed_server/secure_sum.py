"""The coordinator's side of a secure sum: relay keys and shares, sum masked inputs, unmask.

Five exchanges (see :mod:`cityfed.federation.secagg`): ``keys``, ``shares``, the
statistics instruction itself (``masked``), ``confirm`` (Bonawitz et al.'s
consistency round: who is still there) and ``unmask``. The coordinator holds
masked vectors that look uniform, the sealed shares it cannot open, and at the
end the sum of the statistics of the cities that confirmed, exact (modular
integers) and nothing else about any one city.

A city that fails after sending its shares but before it confirms is *dropped*
(its masked input, if it came, is set aside): the others reveal their shares of
its pairwise-mask seed and its masks are removed; its self mask is never
revealed, so its input stays hidden. A city that fails after confirming is
still *in the sum*: the others reveal their shares of its self-mask seed. Below the threshold
(more than half the roster, and ``min_cities``) at any step the sum cannot be
unmasked and the run stops with a one-line error. Every reconstructed seed is
checked against what its city advertised (public key, commitment), so a wrong
share is caught, not summed. No Flower import.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from cityfed.config.spec import federation_digest
from cityfed.core.fixedpoint import LIMBS, Limbs, add, from_bytes, subtract, total
from cityfed.errors import FederationError
from cityfed.federation.exchange import Exchange
from cityfed.federation.protocol import CityReply, Instruction
from cityfed.federation.secagg import (
    Member,
    SecAgg,
    SecAggKeys,
    combine,
    commitment,
    keys_signed_by,
    mask,
    pair_key,
    public_key,
    roster_digest,
)

__all__ = ["SecureSum", "secure_sum", "threshold_for"]

#: Records one reply of one exchange (the run's bookkeeping of fates and outcomes).
Recorder = Callable[[int, CityReply, Instruction], None]


@dataclass(frozen=True)
class SecureSum:
    """The result of one secure sum.

    Attributes
    ----------
    total : Limbs
        The sum of the summed cities' vectors (ring elements).
    summed : list of int
        Nodes whose masked input is in the sum.
    cities : list of str
        Their names, as they advertised their keys.
    answered : list of int
        Nodes that took every step to the end (those still in the run).
    bytes_received : int
        Bytes of keys, sealed shares, masked vectors and reveals received.
    """

    total: Limbs
    summed: list[int]
    cities: list[str]
    answered: list[int]
    bytes_received: int


def threshold_for(cities: int, min_cities: int) -> int:
    """Shares needed to unmask: more than half the roster, and at least ``min_cities``."""
    return max(min_cities, cities // 2 + 1, 2)


def _need(count: int, threshold: int, what: str, fed: str) -> None:
    if count < threshold:
        raise FederationError(
            f"{fed}: secure aggregation: only {count} cities {what}; the sum needs at "
            f"least {threshold} (the threshold) to be unmasked, so the run stops"
        )


def secure_sum(
    exchange: Exchange,
    statistics: Instruction,
    nodes: list[int],
    *,
    aggregation: int,
    length: int,
    record: Recorder,
) -> SecureSum:
    """Run the five steps of a secure sum of ``length`` numbers with ``nodes``.

    Parameters
    ----------
    exchange : Exchange
        How to reach the cities.
    statistics : Instruction
        The statistics instruction (``moments`` or ``newton``); its ``secagg`` is set here.
    nodes : list of int
        The cities asked.
    aggregation : int
        The sum's number in the run (the cities derive its keys from it).
    length : int
        Numbers each city sums.
    record : callable
        Called with every reply of every step.

    Raises
    ------
    FederationError
        Below the threshold at any step, or when a seed does not reconstruct.
    """
    fed = statistics.federation
    received = 0

    def ask(
        ins: Instruction,
        asked: list[int],
        valid: Callable[[CityReply], bool],
        personal: Mapping[int, Instruction] | None = None,
    ) -> dict[int, CityReply]:
        nonlocal received
        ok: dict[int, CityReply] = {}
        seen: set[str] = set()
        for node, reply in exchange.exchange(ins, asked, personal):
            sent = personal[node] if personal is not None and node in personal else ins
            if reply.status == "ok" and reply.city in seen:
                reply = CityReply.failed(reply.city, "another node already answers as this city")
            elif reply.status == "ok" and not valid(reply):
                reply = CityReply.failed(reply.city, "sent a malformed secure-aggregation step")
            record(node, reply, sent)
            if reply.status == "ok":
                seen.add(reply.city)
                ok[node] = reply
                received += _size(reply)
        return ok

    def secagg(step: str, **fields: object) -> Instruction:
        sa = SecAgg(aggregation, step, **fields)  # type: ignore[arg-type]
        phase = statistics.phase if step == "masked" else "secagg"
        base = statistics if step == "masked" else Instruction(phase, fed, statistics.round)
        return replace(base, secagg=sa)

    # 1. keys (signed by the cities' identity keys when the federation lists them)
    listed = dict(fed.city_keys)
    key_context = f"{federation_digest(fed)}|{aggregation}"

    def keys_valid(reply: CityReply) -> bool:
        if reply.keys is None or not _keys_ok(reply):
            return False
        identity = listed.get(reply.city)
        return not listed or (
            identity is not None and keys_signed_by(identity, reply.keys, reply.city, key_context)
        )

    keyed = ask(secagg("keys"), nodes, keys_valid)
    order = sorted(keyed)
    roster = tuple(
        Member(index=i + 1, city=keyed[node].city, keys=_keys(keyed[node]))
        for i, node in enumerate(order)
    )
    threshold = threshold_for(len(roster), fed.min_cities)
    _need(len(roster), threshold, "sent keys", fed.name)
    index_of = {node: i + 1 for i, node in enumerate(order)}
    node_of = {i: node for node, i in index_of.items()}
    indices = {m.index for m in roster}

    # 2. shares
    shared = ask(
        secagg("shares", threshold=threshold, roster=roster),
        order,
        lambda r: sorted(i for i, _ in r.sealed) == sorted(indices),
    )
    included = tuple(sorted(index_of[node] for node in shared))
    _need(len(included), threshold, "sent their shares", fed.name)

    # 3. masked inputs
    masked = ask(
        secagg("masked", threshold=threshold, roster=roster, included=included),
        [node_of[i] for i in included],
        lambda r: r.masked is not None and len(r.masked) == 8 * LIMBS * length,
    )
    arrived = tuple(sorted(index_of[node] for node in masked))
    _need(len(arrived), threshold, "sent their masked statistics", fed.name)

    # 4. confirm: who is still there; the sum is of the cities that confirm
    confirmed = ask(
        secagg("confirm", threshold=threshold, roster=roster, included=included, survivors=arrived),
        [node_of[i] for i in arrived],
        lambda r: True,
    )
    survivors = tuple(sorted(index_of[node] for node in confirmed))
    _need(len(survivors), threshold, "confirmed the sum", fed.name)

    # 5. unmask: each survivor is sent the shares sealed to it
    inboxes = {
        node_of[i]: tuple(
            (index_of[sender], dict(reply.sealed)[i]) for sender, reply in sorted(shared.items())
        )
        for i in survivors
    }
    unmask_step = SecAgg(
        aggregation, "unmask", threshold, roster, included=included, survivors=survivors
    )
    unmask = replace(Instruction("secagg", fed, statistics.round), secagg=unmask_step)
    personal = {
        node: replace(unmask, secagg=replace(unmask_step, inbox=inbox))
        for node, inbox in inboxes.items()
    }
    revealed = ask(
        unmask,
        [node_of[i] for i in survivors],
        lambda r: sorted(i for i, _ in r.revealed) == list(included),
        personal,
    )
    _need(len(revealed), threshold, "revealed their shares", fed.name)

    context = f"{federation_digest(fed)}|{aggregation}|{roster_digest(roster)}"
    sum_ = total([from_bytes(masked[node_of[i]].masked or b"", length) for i in survivors], length)
    shares_of: dict[int, list[tuple[int, bytes]]] = {i: [] for i in included}
    for node in sorted(revealed, key=lambda n: index_of[n]):
        for owner, share in revealed[node].revealed:
            shares_of[owner].append((index_of[node], share))
    for i in survivors:
        member = roster[i - 1]
        what = f"{member.city}'s self mask"
        seed = _rebuild(
            shares_of[i], threshold, fed.name, what, commitment, member.keys.self_commitment
        )
        sum_ = subtract(sum_, mask(seed, length))
    for v in sorted(set(included) - set(survivors)):
        dropped = roster[v - 1]
        what = f"{dropped.city}'s mask key"
        seed = _rebuild(shares_of[v], threshold, fed.name, what, public_key, dropped.keys.mask_key)
        for u in survivors:
            pairwise = mask(pair_key(seed, roster[u - 1].keys.mask_key, "mask", context), length)
            # u added +mask if u < v, -mask otherwise: take it back out.
            sum_ = subtract(sum_, pairwise) if u < v else add(sum_, pairwise)
    return SecureSum(
        total=sum_,
        summed=sorted(node_of[i] for i in survivors),
        cities=sorted(roster[i - 1].city for i in survivors),
        answered=sorted(revealed),
        bytes_received=received,
    )


def _rebuild(
    shares: list[tuple[int, bytes]],
    threshold: int,
    fed: str,
    what: str,
    advertised: Callable[[bytes], bytes],
    expected: bytes,
) -> bytes:
    """A seed from the first ``threshold`` shares, checked against what its city advertised.

    ``what`` names it (``"city's self mask"``); ``advertised(seed)`` must be
    ``expected`` (its commitment, or its public key). x-coordinates are roster indices.

    Raises
    ------
    FederationError
        If the shares do not rebuild the advertised seed (a city sent a wrong share).
    """
    try:
        seed = combine(shares[:threshold])
    except ValueError:
        seed = b""
    if not seed or advertised(seed) != expected:
        raise FederationError(
            f"{fed}: secure aggregation: the shares of {what} do not rebuild it (a city "
            "sent a wrong share); nothing is published"
        )
    return seed


def _keys_ok(reply: CityReply) -> bool:
    keys = reply.keys
    return keys is not None and all(
        len(part) == 32 for part in (keys.cipher_key, keys.mask_key, keys.self_commitment)
    )


def _keys(reply: CityReply) -> SecAggKeys:
    assert reply.keys is not None
    return reply.keys


def _size(reply: CityReply) -> int:
    size = len(reply.masked or b"") + sum(len(s) + 4 for _, s in reply.sealed)
    size += sum(len(s) + 4 for _, s in reply.revealed)
    return size + (96 if reply.keys is not None else 0)
