"""What a city node is told by its operator: the SuperNode's node-config keys.

``cityfed city start`` (and the container entrypoint, compose, Kubernetes and
systemd) set them with ``flower-supernode --node-config``; the ClientApp reads
them on the city host. The node's state folder holds its audit trail and the
per-run cache of harmonised data.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CITY_CONFIG_KEY",
    "CUT_OFF",
    "NODE_STATE_KEY",
    "NodeSettings",
    "default_state",
    "node_config_argument",
]

#: The start of the line ``cityfed-supernode`` logs when the coordinator refuses
#: this node's key (:mod:`cityfed_client.supernode`); ``cityfed city status`` shows it.
CUT_OFF = "CityFed: the coordinator refused this node's key"

#: Node-config key of the path to the city's ``city.toml`` on the city host.
CITY_CONFIG_KEY = "city-config"
#: Node-config key of the node's private state folder (audit trail, cache).
NODE_STATE_KEY = "node-state"


def default_state(city_config: Path) -> Path:
    """The node's state folder by default: beside the city's ``city.toml``."""
    return city_config.resolve().parent / f".cityfed-node-{city_config.stem}"


@dataclass(frozen=True)
class NodeSettings:
    """The city's config file and the node's state folder."""

    city_config: Path
    state: Path

    @property
    def audit_log(self) -> Path:
        """The city's hash-chained audit trail."""
        return self.state / "audit.jsonl"

    @property
    def secagg_secret(self) -> Path:
        """The node's secret for secure aggregation and noise (never leaves the city)."""
        return self.state / "secagg.key"

    @property
    def secagg_identity(self) -> Path:
        """The node's Ed25519 identity seed (``[privacy.city_keys]`` lists its public key)."""
        return self.state / "secagg-identity.key"

    @property
    def privacy_ledger(self) -> Path:
        """The city's differential-privacy ledger (next to its audit trail)."""
        return self.state / "privacy-ledger.jsonl"

    @property
    def cache(self) -> Path:
        """The node's private folder for a run's harmonised data."""
        return self.state / "cache"

    @classmethod
    def from_node_config(
        cls, node_config: Mapping[str, object], simulated: Sequence[str] = ()
    ) -> NodeSettings:
        """Read the settings; in a simulation ``partition-id`` picks the config.

        Raises
        ------
        RuntimeError
            If the node was started without ``city-config`` (outside a simulation).
        """
        if CITY_CONFIG_KEY in node_config:
            config = Path(str(node_config[CITY_CONFIG_KEY]))
            state = node_config.get(NODE_STATE_KEY)
            return cls(config, Path(str(state)) if state else default_state(config))
        if simulated and "partition-id" in node_config:
            config = Path(simulated[int(str(node_config["partition-id"]))])
            return cls(config, default_state(config))
        raise RuntimeError(
            f"node config has no {CITY_CONFIG_KEY!r}; start the SuperNode with "
            f"--node-config \"{CITY_CONFIG_KEY}='/path/to/city.toml'\""
        )


def node_config_argument(city_config: Path, state: Path) -> str:
    """The value of ``flower-supernode --node-config`` for these settings."""
    return (
        f"{CITY_CONFIG_KEY}={json.dumps(str(city_config))} "
        f"{NODE_STATE_KEY}={json.dumps(str(state))}"
    )
