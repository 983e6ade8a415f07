"""What a city node is told by its operator: the SuperNode's node-config keys.

``cityfed city start`` (and the container entrypoint) set them with
``flower-supernode --node-config``; the ClientApp reads them on the city host.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CACHE_DIR_KEY", "CITY_CONFIG_KEY", "NodeSettings", "node_config_argument"]

#: Node-config key of the path to the city's ``city.toml`` on the city host.
CITY_CONFIG_KEY = "city-config"
#: Node-config key of the node's private folder for harmonised data of a run.
CACHE_DIR_KEY = "cache-dir"


@dataclass(frozen=True)
class NodeSettings:
    """The city's config file and the node's cache folder (None: no cache)."""

    city_config: Path
    cache_dir: Path | None

    @classmethod
    def from_node_config(
        cls,
        node_config: Mapping[str, object],
        simulated: Sequence[str] = (),
        simulated_cache: Path | None = None,
    ) -> NodeSettings:
        """Read the settings; in a simulation ``partition-id`` picks the config.

        Raises
        ------
        RuntimeError
            If the node was started without ``city-config`` (outside a simulation).
        """
        if CITY_CONFIG_KEY in node_config:
            cache = node_config.get(CACHE_DIR_KEY)
            return cls(Path(str(node_config[CITY_CONFIG_KEY])), Path(str(cache)) if cache else None)
        if simulated and "partition-id" in node_config:
            partition = int(str(node_config["partition-id"]))
            return cls(Path(simulated[partition]), simulated_cache)
        raise RuntimeError(
            f"node config has no {CITY_CONFIG_KEY!r}; start the SuperNode with "
            f"--node-config \"{CITY_CONFIG_KEY}='/path/to/city.toml'\""
        )


def node_config_argument(city_config: Path, cache_dir: Path | None) -> str:
    """The value of ``flower-supernode --node-config`` for these settings."""
    import json

    parts = [f"{CITY_CONFIG_KEY}={json.dumps(str(city_config))}"]
    if cache_dir is not None:
        parts.append(f"{CACHE_DIR_KEY}={json.dumps(str(cache_dir))}")
    return " ".join(parts)
