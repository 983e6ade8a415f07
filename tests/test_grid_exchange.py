"""GridExchange, the coordinator's exchange over a Flower Grid, against a fake Grid."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from uuid import uuid4

import numpy as np
import pytest
from cityfed_client.handlers import responder
from cityfed_server.training import train
from flwr.app import Error, Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.supercore.task_identity import TaskIdentity

from cityfed.config.spec import load_federation
from cityfed.federation.protocol import Instruction
from cityfed.flower.exchange import GridExchange
from cityfed.flower.records import decode_instruction, encode_instruction, encode_reply

from .synthetic import local_exchange, write_federation

#: A node's behaviour: a reply to a message, or None for "not (yet) answered".
Behaviour = Callable[[Message], Message | None]


class FakeGrid:
    """The part of Flower's Grid that GridExchange uses, with scripted nodes.

    Message ids are set as Flower's in-memory grid sets them; a node listed in
    ``undeliverable`` gets no id back from ``push_messages``.
    """

    def __init__(self, nodes: dict[int, Behaviour], undeliverable: Iterable[int] = ()) -> None:
        self.behaviour = nodes
        self.undeliverable = set(undeliverable)
        self.pushed: dict[str, Message] = {}
        self.pulls = 0
        #: Nodes that have left: still scripted, no longer in get_node_ids.
        self.disconnected: set[int] = set()

    def get_node_ids(self) -> list[int]:
        return [n for n in self.behaviour if n not in self.disconnected]

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for message in messages:
            if message.metadata.dst_node_id in self.undeliverable:
                continue
            message_id = str(uuid4())
            message.metadata.__dict__["_message_id"] = message_id
            self.pushed[message_id] = message
            ids.append(message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        self.pulls += 1
        replies = []
        for message_id in message_ids:
            message = self.pushed[message_id]
            reply = self.behaviour[message.metadata.dst_node_id](message)
            if reply is not None:
                replies.append(reply)
        return replies


def _city(config: Path) -> Behaviour:
    """A node that runs the city's real handlers on the decoded instruction."""
    respond = responder(config)

    def behave(message: Message) -> Message:
        reply = respond(decode_instruction(message.content))
        return Message(encode_reply(reply), reply_to=message)

    return behave


def _after_pulls(grid_pulls: Callable[[], int], pulls: int, then: Behaviour) -> Behaviour:
    def behave(message: Message) -> Message | None:
        return then(message) if grid_pulls() >= pulls else None

    return behave


def test_training_over_the_grid_equals_the_in_process_run(tmp_path: Path) -> None:
    # Prepare
    files = write_federation(tmp_path, task="classification", model="logistic")
    fed = load_federation(files.federation)
    grid = FakeGrid({10 + k: _city(path) for k, path in enumerate(files.cities)})
    # Execute
    over_grid = train(fed, GridExchange(grid, poll_interval=0.0), run_id="g")
    in_process = train(fed, local_exchange(files.cities), run_id="g")
    # Assert
    np.testing.assert_array_equal(over_grid.model.coef, in_process.model.coef)
    assert over_grid.model.rounds == in_process.model.rounds
    assert {o.city for o in over_grid.cities.values()} == {"city0", "city1", "city2"}
    assert all(m.metadata.message_type == "train" for m in grid.pushed.values())


def test_every_node_gets_exactly_one_reply_whatever_goes_wrong(tmp_path: Path) -> None:
    # Prepare: node 1 answers, 2 raises in its ClientApp, 3 sends junk, 4 never
    # answers, 5 cannot be reached, 6 refuses the app it was sent.
    files = write_federation(tmp_path)
    fed = load_federation(files.federation)

    def error(message: Message) -> Message:
        reason = "Traceback ...\nClientAppException:\nMessage: city.toml not readable"
        return Message(Error(code=1, reason=reason), reply_to=message)

    def junk(message: Message) -> Message:
        return Message(RecordDict(), reply_to=message)

    def refuse(message: Message) -> Message:  # what a city's gatekeeper sends
        return Message(Error(code=ErrorCode.INVALID_FAB, reason="not CityFed's"), reply_to=message)

    grid = FakeGrid(
        {
            1: _city(files.cities[0]),
            2: error,
            3: junk,
            4: lambda m: None,
            5: _city(files.cities[1]),
            6: refuse,
        },
        undeliverable=[5],
    )
    exchange = GridExchange(grid, reply_timeout=0.3, poll_interval=0.01)
    instruction = decode_instruction(encode_instruction(Instruction("moments", fed, 1)))
    # Execute
    replies = dict(exchange.exchange(instruction, [1, 2, 3, 4, 5, 6]))
    # Assert
    assert sorted(replies) == [1, 2, 3, 4, 5, 6]
    assert replies[6].status == "refused" and replies[6].reason == "not CityFed's"
    assert replies[1].status == "ok" and replies[1].moments is not None
    assert replies[2].status == "failed" and replies[2].reason == "city.toml not readable"
    assert replies[3].status == "failed" and replies[3].reason.startswith("malformed reply")
    assert replies[4].reason == "no reply within 0.3 s"
    assert replies[5].reason == "the message could not be delivered"
    assert replies[2].city == "node 2"  # no name known for a node that never answered


def test_replies_stream_in_arrival_order_and_names_stick(tmp_path: Path) -> None:
    files = write_federation(tmp_path)
    fed = load_federation(files.federation)
    grid = FakeGrid({})
    late = _after_pulls(lambda: grid.pulls, 3, _city(files.cities[0]))
    grid.behaviour.update({1: late, 2: _city(files.cities[1])})
    exchange = GridExchange(grid, poll_interval=0.0)
    instruction = Instruction("moments", fed, 1)
    order = [node for node, _ in exchange.exchange(instruction, [1, 2])]
    assert order == [2, 1]
    # Later, node 1 times out: its failure carries the name it answered as.
    grid.behaviour[1] = lambda m: None
    exchange.reply_timeout = 0.05
    [(node, reply)] = list(exchange.exchange(instruction, [1]))
    assert (node, reply.city, reply.status) == (1, "city0", "failed")


def test_wait_for_nodes_returns_when_enough_are_connected() -> None:
    grid = FakeGrid({3: lambda m: None, 1: lambda m: None})
    exchange = GridExchange(grid)
    assert exchange.wait_for_nodes(2, timeout=5.0) == [1, 3]
    assert exchange.wait_for_nodes(3, timeout=0.3) == [1, 3]


@pytest.fixture(autouse=True)
def _inside_a_serverapp(monkeypatch: pytest.MonkeyPatch) -> None:
    # Flower stamps new messages with the identity of the running ServerApp.
    for name, value in (("_run_id", 7), ("_node_id", 0), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, name, value)


def test_a_lost_reply_is_asked_again_while_the_city_is_connected(tmp_path: Path) -> None:
    # Prepare: node 2's first reply is lost in transit (a front restarted); node 3
    # left the federation and is never asked again; node 1 answers at once.
    files = write_federation(tmp_path)
    fed = load_federation(files.federation)
    city = _city(files.cities[1])
    first: dict[str, str] = {}

    def loses_the_first(message: Message) -> Message | None:
        first.setdefault("id", message.metadata.message_id)
        return None if message.metadata.message_id == first["id"] else city(message)

    grid = FakeGrid({1: _city(files.cities[0]), 2: loses_the_first, 3: lambda m: None})
    exchange = GridExchange(
        grid, reply_timeout=2.0, resend_after=0.1, max_asks=3, poll_interval=0.01
    )
    instruction = Instruction("moments", fed, 1)
    grid.disconnected.add(3)
    # Execute
    replies = dict(exchange.exchange(instruction, [1, 2, 3]))
    # Assert: node 2 answered the second time; node 3 timed out, asked only once
    assert replies[1].status == "ok" and replies[2].status == "ok"
    assert replies[2].moments is not None
    assert replies[3].status == "failed" and "no reply within 2 s" in replies[3].reason
    asked = [m.metadata.dst_node_id for m in grid.pushed.values()]
    assert asked.count(1) == 1 and asked.count(2) == 2 and asked.count(3) == 1
    assert exchange.asked_again == [(1, 2)]
    # The same moments as an exchange where nothing was lost.
    reference = dict(GridExchange(FakeGrid({2: city})).exchange(instruction, [2]))
    assert reference[2].moments is not None
    np.testing.assert_array_equal(replies[2].moments.scatter, reference[2].moments.scatter)


def test_at_most_max_in_flight_cities_await_a_reply_and_every_one_is_asked(
    tmp_path: Path,
) -> None:
    # Prepare: 25 nodes that answer on the pull after they were asked
    outstanding: set[int] = set()
    most = [0]

    def answer(message: Message) -> Message:
        return Message(Error(code=ErrorCode.UNKNOWN, reason="scripted"), reply_to=message)

    grid = FakeGrid({n: answer for n in range(1, 26)})
    pushing = grid.push_messages

    def push(messages: Iterable[Message]) -> list[str]:
        batch = list(messages)
        outstanding.update(m.metadata.dst_node_id for m in batch)
        most[0] = max(most[0], len(outstanding))
        return pushing(batch)

    grid.push_messages = push  # type: ignore[method-assign]
    exchange = GridExchange(grid, reply_timeout=5.0, poll_interval=0.0, max_in_flight=4)
    fed = load_federation(write_federation(tmp_path).federation)
    # Execute
    answered = []
    for node, _ in exchange.exchange(Instruction("moments", fed), list(range(1, 26))):
        answered.append(node)
        outstanding.discard(node)
    # Assert: every node answered once, never more than 4 awaited at once
    assert sorted(answered) == list(range(1, 26))
    assert most[0] <= 4
