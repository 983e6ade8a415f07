"""Exchanges over Flower: one instruction out, replies streamed back.

:class:`GridExchange` does it through Flower's Grid (simulation engine or
SuperLink alike); :class:`LocalExchange` hands each instruction to in-process
responders through the same wire encoding, for tests and benchmarks without a
Flower runtime. Replies are yielded as they arrive so that aggregation never holds
every city's matrices at once.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence

from flwr.app import Message
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid

from cityfed.errors import FederationError
from cityfed.federation.outcome import CityOutcome
from cityfed.federation.protocol import CityReply, Instruction, message_type_of
from cityfed.flower.records import (
    decode_instruction,
    decode_reply,
    encode_instruction,
    encode_reply,
)

__all__ = ["MAX_PAUSE", "GridExchange", "LocalExchange", "Responder"]

logger = logging.getLogger(__name__)

#: The longest pause between two pulls of replies (:meth:`GridExchange.pause`).
MAX_PAUSE = 5.0

#: A city answering in this process: an instruction in, its reply out.
Responder = Callable[[Instruction], CityReply]


def _first_line(text: str, limit: int = 300) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # Flower wraps the ClientApp's exception; its own message is the useful part.
    for line in reversed(lines):
        if "Message:" in line:
            return line.split("Message:", 1)[1].strip()[:limit]
    return (lines[-1] if lines else "no reason given")[:limit]


class GridExchange:
    """Exchange through a Flower :class:`~flwr.serverapp.Grid`.

    A city that is still connected but has not replied after ``resend_after``
    seconds (and no other city has either, in that time) is asked the same
    question again (up to ``max_asks`` times in all):
    a reply lost in transit, to a restart of the front for instance, is then
    answered again instead of the city dropping out. Phases are idempotent, so
    the first reply to arrive is the answer; later copies are ignored.

    Parameters
    ----------
    grid : Grid
        The grid the ServerApp was given.
    reply_timeout : float
        Seconds to wait for the replies of one exchange.
    resend_after : float, optional
        Seconds without a reply before asking a connected city again; None never.
    max_asks : int
        How many times a city is asked the same question at most.
    max_in_flight : int
        The most cities awaiting a reply at once: Flower's in-memory SuperLink
        (the simulation's) checks every stored message for every node it
        delivers to, so 10,000 questions at once stalled the engine; later
        cities are asked as replies come in.
    poll_interval : float
        Seconds between two pulls of replies while few are awaited; with more
        the pause grows (:meth:`pause`), since one pull costs time in
        proportion to the replies awaited.
    """

    def __init__(
        self,
        grid: Grid,
        *,
        reply_timeout: float = 600.0,
        resend_after: float | None = None,
        max_asks: int = 3,
        poll_interval: float = 0.05,
        max_in_flight: int = 1000,
    ) -> None:
        self.grid = grid
        self.max_in_flight = max_in_flight
        self.reply_timeout = reply_timeout
        self.resend_after = resend_after
        self.max_asks = max_asks
        self.poll_interval = poll_interval
        self.names: dict[int, str] = {}
        #: (round, node) of every question asked again, for the record.
        self.asked_again: list[tuple[int, int]] = []

    def pause(self, awaited: int) -> float:
        """Seconds to wait before pulling again, with ``awaited`` replies outstanding.

        ``poll_interval`` for a handful of cities, one more interval per 100
        replies awaited, at most :data:`MAX_PAUSE`: a pull makes the SuperLink
        check every outstanding message under the lock its fleet side needs too
        (Flower's in-memory state), so at 10,000 cities polling at the
        small-federation pace stalled the very replies it waited for, while a few
        seconds of latency are nothing to a round of thousands of cities.
        """
        return min(self.poll_interval * (1.0 + awaited / 100.0), MAX_PAUSE)

    def nodes(self) -> list[int]:
        """Connected node ids, sorted."""
        return sorted(int(n) for n in self.grid.get_node_ids())

    def wait_for_nodes(self, count: int, timeout: float) -> list[int]:
        """Wait until at least ``count`` nodes are connected (or time runs out)."""
        deadline = time.monotonic() + timeout
        nodes = self.nodes()
        while len(nodes) < count and time.monotonic() < deadline:
            time.sleep(0.2)
            nodes = self.nodes()
        return nodes

    def _push(self, node: int, instruction: Instruction) -> str | None:
        message = Message(
            encode_instruction(instruction),
            dst_node_id=node,
            message_type=message_type_of(instruction.phase),
            group_id=str(instruction.round),
        )
        ids = list(self.grid.push_messages([message]))
        return str(ids[0]) if ids else None

    def _ask_again(
        self,
        instruction: Instruction,
        asked: dict[int, tuple[float, int]],
        personal: Mapping[int, Instruction],
        last_reply: float,
    ) -> dict[str, int]:
        """Ask again the connected cities whose reply is overdue; their new message ids.

        Overdue counts from the later of the question and the last reply of anyone:
        while replies keep arriving the cities are working through the round (ten
        thousand simulated cities take minutes), and asking again would only
        queue the same work twice.
        """
        assert self.resend_after is not None
        now = time.monotonic()
        overdue = [
            node
            for node, (since, asks) in asked.items()
            if now - max(since, last_reply) >= self.resend_after and asks < self.max_asks
        ]
        if not overdue:
            return {}
        connected = set(self.nodes())
        again: dict[str, int] = {}
        for node in overdue:
            since, asks = asked[node]
            asked[node] = (now, asks + 1 if node in connected else asks)
            if node not in connected:
                continue
            message_id = self._push(node, personal.get(node, instruction))
            if message_id is not None:
                name = self.names.get(node, f"node {node}")
                logger.warning(
                    "%s: no reply to %s round %d after %.0f s; asking again (%d of %d)",
                    name, instruction.phase, instruction.round, now - since, asks + 1,
                    self.max_asks,
                )  # fmt: skip
                self.asked_again.append((instruction.round, node))
                again[message_id] = node
        return again

    def exchange(
        self,
        instruction: Instruction,
        nodes: Sequence[int],
        personal: Mapping[int, Instruction] | None = None,
    ) -> Iterator[tuple[int, CityReply]]:
        """Push one message per node and yield replies while pulling.

        At most ``max_in_flight`` cities await a reply at once; the next are
        asked as replies come in. Each city has ``reply_timeout`` seconds from
        its question.
        """
        own = personal or {}
        waiting = deque(nodes)
        pending: dict[str, int] = {}  # message id -> node
        ids_of: dict[int, list[str]] = {}  # node -> its message ids (asked again: several)
        asked: dict[int, tuple[float, int]] = {}  # node -> (last asked, times asked)
        first_asked: dict[int, float] = {}
        last_reply = time.monotonic()
        while waiting or asked:
            while waiting and len(asked) < self.max_in_flight:
                node = waiting.popleft()
                message_id = self._push(node, own.get(node, instruction))
                if message_id is None:
                    yield node, self._failed(node, "the message could not be delivered")
                    continue
                pending[message_id] = node
                ids_of[node] = [message_id]
                first_asked[node] = time.monotonic()
                asked[node] = (first_asked[node], 1)
            replies = list(self.grid.pull_messages(list(pending))) if pending else []
            now = time.monotonic()
            if replies:
                last_reply = now
            for reply in replies:
                node_id = pending.pop(reply.metadata.reply_to_message_id, None)
                if node_id is None or node_id not in asked:
                    continue  # a later copy of an answer already in
                del asked[node_id], first_asked[node_id]
                for message_id in ids_of.pop(node_id, []):
                    pending.pop(message_id, None)
                yield node_id, self._decode(node_id, reply)
            for node in [n for n, t in first_asked.items() if now - t >= self.reply_timeout]:
                del asked[node], first_asked[node]
                for message_id in ids_of.pop(node, []):
                    pending.pop(message_id, None)
                yield node, self._failed(node, f"no reply within {self.reply_timeout:g} s")
            if not replies and asked:
                if self.resend_after is not None:
                    again = self._ask_again(instruction, asked, own, last_reply)
                    pending.update(again)
                    for message_id, node in again.items():
                        ids_of.setdefault(node, []).append(message_id)
                time.sleep(self.pause(len(asked)))

    def _decode(self, node: int, reply: Message) -> CityReply:
        if reply.has_error():
            reason = _first_line(reply.error.reason or "")
            if reply.error.code == ErrorCode.INVALID_FAB:  # the city's gatekeeper refused
                name = self.names.get(node, f"node {node}")
                return CityReply(CityOutcome(city=name, status="refused", reason=reason))
            return self._failed(node, reason)
        try:
            decoded = decode_reply(reply.content)
        except (KeyError, ValueError, TypeError) as exc:
            return self._failed(node, f"malformed reply ({exc})")
        self.names[node] = decoded.city
        return decoded

    def _failed(self, node: int, reason: str) -> CityReply:
        return CityReply.failed(self.names.get(node, f"node {node}"), reason)


class LocalExchange:
    """Cities answered in this process, through the wire encoding.

    Parameters
    ----------
    responders : Sequence[Responder]
        One per simulated node; node ids are 1, 2, ...
    """

    def __init__(self, responders: Sequence[Responder]) -> None:
        self.responders = list(responders)

    def nodes(self) -> list[int]:
        """One node per responder."""
        return list(range(1, len(self.responders) + 1))

    def exchange(
        self,
        instruction: Instruction,
        nodes: Sequence[int],
        personal: Mapping[int, Instruction] | None = None,
    ) -> Iterator[tuple[int, CityReply]]:
        """Answer each node in turn (lazily, so aggregation streams)."""
        sent = decode_instruction(encode_instruction(instruction))
        own = personal or {}
        for node in nodes:
            if not 1 <= node <= len(self.responders):
                raise FederationError(f"unknown node {node}")
            ins = sent if node not in own else decode_instruction(encode_instruction(own[node]))
            reply = self.responders[node - 1](ins)
            yield node, decode_reply(encode_reply(reply))
