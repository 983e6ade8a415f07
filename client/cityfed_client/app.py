"""The CityFed ClientApp: a thin Flower shell over :mod:`cityfed_client.handlers`.

In a deployment the city's ``city.toml`` and the node's state folder come from the
SuperNode's node config (:mod:`cityfed_client.node_config`); in a simulation the
node's ``partition-id`` picks one of the configs the simulation was started with.
"""

from __future__ import annotations

from collections.abc import Sequence

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from cityfed.flower.records import decode_instruction, encode_reply
from cityfed_client.handlers import INSTALLED_APP, NodeRuntime, answer
from cityfed_client.node_config import NodeSettings

__all__ = ["app", "handle_message", "make_client_app"]


def handle_message(
    msg: Message, context: Context, *, simulated: Sequence[str] = (), app: str = INSTALLED_APP
) -> Message:
    """Answer one CityFed message on this node (``app``: what delivered it, for the audit)."""
    settings = NodeSettings.from_node_config(context.node_config, simulated)
    node = NodeRuntime(run=str(context.run_id), settings=settings, app=app)
    reply = answer(decode_instruction(msg.content), node)
    return Message(encode_reply(reply), reply_to=msg)


def make_client_app(simulated_cities: Sequence[str] = ()) -> ClientApp:
    """Build the ClientApp; ``simulated_cities`` maps partition ids to configs."""
    cities = tuple(simulated_cities)
    client_app = ClientApp()

    def handle(msg: Message, context: Context) -> Message:
        return handle_message(msg, context, simulated=cities)

    client_app.train()(handle)
    client_app.evaluate()(handle)
    return client_app


#: The ClientApp a deployed SuperNode loads (``cityfed_client.app:app``).
app = make_client_app()
