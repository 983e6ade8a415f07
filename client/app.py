"""The CityFed ClientApp: a thin Flower shell over :mod:`cityfed.client.handlers`.

In a deployment the city's ``city.toml`` comes from the SuperNode's node config
(``city-config``); in a simulation the node's ``partition-id`` picks one of the
configs the simulation was started with.
"""

from __future__ import annotations

from collections.abc import Sequence

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from cityfed.client.handlers import answer
from cityfed.protocol import decode_instruction, encode_reply

__all__ = ["CITY_CONFIG_KEY", "app", "make_client_app"]

#: Node-config key of the path to the city's ``city.toml`` on the city host.
CITY_CONFIG_KEY = "city-config"


def _city_config(context: Context, simulated: Sequence[str]) -> str:
    node_config = context.node_config
    if CITY_CONFIG_KEY in node_config:
        return str(node_config[CITY_CONFIG_KEY])
    if simulated and "partition-id" in node_config:
        return simulated[int(node_config["partition-id"])]
    raise RuntimeError(
        f"node config has no {CITY_CONFIG_KEY!r}; start the SuperNode with "
        f"--node-config \"{CITY_CONFIG_KEY}='/path/to/city.toml'\""
    )


def make_client_app(simulated_cities: Sequence[str] = ()) -> ClientApp:
    """Build the ClientApp; ``simulated_cities`` maps partition ids to configs."""
    cities = tuple(simulated_cities)
    client_app = ClientApp()

    def handle(msg: Message, context: Context) -> Message:
        instruction = decode_instruction(msg.content)
        reply = answer(instruction, _city_config(context, cities))
        return Message(encode_reply(reply), reply_to=msg)

    client_app.train()(handle)
    client_app.evaluate()(handle)
    return client_app


#: The ClientApp a deployed SuperNode loads (``cityfed.client.app:app``).
app = make_client_app()
