"""A city's name is bound to its enrolled key: impostors are refused, the report keyed by name."""

from __future__ import annotations

from pathlib import Path

import pytest
from cityfed_client.handlers import responder
from cityfed_server.training import train

from cityfed.config.spec import load_federation
from cityfed.errors import FederationError
from cityfed.federation.identity import EnrolledExchange
from cityfed.federation.protocol import CityReply
from cityfed.flower.exchange import LocalExchange

from .synthetic import AlteredExchange, write_federation


def _impostor_config(files_dir: Path, source: Path, name: str) -> Path:
    """A city.toml with another city's data and key, but claiming ``name``."""
    text = source.read_text(encoding="utf-8")
    old = text.split("\n", 2)[1]  # name = "cityK"
    impostor = files_dir / f"claims-{name}.toml"
    impostor.write_text(text.replace(old, f'name = "{name}"', 1), encoding="utf-8")
    return impostor


def test_a_node_answering_under_another_name_is_refused(tmp_path: Path) -> None:
    # Prepare: node 3 holds city2's key (enrolled as city2) but says it is city0,
    # while the real city0 answers on node 1.
    files = write_federation(tmp_path, sizes=(300, 200, 250))
    fed = load_federation(files.federation)
    impostor = _impostor_config(tmp_path, files.cities[2], "city0")
    nodes = LocalExchange(
        [responder(files.cities[0]), responder(files.cities[1]), responder(impostor)]
    )
    enrolled = EnrolledExchange(nodes, {1: "city0", 2: "city1", 3: "city2"})
    # Execute
    result = train(fed, enrolled, run_id="r")
    # Assert: city0's entry is the real city0; the impostor is reported under its key's name
    assert set(result.cities) == {"city0", "city1", "city2"}
    assert result.cities["city0"].status == "ok"
    assert result.cities["city0"].rows_read == 300
    refused = result.cities["city2"]
    assert (
        refused.status == "refused"
        and "enrolled as 'city2' but answered as 'city0'" in refused.reason
    )
    assert result.model.cities == ("city0", "city1")
    assert result.model.training_rows == sum(
        o.rows_train for o in result.cities.values() if o.status == "ok"
    )


def test_nodes_that_are_not_enrolled_are_never_asked(tmp_path: Path) -> None:
    files = write_federation(tmp_path)
    fed = load_federation(files.federation)
    nodes = LocalExchange([responder(p) for p in files.cities])
    enrolled = EnrolledExchange(nodes, {1: "city0"})
    assert enrolled.nodes() == [1]
    with pytest.raises(FederationError, match="min_cities = 2"):
        train(fed, enrolled, run_id="r", nodes=[1, 2])


def test_a_city_that_never_answered_failed_it_did_not_impersonate(tmp_path: Path) -> None:
    files = write_federation(tmp_path, sizes=(300, 200, 250))
    fed = load_federation(files.federation)
    # Node 2 never answers: the transport reports it failed under its node id.
    nodes = AlteredExchange(
        LocalExchange([responder(p) for p in files.cities]),
        lambda replies: [
            (n, CityReply.failed("node 2", "no reply within 20 s") if n == 2 else r)
            for n, r in replies
        ],
    )
    result = train(fed, EnrolledExchange(nodes, {1: "city0", 2: "city1", 3: "city2"}), run_id="r")
    silent = result.cities["city1"]
    assert silent.status == "failed" and silent.reason == "no reply within 20 s"
    assert result.model.cities == ("city0", "city2")
