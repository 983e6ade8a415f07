"""The deployment assets in deploy/: Docker, Compose, Kubernetes, systemd, nginx.

There is no container engine or cluster on the development machines, so these
tests check what can be checked without one: every file parses, every path it
names exists, only the front's port 9443 is exposed, and the commands the assets
run are the ones ``cityfed coordinator start`` and ``cityfed city start`` run
(compared against the code, so they cannot drift). The nginx config passes
``nginx -t``; the systemd units pass ``systemd-analyze verify``; the slow test
runs the container entrypoint's real processes on loopback, as the containers
and units do.
"""

from __future__ import annotations

import http.server
import importlib.metadata
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from cityfed_server.nginx import FrontConfig, render_nginx_conf

from cityfed.cli.demo import copy_demo_data
from cityfed.ops.certs import issue_city, write_coordinator
from cityfed.ops.tls import Address

# PyYAML comes with flwr (flwr 1.42 requires pyyaml>=6.0.2), so it is always there
# in the project's environment; nothing is added to pyproject for it.
yaml = pytest.importorskip("yaml", reason="PyYAML (a dependency of flwr) is not installed")

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE_DIR = DEPLOY / "compose"
K8S = DEPLOY / "k8s"
SYSTEMD = DEPLOY / "systemd"
DOCKER = DEPLOY / "docker"
NGINX_CONF = DEPLOY / "nginx" / "nginx.conf"
DEMO = ROOT / "cityfed" / "demo_data"

PUBLIC_PORT = 9443
SERVICE_PORT = 9444
SUPERLINK_PORT = 9092


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


entrypoint = _load("cityfed_deploy_entrypoint", DOCKER / "entrypoint.py")
render_nginx = _load("cityfed_deploy_render_nginx", DEPLOY / "render_nginx.py")


# ---------------------------------------------------------------- helpers


def _yaml_docs(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def _env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


_COMPOSE_VAR = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def _interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR:?error} on every string."""
    if isinstance(value, dict):
        return {k: _interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match.groups()
        if name in env and (env[name] or not (op or "").startswith(":")):
            return env[name]
        if op and op.endswith("-"):
            return arg
        raise AssertionError(f"${{{name}}} is not set by .env.example ({arg or 'no default'})")

    return _COMPOSE_VAR.sub(substitute, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    raw = yaml.safe_load((COMPOSE_DIR / "docker-compose.yml").read_text(encoding="utf-8"))
    result: dict[str, Any] = _interpolate(raw, _env_file(COMPOSE_DIR / ".env.example"))
    return result


def _binds(service: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for v in service.get("volumes", []) if v["type"] == "bind"]


@pytest.fixture(scope="module")
def k8s() -> list[dict[str, Any]]:
    return [doc for path in sorted(K8S.glob("*.yaml")) for doc in _yaml_docs(path)]


def _by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Sections of a systemd unit as (key, value) pairs, continuations joined."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith(("#", ";"))):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
        else:
            assert current is not None, f"{path.name}: {line!r} outside a section"
            key, _, value = line.partition("=")
            current.append((key.strip(), value.strip()))
    return sections


def _values(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def _unit_env(unit: dict[str, list[tuple[str, str]]], instance: str = "") -> dict[str, str]:
    env = {}
    for value in _values(unit, "Service", "Environment"):
        for assignment in shlex.split(value):
            key, _, val = assignment.partition("=")
            env[key] = val.replace("%i", instance)
    return env


def _command(line: str, env: dict[str, str], instance: str = "") -> list[str]:
    """An Exec line as systemd runs it: ${VAR} substituted, quotes removed."""
    line = line.lstrip("-@:+!")
    line = re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], line.replace("%i", instance))
    return shlex.split(line)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _StartedError(Exception):
    """Raised by a fake Daemon.start to capture the command it was given."""

    def __init__(self, argv: list[str]) -> None:
        super().__init__(argv)
        self.argv = argv


def _capture_start(
    monkeypatch: pytest.MonkeyPatch, *, let: tuple[str, ...] = ()
) -> list[list[str]]:
    """Record every background process started; the first not in ``let`` raises."""
    from cityfed.ops.processes import Daemon

    started: list[list[str]] = []

    def start(self: Daemon, argv: list[str], env: Any, cwd: Path | None = None) -> int:
        started.append(list(argv))
        if self.name in let:
            return 0
        raise _StartedError(list(argv))

    monkeypatch.setattr(Daemon, "start", start)
    return started


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("certs")
    write_coordinator(out, ["localhost"], name="cityfed-test")
    return out


# ---------------------------------------------------------------- YAML


def test_every_yaml_file_parses() -> None:
    files = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])
    assert len(files) >= 5
    for path in files:
        docs = _yaml_docs(path)
        assert docs, f"{path}: no document"
        assert all(isinstance(doc, dict) for doc in docs), path


# ---------------------------------------------------------------- compose


def test_compose_has_the_coordinator_and_three_cities(compose: dict[str, Any]) -> None:
    services = compose["services"]
    cities = {"city-a", "city-b", "city-c"}
    gatekeepers = {"gatekeeper-a", "gatekeeper-b", "gatekeeper-c"}
    assert set(services) == {"superlink", "front", "service"} | cities | gatekeepers
    for name in sorted(gatekeepers):
        keeper, city = services[name], services[name.replace("gatekeeper", "city")]
        assert keeper["command"] == ["gatekeeper"]
        assert keeper["network_mode"] == f"service:{name.replace('gatekeeper', 'city')}"
        targets = {v["target"]: v for v in keeper["volumes"]}
        assert targets["/data"]["read_only"] and "/var/lib/cityfed-node" in targets
        assert not any("node.key" in str(v) for v in keeper["volumes"])  # no key
        state = [v["source"] for v in city["volumes"] if v["target"] == "/var/lib/cityfed-node"]
        assert targets["/var/lib/cityfed-node"]["source"] == state[0]
    assert services["superlink"]["command"] == ["superlink"]
    assert services["front"]["command"] == ["front"]
    assert services["front"]["image"] == services["superlink"]["image"]
    assert services["service"]["command"] == ["service"]
    assert services["service"]["image"] == services["superlink"]["image"]
    for name in ("city-a", "city-b", "city-c"):
        assert services[name]["command"] == ["city"]
        assert services[name]["environment"]["CITYFED_COORDINATOR"].endswith(f":{PUBLIC_PORT}")


def test_compose_publishes_only_the_front_and_service_ports(compose: dict[str, Any]) -> None:
    services = compose["services"]
    # The front and the service share the SuperLink's network namespace, so they
    # reach it on 127.0.0.1 exactly as the managed ones do; their ports are
    # published there, and the SuperLink's own ports are not.
    for name in ("front", "service"):
        assert services[name]["network_mode"] == "service:superlink", name
        assert services[name]["pid"] == "service:superlink", name
    published = {
        name: service.get("ports", []) + service.get("expose", [])
        for name, service in services.items()
    }
    assert published.pop("superlink") == [
        f"0.0.0.0:{PUBLIC_PORT}:{PUBLIC_PORT}",
        f"0.0.0.0:{SERVICE_PORT}:{SERVICE_PORT}",
    ]
    assert not any(published.values()), published
    health = services["service"]["healthcheck"]["test"]
    assert health[1:] == ["cityfed-entrypoint", "health-service", f"localhost:{SERVICE_PORT}"]


def test_compose_builds_from_the_repository(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        build = service["build"]
        context = (COMPOSE_DIR / build["context"]).resolve()
        assert context == ROOT, name
        assert (context / build["dockerfile"]).is_file(), name


def test_compose_mounts_exist_or_are_operator_files(compose: dict[str, Any]) -> None:
    ignored = [
        line.rstrip("/")
        for line in (COMPOSE_DIR / ".gitignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    operator_roots = [COMPOSE_DIR / entry for entry in ignored]
    for name, service in compose["services"].items():
        for bind in _binds(service):
            assert bind["read_only"] is True, (name, bind["target"])
            source = (COMPOSE_DIR / bind["source"]).resolve()
            if any(source.is_relative_to(r) for r in operator_roots):
                continue  # certificates and keys: made by `cityfed certs`, never committed
            assert source.is_relative_to(ROOT), (name, source)
            assert source.exists(), (name, bind["source"])
    nginx = [b for b in _binds(compose["services"]["front"]) if b["target"].endswith("nginx.conf")]
    assert [(COMPOSE_DIR / b["source"]).resolve() for b in nginx] == [NGINX_CONF]
    assert {"certs", "keys", ".env"} <= set(ignored)


def test_compose_cities_have_their_own_key_data_and_state(compose: dict[str, Any]) -> None:
    services = compose["services"]
    env = _env_file(COMPOSE_DIR / ".env.example")
    keys, states = set(), set()
    for name, letter in (("city-a", "A"), ("city-b", "B"), ("city-c", "C")):
        service = services[name]
        binds = {b["target"]: b["source"] for b in _binds(service)}
        assert binds["/etc/cityfed/keys/node.key"] == f"./keys/{name}/{name}.node.key"
        assert binds["/etc/cityfed/certs/ca.pem"] == "./certs/ca.pem"
        keys.add(binds["/etc/cityfed/keys/node.key"])
        config = service["environment"]["CITYFED_CITY_CONFIG"]
        assert config == f"/data/{env[f'CITY_{letter}_CONFIG']}"
        # The demo defaults of .env.example are real: the city.toml is in the data folder.
        assert (COMPOSE_DIR / binds["/data"] / Path(config).name).is_file(), name
        [state] = [v["source"] for v in service["volumes"] if v["type"] == "volume"]
        states.add(state)
    assert len(keys) == len(states) == 3
    assert set(compose["volumes"]) == {"coordinator-state", *states}


def test_compose_coordinator_mounts_only_what_it_needs(compose: dict[str, Any]) -> None:
    for name in ("superlink", "front", "service"):
        targets = {b["target"] for b in _binds(compose["services"][name])}
        certs = {t for t in targets if t.startswith("/etc/cityfed/certs/")}
        # Never the CA's private key: it stays where certificates are issued.
        assert certs == {
            "/etc/cityfed/certs/ca.pem",
            "/etc/cityfed/certs/coordinator.pem",
            "/etc/cityfed/certs/coordinator.key",
        }, name
    federation = _env_file(COMPOSE_DIR / ".env.example")["CITYFED_FEDERATION"]
    assert (COMPOSE_DIR / federation).resolve() == DEMO / "federation.toml"
    # The service reads models, runs and enrolment requests from the state volume.
    [state] = [v for v in compose["services"]["service"]["volumes"] if v["type"] == "volume"]
    assert (state["source"], state["target"]) == ("coordinator-state", "/var/lib/cityfed")


# ---------------------------------------------------------------- Kubernetes


def test_k8s_manifests_have_the_expected_kinds(k8s: list[dict[str, Any]]) -> None:
    kinds = sorted(doc["kind"] for doc in k8s)
    assert kinds == sorted(
        [
            "Namespace",
            "ConfigMap",
            "PersistentVolumeClaim",
            "PersistentVolumeClaim",
            "Deployment",
            "Deployment",
            "Service",
            "NetworkPolicy",
        ]
    )
    for doc in k8s:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "cityfed", doc["metadata"]["name"]


def test_k8s_service_exposes_only_the_front_and_the_grpc_service(
    k8s: list[dict[str, Any]],
) -> None:
    [service] = _by_kind(k8s, "Service").values()
    assert [p["port"] for p in service["spec"]["ports"]] == [PUBLIC_PORT, SERVICE_PORT]
    coordinator = _by_kind(k8s, "Deployment")["cityfed-coordinator"]["spec"]["template"]
    assert service["spec"]["selector"].items() <= coordinator["metadata"]["labels"].items()
    ports = {
        (c["name"], p["name"], p["containerPort"])
        for deployment in _by_kind(k8s, "Deployment").values()
        for c in deployment["spec"]["template"]["spec"]["containers"]
        for p in c.get("ports", [])
    }
    assert ports == {("front", "fleet-tls", PUBLIC_PORT), ("service", "grpc-mtls", SERVICE_PORT)}
    assert {p["targetPort"] for p in service["spec"]["ports"]} == {"fleet-tls", "grpc-mtls"}
    [policy] = _by_kind(k8s, "NetworkPolicy").values()
    assert [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]] == [
        PUBLIC_PORT,
        SERVICE_PORT,
    ]


def test_k8s_coordinator_pod(k8s: list[dict[str, Any]]) -> None:
    deployment = _by_kind(k8s, "Deployment")["cityfed-coordinator"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    pod = deployment["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    assert set(containers) == {"superlink", "front", "service"}
    assert containers["superlink"]["args"] == ["superlink"]
    assert containers["front"]["args"] == ["front"]
    assert containers["service"]["args"] == ["service"]
    assert containers["superlink"]["image"] == containers["front"]["image"]
    assert containers["service"]["image"] == containers["front"]["image"]
    service_env = {e["name"]: e["value"] for e in containers["service"]["env"]}
    assert service_env["CITYFED_SERVICE"] == f"0.0.0.0:{SERVICE_PORT}"
    for probe in ("readinessProbe", "livenessProbe"):
        command = containers["service"][probe]["exec"]["command"]
        assert command == ["cityfed-entrypoint", "health-service", f"localhost:{SERVICE_PORT}"]
    mounts = {
        name: {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        for name, c in containers.items()
    }
    assert mounts["superlink"]["/var/lib/cityfed"] == "state"
    assert mounts["service"]["/var/lib/cityfed"] == "state"
    assert mounts["service"]["/etc/cityfed/certs"] == "certs"
    assert mounts["front"]["/etc/cityfed/nginx"] == "nginx-conf"
    volumes = {v["name"]: v for v in pod["volumes"]}
    claims = _by_kind(k8s, "PersistentVolumeClaim")
    assert volumes["state"]["persistentVolumeClaim"]["claimName"] in claims
    assert volumes["nginx-conf"]["configMap"]["name"] in _by_kind(k8s, "ConfigMap")
    assert {i["path"] for i in volumes["certs"]["secret"]["items"]} == {
        "ca.pem",
        "coordinator.pem",
        "coordinator.key",
    }
    env = {e["name"]: e["value"] for e in containers["superlink"]["env"]}
    federation_dir = Path(env["CITYFED_FEDERATION"]).parent.as_posix()
    assert volumes[mounts["superlink"][federation_dir]]["configMap"]["name"] == "cityfed-federation"


def test_k8s_city_template(k8s: list[dict[str, Any]]) -> None:
    deployment = _by_kind(k8s, "Deployment")["cityfed-city-a"]
    pod = deployment["spec"]["template"]["spec"]
    container, keeper = pod["containers"]
    assert container["args"] == ["city"]
    assert keeper["args"] == ["gatekeeper"]
    keeper_mounts = {m["mountPath"]: m for m in keeper["volumeMounts"]}
    assert keeper_mounts["/data"]["readOnly"] and "/var/lib/cityfed-node" in keeper_mounts
    assert "/etc/cityfed/keys" not in keeper_mounts  # the node key stays out of its reach
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/data"]["readOnly"] and mounts["/etc/cityfed/keys"]["readOnly"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] in _by_kind(
        k8s, "PersistentVolumeClaim"
    )
    assert volumes["keys"]["secret"]["items"] == [{"key": "node.key", "path": "node.key"}]
    assert volumes["ca"]["secret"]["items"] == [{"key": "ca.pem", "path": "ca.pem"}]


def test_k8s_secrets_and_configmaps_are_created_as_documented(k8s: list[dict[str, Any]]) -> None:
    text = "\n".join(p.read_text() for p in K8S.glob("*.yaml")) + (DEPLOY / "README.md").read_text()
    defined = set(_by_kind(k8s, "ConfigMap"))
    for deployment in _by_kind(k8s, "Deployment").values():
        for volume in deployment["spec"]["template"]["spec"]["volumes"]:
            if "secret" in volume:
                name = volume["secret"]["secretName"]
                assert f"create secret generic {name}" in text, name
                for item in volume["secret"]["items"]:
                    assert f"--from-file={item['key']}=" in text, item
            if "configMap" in volume and volume["configMap"]["name"] not in defined:
                assert f"create configmap {volume['configMap']['name']}" in text


def test_k8s_pods_meet_the_restricted_policy(k8s: list[dict[str, Any]]) -> None:
    [namespace] = _by_kind(k8s, "Namespace").values()
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for deployment in _by_kind(k8s, "Deployment").values():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
        for volume in pod["volumes"]:
            assert "hostPath" not in volume


def test_k8s_nginx_configmap_is_the_committed_config(k8s: list[dict[str, Any]]) -> None:
    configmap = _by_kind(k8s, "ConfigMap")["cityfed-nginx"]
    assert configmap["data"]["nginx.conf"] == NGINX_CONF.read_text(encoding="utf-8")


# ---------------------------------------------------------------- Dockerfiles


def _instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


@pytest.mark.parametrize("name", ["coordinator", "city"])
def test_dockerfile(name: str) -> None:
    path = DOCKER / f"{name}.Dockerfile"
    steps = _instructions(path)
    args = dict(rest.split("=", 1) for word, rest in steps if word == "ARG" and "=" in rest)
    bases = [
        rest.split()[0].replace("${PYTHON_IMAGE}", args["PYTHON_IMAGE"])
        for word, rest in steps
        if word == "FROM"
    ]
    assert bases and all(b.startswith("python:3.11-slim") for b in bases), bases
    allowed = {
        line[1:].strip()
        for line in (DOCKER / f"{name}.Dockerfile.dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    copied = []
    for word, rest in steps:
        if word != "COPY" or "--from=" in rest:
            continue
        sources = [t for t in rest.split() if not t.startswith("--")][:-1]
        for source in sources:
            assert (ROOT / source).exists(), f"{path.name}: COPY {source}: not in the repository"
            assert source.rstrip("/").removeprefix("./") in allowed, f"{source} is .dockerignored"
            copied.append(source.rstrip("/"))
    assert {"pyproject.toml", "README.md", "cityfed", "server", "client"} <= set(copied)
    assert "deploy/docker/entrypoint.py" in copied
    assert all((ROOT / entry).exists() for entry in allowed)
    runtime = steps[max(i for i, (w, _) in enumerate(steps) if w == "FROM") :]
    words = [w for w, _ in runtime]
    env = " ".join(rest for w, rest in runtime if w == "ENV")
    assert "FLWR_TELEMETRY_ENABLED=0" in env and "FLWR_DISABLE_UPDATE_CHECK=1" in env
    [user] = [rest for w, rest in runtime if w == "USER"]
    assert user not in ("root", "0")
    [health] = [rest for w, rest in runtime if w == "HEALTHCHECK"]
    assert '["cityfed-entrypoint", "health"]' in health
    [entry] = [rest for w, rest in runtime if w == "ENTRYPOINT"]
    assert json.loads(entry)[-1] == "cityfed-entrypoint"
    assert "HEALTHCHECK" in words and "CMD" in words
    installs = " ".join(rest for w, rest in runtime if w == "RUN")
    assert "tini" in installs and ("nginx" in installs) == (name == "coordinator")


def test_dockerfile_commands_are_entrypoint_commands() -> None:
    commands = set(entrypoint._COMMANDS)
    for command in commands:  # every command the dispatcher knows parses
        entrypoint._parser().parse_args([command, *(["/tmp/x"] if command == "backup" else [])])
    for name in ("coordinator", "city"):
        [cmd] = [r for w, r in _instructions(DOCKER / f"{name}.Dockerfile") if w == "CMD"]
        assert json.loads(cmd)[0] in commands
    compose = yaml.safe_load((COMPOSE_DIR / "docker-compose.yml").read_text())
    for service in compose["services"].values():
        assert service["command"][0] in commands
        if "healthcheck" in service:
            assert service["healthcheck"]["test"][1] == "cityfed-entrypoint"
            assert service["healthcheck"]["test"][2] in {"health", "health-service"}
    k8s_docs = [doc for path in sorted(K8S.glob("*.yaml")) for doc in _yaml_docs(path)]
    for deployment in _by_kind(k8s_docs, "Deployment").values():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            assert container["args"][0] in commands, container["name"]
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                command = container.get(probe, {}).get("exec", {}).get("command")
                if command:
                    assert command[0] == "cityfed-entrypoint" and command[1] in commands


# ---------------------------------------------------------------- systemd


def _installed_scripts() -> set[str]:
    ours = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])
    flwr = {ep.name for ep in importlib.metadata.distribution("flwr").entry_points}
    return ours | flwr


@pytest.mark.parametrize(
    "unit_name",
    [
        "cityfed-superlink.service",
        "cityfed-front.service",
        "cityfed-service.service",
        "cityfed-city@.service",
    ],
)
def test_systemd_unit_sections_binaries_and_hardening(unit_name: str) -> None:
    unit = _unit(SYSTEMD / unit_name)
    assert {"Unit", "Service", "Install"} <= set(unit)
    [start] = _values(unit, "Service", "ExecStart")
    binary = Path(shlex.split(start)[0])
    assert binary.name in {
        "cityfed",
        "cityfed-entrypoint",
        "flower-superlink",
        "cityfed-supernode",
        "nginx",
    }
    if binary.name == "nginx":
        assert binary == Path("/usr/sbin/nginx")
    elif binary.name == "cityfed-entrypoint":  # copied into the venv, as in the images
        assert binary.parent == Path("/opt/cityfed/bin")
    else:
        assert binary.parent == Path("/opt/cityfed/bin") and binary.name in _installed_scripts()
    for key in ("ExecStartPre", "ExecStartPost", "ExecReload"):
        for line in _values(unit, "Service", key):
            assert Path(shlex.split(line.lstrip("-"))[0]).name in {
                "cityfed-entrypoint",
                "nginx",
                "sh",
                "kill",
            }, line
    service = dict(unit["Service"])
    assert service["User"] == "cityfed"
    assert service["ProtectSystem"] == "strict"
    assert service["NoNewPrivileges"] == "yes"
    assert service["PrivateTmp"] == "yes"
    assert service["Restart"] == "on-failure"
    assert service["ReadWritePaths"].lstrip("-").startswith("/var/lib/cityfed")
    assert _values(unit, "Install", "WantedBy") == ["multi-user.target"]


def test_systemd_superlink_runs_what_the_entrypoint_runs() -> None:
    unit = _unit(SYSTEMD / "cityfed-superlink.service")
    env = _unit_env(unit)
    [start] = _values(unit, "Service", "ExecStart")
    argv = _command(start, env)
    expected = entrypoint.superlink_argv(
        Path(env["CITYFED_STATE"]), Path(env["CITYFED_CERTS"]), int(env["CITYFED_SUPERLINK_PORT"])
    )
    assert argv[1:] == expected[1:]
    assert env["CITYFED_STATE"] == "/var/lib/cityfed"
    assert env["CITYFED_SUPERLINK_PORT"] == str(SUPERLINK_PORT)
    assert env["FLWR_HOME"] == "/var/lib/cityfed/flwr"
    assert _values(unit, "Service", "StateDirectory") == ["cityfed"]
    [pre] = _values(unit, "Service", "ExecStartPre")
    assert shlex.split(pre)[1:] == ["prepare-superlink"]


def test_systemd_service_runs_the_entrypoint_in_the_superlinks_network() -> None:
    unit = _unit(SYSTEMD / "cityfed-service.service")
    env = _unit_env(unit)
    [start] = _values(unit, "Service", "ExecStart")
    assert _command(start, env)[1:] == ["service"]
    argv = entrypoint.service_argv(
        Path(env["CITYFED_STATE"]), Path(env["CITYFED_CERTS"]), env["CITYFED_SERVICE"]
    )
    assert argv[1:] == [
        "-m",
        "cityfed_server.service.server",
        "--state",
        "/var/lib/cityfed",
        "--listen",
        f"127.0.0.1:{SERVICE_PORT}",
        "--certs",
        "/etc/cityfed/certs",
    ]
    # In the SuperLink's namespace (it calls the Control API on 127.0.0.1) ...
    assert _values(unit, "Unit", "JoinsNamespaceOf") == ["cityfed-superlink.service"]
    assert _values(unit, "Service", "PrivateNetwork") == ["yes"]
    superlink = _unit_env(_unit(SYSTEMD / "cityfed-superlink.service"))
    assert superlink["CITYFED_SERVICE"] == env["CITYFED_SERVICE"]  # what status reports
    assert env["FLWR_HOME"] == superlink["FLWR_HOME"]
    # ... and reached from outside only through the proxy on the public port.
    socket_unit = dict(_unit(SYSTEMD / "cityfed-service-proxy.socket")["Socket"])
    assert socket_unit["ListenStream"] == str(SERVICE_PORT)
    proxy = _unit(SYSTEMD / "cityfed-service-proxy.service")
    assert _values(proxy, "Unit", "JoinsNamespaceOf") == ["cityfed-superlink.service"]
    assert _values(proxy, "Service", "PrivateNetwork") == ["yes"]
    [proxy_start] = _values(proxy, "Service", "ExecStart")
    assert _command(proxy_start, _unit_env(proxy))[-1] == env["CITYFED_SERVICE"]


def test_systemd_city_runs_what_the_entrypoint_runs() -> None:
    unit = _unit(SYSTEMD / "cityfed-city@.service")
    env = _unit_env(unit, "lisbon") | {
        "CITYFED_CITY_CONFIG": "/srv/cityfed/lisbon/lisbon.toml",
        "CITYFED_COORDINATOR": "coordinator.example.org:9443",
        "CITYFED_CA": "/etc/cityfed/cities/lisbon/ca.pem",
        "CITYFED_NODE_KEY": "/etc/cityfed/cities/lisbon/lisbon.node.key",
    }
    [start] = _values(unit, "Service", "ExecStart")
    argv = _command(start, env, "lisbon")
    expected = entrypoint.supernode_argv(
        env["CITYFED_COORDINATOR"],
        Path(env["CITYFED_CA"]),
        Path(env["CITYFED_NODE_KEY"]),
        Path(env["CITYFED_CITY_CONFIG"]),
        int(env["CITYFED_RUNTIME_PORT"]),
        Path(env["CITYFED_NODE_STATE"]),
    )
    assert argv[1:] == expected[1:]
    assert _values(unit, "Service", "EnvironmentFile") == ["/etc/cityfed/cities/%i.env"]
    [pre] = _values(unit, "Service", "ExecStartPre")
    assert shlex.split(pre)[1:] == ["check-city"]
    assert "cityfed-gatekeeper@%i.service" in " ".join(_values(unit, "Unit", "Wants"))


def test_systemd_gatekeeper_runs_the_entrypoint_without_the_node_key() -> None:
    unit = _unit(SYSTEMD / "cityfed-gatekeeper@.service")
    [start] = _values(unit, "Service", "ExecStart")
    assert shlex.split(start)[1:] == ["gatekeeper"]
    assert _values(unit, "Unit", "BindsTo") == ["cityfed-city@%i.service"]
    assert _values(unit, "Service", "EnvironmentFile") == ["/etc/cityfed/cities/%i.env"]
    city = _unit(SYSTEMD / "cityfed-city@.service")
    assert _values(unit, "Service", "Environment") == [
        v
        for v in _values(city, "Service", "Environment")
        if "RUNTIME_PORT" in v or "NODE_STATE" in v or "WAIT" in v or v.startswith("PATH=")
    ]
    assert _values(unit, "Service", "InaccessiblePaths") == ["-/etc/cityfed/cities/%i/%i.node.key"]


def test_systemd_front_runs_nginx_with_the_committed_config() -> None:
    unit = _unit(SYSTEMD / "cityfed-front.service")
    [start] = _values(unit, "Service", "ExecStart")
    conf = Path("/etc/cityfed/nginx/nginx.conf")
    assert shlex.split(start)[1:] == entrypoint.front_argv(conf)[1:]
    # nginx writes its pid and temporary files and logs where systemd makes room.
    runtime = _values(unit, "Service", "RuntimeDirectory")[0].split()
    assert [f"/run/{d}" for d in runtime] == [
        str(render_nginx.RUNTIME_DIR),
        str(render_nginx.RUNTIME_DIR / "tmp"),
    ]
    assert _values(unit, "Service", "LogsDirectory") == [render_nginx.LOG_DIR.name]
    assert render_nginx.LOG_DIR.parent == Path("/var/log")


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("cityfed-entrypoint", "flower-superlink", "cityfed-supernode"):
        (bin_dir / name).write_text("#!/bin/sh\n")
        (bin_dir / name).chmod(0o755)
    units = []
    for path in [*SYSTEMD.glob("*.service"), *SYSTEMD.glob("*.socket")]:
        target = tmp_path / path.name.replace("@.", "@lisbon.")
        target.write_text(path.read_text().replace("/opt/cityfed/bin/", f"{bin_dir}/"))
        units.append(str(target))
    if not Path("/usr/sbin/nginx").exists():
        units = [u for u in units if "front" not in u]
    proc = subprocess.run(
        [analyze, "verify", *units], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0 and not proc.stdout.strip() and not proc.stderr.strip(), (
        proc.stdout + proc.stderr
    )


# ---------------------------------------------------------------- nginx


def test_committed_nginx_conf_is_rendered_from_the_code() -> None:
    expected = render_nginx_conf(
        FrontConfig(
            public=Address("0.0.0.0", PUBLIC_PORT),
            upstream=f"127.0.0.1:{SUPERLINK_PORT}",
            cert=Path("/etc/cityfed/certs/coordinator.pem"),
            key=Path("/etc/cityfed/certs/coordinator.key"),
            ca=Path("/etc/cityfed/certs/ca.pem"),
            tls_name="localhost",
            runtime_dir=Path("/run/cityfed-nginx"),
            log_dir=Path("/var/log/cityfed-nginx"),
            foreground=True,
        )
    )
    assert NGINX_CONF.read_text(encoding="utf-8") == expected
    assert render_nginx.nginx_conf_text() == expected
    assert render_nginx.main(["--check"]) == 0
    # systemd's front: the same text, upstream the SuperLink's socket.
    systemd = render_nginx.SYSTEMD_CONF_FILE.read_text(encoding="utf-8")
    assert systemd == expected.replace(
        f"https://127.0.0.1:{SUPERLINK_PORT};", f"https://unix:{render_nginx.SUPERLINK_SOCKET}:;"
    )
    assert systemd != expected


def test_systemd_superlink_is_reachable_only_through_its_socket() -> None:
    superlink = _unit(SYSTEMD / "cityfed-superlink.service")
    assert _values(superlink, "Service", "PrivateNetwork") == ["yes"]
    socket_unit = _unit(SYSTEMD / "cityfed-superlink-bridge.socket")
    socket = dict(socket_unit["Socket"])
    assert socket["ListenStream"] == str(render_nginx.SUPERLINK_SOCKET)
    assert (socket["SocketUser"], socket["SocketMode"]) == ("cityfed", "0600")
    bridge = _unit(SYSTEMD / "cityfed-superlink-bridge.service")
    assert _values(bridge, "Unit", "JoinsNamespaceOf") == ["cityfed-superlink.service"]
    assert _values(bridge, "Service", "PrivateNetwork") == ["yes"]
    [start] = _values(bridge, "Service", "ExecStart")
    assert start.split()[1] == "127.0.0.1:${CITYFED_SUPERLINK_PORT}"
    front = _unit(SYSTEMD / "cityfed-front.service")
    assert "cityfed-superlink-bridge.socket" in " ".join(_values(front, "Unit", "Wants"))


def _local_conf(tmp_path: Path, certs: Path) -> Path:
    text = (
        NGINX_CONF.read_text()
        .replace("/etc/cityfed/certs", str(certs))
        .replace("/run/cityfed-nginx", str(tmp_path / "run"))
        .replace("/var/log/cityfed-nginx", str(tmp_path / "log"))
    )
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    (tmp_path / "log").mkdir()
    return conf


def test_nginx_accepts_the_committed_config(tmp_path: Path, certs: Path) -> None:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        pytest.skip("nginx is not installed")
    conf = _local_conf(tmp_path, certs)
    # The front's entrypoint creates the folders the config writes to.
    entrypoint.prepare_front(conf)
    assert (tmp_path / "run" / "tmp").is_dir()
    proc = subprocess.run(
        [nginx, "-t", "-c", str(conf), "-e", str(tmp_path / "errlog")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---------------------------------------------------------------- entrypoint


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    return copy_demo_data(tmp_path / "data")


def test_entrypoint_superlink_is_what_coordinator_start_runs(
    tmp_path: Path, certs: Path, demo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: what `cityfed coordinator start` writes and runs (no process started)
    from cityfed_server.coordinator import start_coordinator
    from cityfed_server.layout import CoordinatorConfig, CoordinatorLayout

    _capture_start(monkeypatch)
    state = tmp_path / "state"
    config = CoordinatorConfig(
        federation=str(demo / "federation.toml"),
        certs=str(certs),
        public=f"localhost:{PUBLIC_PORT}",
        superlink_port=SUPERLINK_PORT,
    )
    with pytest.raises(_StartedError) as started:
        start_coordinator(CoordinatorLayout(state), config)
    written = {
        name: (state / name).read_text()
        for name in ("coordinator.json", "flwr/config.toml", "app/pyproject.toml")
    }
    shutil.rmtree(state)
    # Execute
    argv = entrypoint.prepare_superlink(
        entrypoint.SuperlinkSettings(
            state=state,
            certs=certs,
            federation=demo / "federation.toml",
            port=SUPERLINK_PORT,
            front=f"localhost:{PUBLIC_PORT}",
        )
    )
    # Assert: the same flags and the same state for enrol, revoke, status and run;
    # `coordinator start` wraps them in a network namespace of their own, where the
    # container (or systemd's PrivateNetwork=) gives the entrypoint its own network.
    wrapped = started.value.argv
    assert wrapped[-len(argv) - 1 :] == ["--", *argv]
    assert Path(wrapped[0]).name == "unshare" and "cityfed.ops.isolate" in wrapped
    for name, text in written.items():
        if name == "coordinator.json":
            text = text.replace('"private_network": true', '"private_network": false')
        assert (state / name).read_text() == text, name
    assert (state / "models").is_dir() and (state / "run").is_dir()


def test_entrypoint_city_is_what_city_start_runs(
    tmp_path: Path, certs: Path, demo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare
    from cityfed_client import node

    keys = issue_city("EWR", certs, tmp_path / "keys")
    launched = _capture_start(monkeypatch, let=("gatekeeper",))
    probed: list[Address] = []
    monkeypatch.setattr(node, "probe_coordinator", lambda address, ca: probed.append(address))
    monkeypatch.setattr(
        "cityfed.ops.tls.probe_coordinator", lambda address, ca: probed.append(address)
    )
    with pytest.raises(_StartedError) as started:
        node.start_node(
            node.NodeLayout(tmp_path / "node"),
            city_config=demo / "ewr.toml",
            coordinator=f"coordinator.example.org:{PUBLIC_PORT}",
            ca=keys["ca"],
            key=keys["node_key"],
            runtime_port=9094,
        )
    # Execute
    argv = entrypoint.check_city(
        entrypoint.CitySettings(
            config=demo / "ewr.toml",
            coordinator=f"coordinator.example.org:{PUBLIC_PORT}",
            ca=keys["ca"],
            key=keys["node_key"],
            runtime_port=9094,
            state=tmp_path / "node",
            wait=0,
        )
    )
    # Assert: the same SuperNode, and the same gatekeeper beside it
    assert argv == started.value.argv
    assert "--isolation" in argv and argv[argv.index("--isolation") + 1] == "process"
    assert launched[0] == entrypoint.gatekeeper_argv(demo / "ewr.toml", 9094, tmp_path / "node")
    assert probed == [Address("coordinator.example.org", PUBLIC_PORT)] * 2


def test_entrypoint_service_is_what_coordinator_start_runs(
    tmp_path: Path, certs: Path, demo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cityfed_server.coordinator import service_argv
    from cityfed_server.layout import CoordinatorConfig, CoordinatorLayout

    state = tmp_path / "state"
    entrypoint.prepare_superlink(
        entrypoint.SuperlinkSettings(
            state=state,
            certs=certs,
            federation=demo / "federation.toml",
            port=SUPERLINK_PORT,
            front=f"localhost:{PUBLIC_PORT}",
            service=f"0.0.0.0:{SERVICE_PORT}",
        )
    )
    # What `coordinator status` reports comes from coordinator.json.
    recorded = json.loads((state / "coordinator.json").read_text())
    assert recorded["service"] == f"0.0.0.0:{SERVICE_PORT}"
    layout = CoordinatorLayout(state)
    config = CoordinatorConfig(
        federation="", certs=str(certs), public="x:1", service=f"0.0.0.0:{SERVICE_PORT}"
    )
    expected = service_argv(layout, config)
    assert entrypoint.service_argv(state, certs, f"0.0.0.0:{SERVICE_PORT}") == expected
    launched: list[list[str]] = []

    def fake_exec(argv: list[str], env: Any, cwd: Path | None = None) -> None:
        launched.append(list(argv))
        raise SystemExit(0)

    monkeypatch.setattr(entrypoint, "_exec", fake_exec)
    with pytest.raises(SystemExit):
        entrypoint.main(["service", "--state", str(state), "--certs", str(certs),
                         "--listen", f"0.0.0.0:{SERVICE_PORT}"])  # fmt: skip
    assert launched == [expected]
    assert (state / "run" / "service.pid").read_text().strip() == str(os.getpid())


def test_entrypoint_service_waits_for_the_superlink_state(
    tmp_path: Path, certs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = entrypoint.main(["service", "--state", str(tmp_path), "--certs", str(certs),
                            "--wait", "0"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: {tmp_path / 'coordinator.json'}: not found; start the coordinator's "
        "superlink first"
    )


def test_entrypoint_health_service_shakes_hands_with_the_real_service(
    tmp_path: Path, certs: Path, health_server: int, capsys: pytest.CaptureFixture[str]
) -> None:
    from cityfed_server.layout import CoordinatorLayout
    from cityfed_server.service.server import build_server

    ca = ["--ca", str(certs / "ca.pem")]
    assert entrypoint.main(["health-service", f"localhost:{_free_port()}", *ca]) == 1
    assert capsys.readouterr().err.startswith("unhealthy: localhost:")
    server, port = build_server(CoordinatorLayout(tmp_path), "127.0.0.1:0", certs, workers=2)
    server.start()
    try:
        assert entrypoint.main(["health-service", f"localhost:{port}", *ca]) == 0
        # Another CA's certificate is not the federation's service.
        other = tmp_path / "other"
        write_coordinator(other, ["localhost"], name="impostor")
        impostor = ["--ca", str(other / "ca.pem")]
        code = entrypoint.main(["health-service", f"localhost:{port}", *impostor])
        assert code == 1
        assert "CERTIFICATE_VERIFY_FAILED" in capsys.readouterr().err
    finally:
        server.stop(None)
    # An HTTPS server of the same CA without HTTP/2 is not the gRPC service.
    assert entrypoint.main(["health-service", f"localhost:{health_server}", *ca]) == 1
    assert "no HTTP/2" in capsys.readouterr().err


def test_entrypoint_city_refuses_bad_settings(
    tmp_path: Path, certs: Path, demo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = issue_city("EWR", certs, tmp_path / "keys")
    common = ["--config", str(demo / "ewr.toml"), "--ca", str(keys["ca"]), "--wait", "0"]
    code = entrypoint.main(["check-city", *common, "--key", str(keys["node_key"])])
    assert code == 2
    assert capsys.readouterr().err.strip().startswith("error: CITYFED_COORDINATOR: set it")
    bad = [*common, "--coordinator", "localhost:9", "--key", str(keys["node_pub"])]
    assert entrypoint.main(["check-city", *bad]) == 2
    err = capsys.readouterr().err.strip()
    assert "not an OpenSSH elliptic-curve private key" in err and "\n" not in err
    down = [*common, "--coordinator", f"localhost:{_free_port()}", "--key", str(keys["node_key"])]
    assert entrypoint.main(["check-city", *down]) == 2
    assert "not reachable" in capsys.readouterr().err


@pytest.fixture
def health_server(certs: Path) -> Iterator[int]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs / "coordinator.pem", certs / "coordinator.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def test_entrypoint_health(health_server: int, certs: Path, tmp_path: Path) -> None:
    ca = str(certs / "ca.pem")
    assert entrypoint.main(["health", f"localhost:{health_server}", "--ca", ca]) == 0
    # A front whose certificate is not from the federation CA is not healthy.
    other = tmp_path / "other"
    write_coordinator(other, ["localhost"])
    address = f"localhost:{health_server}"
    assert entrypoint.main(["health", address, "--ca", str(other / "ca.pem")]) == 1
    assert entrypoint.main(["health", f"localhost:{_free_port()}", "--ca", ca]) == 1


def test_entrypoint_backup_copies_a_live_state(tmp_path: Path) -> None:
    # Prepare: a state folder with a database in WAL mode, still open
    state = tmp_path / "state"
    (state / "models" / "run-1").mkdir(parents=True)
    (state / "run").mkdir()
    (state / "coordinator.json").write_text("{}")
    (state / "enrolment.json").write_text('{"EWR": {}}')
    (state / "models" / "run-1" / "model.pb").write_bytes(b"model")
    (state / "run" / "superlink.pid").write_text("1\n")
    live = sqlite3.connect(state / "superlink.db")
    live.execute("PRAGMA journal_mode=WAL")
    live.execute("CREATE TABLE node (id INTEGER)")
    live.execute("INSERT INTO node VALUES (42)")
    live.commit()
    try:
        # Execute
        assert entrypoint.main(["backup", str(tmp_path / "copy"), "--state", str(state)]) == 0
    finally:
        live.close()
    # Assert
    copy = tmp_path / "copy"
    assert not list(copy.glob("superlink.db-*"))  # one self-contained database file
    assert not (copy / "run").exists()
    assert (copy / "models" / "run-1" / "model.pb").read_bytes() == b"model"
    assert (copy / "enrolment.json").is_file()
    restored = sqlite3.connect(copy / "superlink.db")
    try:
        assert restored.execute("SELECT id FROM node").fetchall() == [(42,)]
    finally:
        restored.close()
    assert entrypoint.main(["backup", str(copy), "--state", str(state)]) == 2


# ---------------------------------------------------------------- README


def test_readme_names_every_asset_and_only_real_commands() -> None:
    import cityfed.cli.main  # noqa: F401  (registers every command, `city enrol` too)
    from cityfed.cli.deploy import certs_app, city_app, coordinator_app

    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    for path in DEPLOY.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts and path.name != "README.md":
            assert path.relative_to(DEPLOY).as_posix() in readme, path
    groups = {"certs": certs_app, "coordinator": coordinator_app, "city": city_app}
    for group, command in re.findall(r"\bcityfed (certs|coordinator|city) ([a-z]+)", readme):
        names = {c.name for c in groups[group].registered_commands}
        assert command in names, f"cityfed {group} {command}"
    entry = set(entrypoint._COMMANDS)
    for command in re.findall(r"\bcityfed-entrypoint ([a-z-]+)", readme):
        assert command in entry, command


# ---------------------------------------------------------------- real processes


@pytest.mark.slow
def test_entrypoint_runs_a_federation_on_loopback(tmp_path: Path, certs: Path) -> None:
    """The containers' processes, without containers: SuperLink, front, service, two cities.

    The run is started and watched through the gRPC service (the ``service``
    container reaches the Control API on the SuperLink's loopback, as the
    front reaches the Fleet API), and the model is read back through it.
    """
    from cityfed.client_api.client import Client
    from cityfed.ops.certs import issue_person

    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        pytest.skip("nginx is not installed")
    public, superlink, service = _free_port(), _free_port(), _free_port()
    conf = _local_conf(tmp_path, certs)
    conf.write_text(
        conf.read_text()
        .replace(f"0.0.0.0:{PUBLIC_PORT}", f"127.0.0.1:{public}")
        .replace(f"127.0.0.1:{SUPERLINK_PORT}", f"127.0.0.1:{superlink}")
    )
    data = copy_demo_data(tmp_path / "data")
    state = tmp_path / "state"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}:/usr/sbin",
        "CITYFED_STATE": str(state),
        "CITYFED_CERTS": str(certs),
        "CITYFED_FEDERATION": str(data / "federation.toml"),
        "CITYFED_SUPERLINK_PORT": str(superlink),
        "CITYFED_FRONT": f"localhost:{public}",
        "CITYFED_NGINX_CONF": str(conf),
        "CITYFED_SERVICE": f"127.0.0.1:{service}",
    }
    script = str(DOCKER / "entrypoint.py")
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(args: list[str], extra: dict[str, str], log: str) -> None:
        with (tmp_path / log).open("wb") as out:
            procs.append(
                subprocess.Popen(
                    [sys.executable, script, *args],
                    env={**env, **extra},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )

    def cityfed(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cityfed.cli", *args],
            env={**env, "COLUMNS": "200", "NO_COLOR": "1"},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    def wait_for(condition: Any, what: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"{what}: timed out\n" + "\n".join(
                f"== {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                for p in tmp_path.glob("*.log")
            )
            time.sleep(0.5)

    health = [sys.executable, script, "health", "--ca", str(certs / "ca.pem")]

    def healthy(address: str) -> bool:
        check = subprocess.run([*health, address], capture_output=True, check=False)
        return check.returncode == 0

    try:
        spawn(["superlink"], {}, "superlink.log")
        wait_for(lambda: healthy(f"localhost:{superlink}"), "superlink")
        spawn(["front"], {}, "front.log")
        wait_for(lambda: healthy(f"localhost:{public}"), "front")
        spawn(["service"], {}, "service.log")
        probe = [sys.executable, script, "health-service", "--ca", str(certs / "ca.pem")]
        probe.append(f"localhost:{service}")
        wait_for(
            lambda: subprocess.run(probe, capture_output=True, check=False).returncode == 0,
            "service",
        )
        status = json.loads(cityfed("coordinator", "status", "--json").stdout)
        assert status["superlink"]["running"] and status["nginx"]["running"], status
        assert status["service"]["running"] and status["service"]["pid"] == procs[2].pid, status
        assert status["healthy"] and status["superlink"]["pid"] == procs[0].pid
        cities = {"EWR": "ewr.toml", "LGA": "lga.toml"}
        for k, (name, toml) in enumerate(cities.items()):
            keys = issue_city(name, certs, tmp_path / "keys" / name)
            if name == "LGA" and shutil.which("ssh-keygen"):
                # deploy/README.md's second way: the city makes its own node key,
                # only the public half travels.
                keys["node_key"] = tmp_path / "keys" / "LGA-own.node.key"
                keys["node_pub"] = keys["node_key"].with_name("LGA-own.node.key.pub")
                ssh_keygen = ["ssh-keygen", "-q", "-t", "ecdsa", "-b", "384", "-N", "", "-C", "LGA"]
                subprocess.run(
                    [*ssh_keygen, "-f", str(keys["node_key"])],
                    check=True,
                    timeout=30,
                )
            proc = cityfed("coordinator", "enrol", name, str(keys["node_pub"]))
            assert proc.returncode == 0, proc.stderr
            node = {
                "CITYFED_CITY_CONFIG": str(data / toml),
                "CITYFED_RUNTIME_PORT": str(_free_port()),
                "CITYFED_NODE_STATE": str(tmp_path / "nodes" / name),
            }
            spawn(
                ["city"],
                {
                    **node,
                    "CITYFED_COORDINATOR": f"localhost:{public}",
                    "CITYFED_CA": str(keys["ca"]),
                    "CITYFED_NODE_KEY": str(keys["node_key"]),
                },
                f"city-{k}.log",
            )
            # The gatekeeper gets the city's data and state, not the key (as in compose).
            spawn(["gatekeeper"], node, f"gatekeeper-{k}.log")
        for k in range(len(cities)):
            log = tmp_path / f"city-{k}.log"
            wait_for(lambda log=log: "SuperNode ID:" in log.read_text(errors="replace"), log.name)
        people = tmp_path / "people"
        operator = issue_person("olga", "operator", certs, people)
        analyst = issue_person("ana", "analyst", certs, people)
        address = f"localhost:{service}"
        with Client(
            address, ca=certs / "ca.pem", cert=operator["client_cert"], key=operator["client_key"]
        ) as client:
            run_id = client.start_run(expected_cities=len(cities), wait_seconds=60)
            events = list(client.watch(run_id, timeout=300))
        assert events and events[-1]["kind"] == "done", events
        with Client(
            address, ca=certs / "ca.pem", cert=analyst["client_cert"], key=analyst["client_key"]
        ) as client:
            [model] = client.list_models()
            report = client.report(run_id)
        assert model["run_id"] == run_id
        assert sorted(report["model"]["cities"]) == sorted(cities)
        assert (state / "models" / run_id / "model.pb").is_file()
    finally:
        for proc in reversed(procs):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
