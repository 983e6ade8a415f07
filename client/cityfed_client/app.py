"""The CityFed ClientApp: a thin Flower shell over :mod:`cityfed_client.handlers`.

In a deployment the city's ``city.toml`` and the node's cache folder come from
the SuperNode's node config (:mod:`cityfed_client.node_config`); in a simulation
the node's ``partition-id`` picks one of the configs the simulation was started
with.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from cityfed.data.cache import DataCache
from cityfed.flower.records import decode_instruction, encode_reply
from cityfed_client.handlers import answer
from cityfed_client.node_config import NodeSettings

__all__ = ["app", "make_client_app"]


def make_client_app(
    simulated_cities: Sequence[str] = (), simulated_cache: Path | None = None
) -> ClientApp:
    """Build the ClientApp.

    Parameters
    ----------
    simulated_cities : Sequence[str]
        ``city.toml`` paths by partition id (simulation only).
    simulated_cache : Path, optional
        Cache folder of the simulated cities' harmonised data.
    """
    cities = tuple(simulated_cities)
    client_app = ClientApp()

    def handle(msg: Message, context: Context) -> Message:
        settings = NodeSettings.from_node_config(context.node_config, cities, simulated_cache)
        instruction = decode_instruction(msg.content)
        cache = DataCache(settings.cache_dir, str(context.run_id))
        reply = answer(instruction, settings.city_config, cache)
        return Message(encode_reply(reply), reply_to=msg)

    client_app.train()(handle)
    client_app.evaluate()(handle)
    return client_app


#: The ClientApp a deployed SuperNode loads (``cityfed_client.app:app``).
app = make_client_app()
