"""The coordinator's view of the cities: send one instruction, receive replies as they come."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol

from cityfed.federation.protocol import CityReply, Instruction

__all__ = ["Exchange"]


class Exchange(Protocol):
    """A way to send one instruction to a set of cities and receive their replies."""

    def nodes(self) -> list[int]:
        """Ids of the cities' nodes that are connected now."""
        ...

    def exchange(
        self,
        instruction: Instruction,
        nodes: Sequence[int],
        personal: Mapping[int, Instruction] | None = None,
    ) -> Iterator[tuple[int, CityReply]]:
        """Send ``instruction`` to ``nodes``; yield ``(node, reply)`` as replies arrive.

        Every node gets exactly one reply: a node that errs or does not answer in
        time gets a reply with status ``failed``. A node in ``personal`` is sent
        its own instruction instead (a secure sum's shares sealed to it).
        """
        ...
