"""A city's name is bound to its enrolled node key: replies are checked against it.

The coordinator knows which node id each city's key was enrolled under. A reply
is accepted only from an enrolled node and only under the name it was enrolled
as; anything else is refused and reported under the enrolled name (or the node
id), so an impostor can neither add statistics nor overwrite another city's entry.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from cityfed.federation.exchange import Exchange
from cityfed.federation.outcome import CityOutcome
from cityfed.federation.protocol import CityReply, Instruction

__all__ = ["EnrolledExchange"]


class EnrolledExchange:
    """An :class:`~cityfed.federation.exchange.Exchange` that checks who answers.

    Parameters
    ----------
    inner : Exchange
        The exchange that reaches the nodes.
    enrolled : Mapping[int, str]
        Enrolled (not revoked) node ids and the city name of each.
    """

    def __init__(self, inner: Exchange, enrolled: Mapping[int, str]) -> None:
        self.inner = inner
        self.enrolled = dict(enrolled)

    def nodes(self) -> list[int]:
        """Connected nodes that are enrolled (others are never asked)."""
        return [node for node in self.inner.nodes() if node in self.enrolled]

    def exchange(
        self,
        instruction: Instruction,
        nodes: Sequence[int],
        personal: Mapping[int, Instruction] | None = None,
    ) -> Iterator[tuple[int, CityReply]]:
        """Send through the inner exchange; refuse replies not from their enrolled city."""
        asked = [node for node in nodes if node in self.enrolled]
        for node in nodes:
            if node not in self.enrolled:
                yield node, CityReply.failed(f"node {node}", "this node is not enrolled")
        for node, reply in self.inner.exchange(instruction, asked, personal):
            name = self.enrolled[node]
            if reply.status == "failed" and reply.city != name:
                # No reply from the city at all (undelivered, timed out, an error from
                # Flower): nothing was claimed, so it is the enrolled city's failure.
                yield node, CityReply.failed(name, reply.reason)
            elif reply.city != name:
                reason = (
                    f"node {node} is enrolled as {name!r} but answered as {reply.city!r}; "
                    "its reply is not used"
                )
                yield node, CityReply(CityOutcome(city=name, status="refused", reason=reason))
            else:
                yield node, reply
