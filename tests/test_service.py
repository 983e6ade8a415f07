"""The coordinator's gRPC service on 127.0.0.1, over mutual TLS with certificates minted here."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pandas as pd
import pytest
from cityfed_server.layout import CoordinatorLayout
from cityfed_server.publish import publish
from cityfed_server.service.server import build_server
from cityfed_server.training import train
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cityfed import Client, load_model
from cityfed.config.spec import load_federation
from cityfed.errors import CityFedError
from cityfed.ops.certs import (
    _pem_cert,
    _pem_key,
    issue_city,
    issue_person,
    load_ca,
    write_coordinator,
)
from cityfed.ops.progress import PROGRESS_FILE, ProgressLog
from cityfed.v1 import service_pb2 as pb
from cityfed.v1 import service_pb2_grpc as pb_grpc

from .synthetic import FEATURES, local_exchange, write_federation

NAMES = [name for name, _ in FEATURES]
RIDGE_RUN = "20261201T080000Z-aaaaaa"
LOGISTIC_RUN = "20261201T090000Z-bbbbbb"


@dataclass
class Service:
    root: Path
    layout: CoordinatorLayout
    certs: Path
    address: str
    frames: dict[str, pd.DataFrame]

    def client(self, who: str) -> Client:
        return Client(
            self.address,
            ca=self.certs / "ca.pem",
            cert=self.root / "people" / f"{who}.pem",
            key=self.root / "people" / f"{who}.key",
            server_name="localhost",
        )

    def channel(self, who: str | None, ca: Path | None = None) -> grpc.Channel:
        """A raw channel as ``who`` (None: no client certificate)."""
        people = self.root / "people"
        credentials = grpc.ssl_channel_credentials(
            root_certificates=(ca or self.certs / "ca.pem").read_bytes(),
            private_key=(people / f"{who}.key").read_bytes() if who else None,
            certificate_chain=(people / f"{who}.pem").read_bytes() if who else None,
        )
        return grpc.secure_channel(
            self.address, credentials, options=[("grpc.ssl_target_name_override", "localhost")]
        )


def _publish(root: Path, layout: CoordinatorLayout, run_id: str, **kw: object) -> pd.DataFrame:
    files = write_federation(root / run_id, **kw)  # type: ignore[arg-type]
    fed = load_federation(files.federation)
    result = train(fed, local_exchange(files.cities), run_id=run_id)
    out = layout.models / run_id
    out.mkdir(parents=True)
    publish(fed, result, out)
    (out / "run.json").write_text(json.dumps({"run": run_id, "federation": fed.name}))
    log = ProgressLog(out / PROGRESS_FILE)
    log.emit("info", "asking 3 cities for their statistics")
    log.emit("done", "model published (1 training round(s))")
    return pd.DataFrame(files.X_pooled, columns=NAMES)


def _people(root: Path, certs: Path) -> None:
    people = root / "people"
    issue_city("city0", certs, root / "cities")
    for name in ("city0",):
        for suffix in ("pem", "key"):
            (people / f"{name}.{suffix}").parent.mkdir(parents=True, exist_ok=True)
            (people / f"{name}.{suffix}").write_bytes(
                (root / "cities" / f"{name}.{suffix}").read_bytes()
            )
    for name, role in (("ana", "analyst"), ("olga", "operator")):
        files = issue_person(name, role, certs, root / "issued")
        (people / f"{name}.pem").write_bytes(files["client_cert"].read_bytes())
        (people / f"{name}.key").write_bytes(files["client_key"].read_bytes())
    ca = load_ca(certs)
    key, cert = ca.issue("late", client=True, role="analyst", valid_for=-dt.timedelta(days=1))
    (people / "late.pem").write_bytes(_pem_cert(cert))
    (people / "late.key").write_bytes(_pem_key(key))
    other = root / "other-ca"
    write_coordinator(other, ["localhost"], name="someone-else")
    stranger_key, stranger = load_ca(other).issue("ana", client=True, role="analyst")
    (people / "stranger.pem").write_bytes(_pem_cert(stranger))
    (people / "stranger.key").write_bytes(_pem_key(stranger_key))
    (people / "other-ca.pem").write_bytes((other / "ca.pem").read_bytes())


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("service")
    certs = root / "certs"
    write_coordinator(certs, ["localhost"], name="cityfed-test")
    layout = CoordinatorLayout(root / "state")
    frames = {
        RIDGE_RUN: _publish(root, layout, RIDGE_RUN, alpha=2.0),
        LOGISTIC_RUN: _publish(
            root, layout, LOGISTIC_RUN, task="classification", model="logistic", seed=4
        ),
    }
    _people(root, certs)
    server, port = build_server(layout, "127.0.0.1:0", certs)
    server.start()
    try:
        yield Service(root, layout, certs, f"127.0.0.1:{port}", frames)
    finally:
        server.stop(grace=None)


def test_list_get_predict_report_and_runs(service: Service) -> None:
    with service.client("ana") as client:
        models = client.list_models()
        assert [m["run_id"] for m in models] == [LOGISTIC_RUN, RIDGE_RUN]  # newest first
        assert models[1]["training_rows"] == 920 and models[1]["kind"] == "ridge"
        # The model over the wire is the published estimator, and predicts the same.
        for run_id in (RIDGE_RUN, LOGISTIC_RUN):
            local = load_model(service.layout.models / run_id / "model.pb")
            remote = client.get_model(run_id)
            frame = service.frames[run_id]
            np.testing.assert_array_equal(remote.coef_, local.coef_)
            assert remote.summary() == local.summary()  # inference travels with the model
            predicted = client.predict(frame, run_id)
            np.testing.assert_allclose(predicted.values, local.predict(frame), rtol=1e-12)
            if run_id == LOGISTIC_RUN:
                np.testing.assert_allclose(
                    predicted.probabilities, local.predict_proba(frame)[:, 1], rtol=1e-12
                )
        latest = client.get_model(federation="synthetic")
        assert latest.model_.run_id == LOGISTIC_RUN
        report = client.report(RIDGE_RUN)
        assert report["run_id"] == RIDGE_RUN and report["model"]["training_rows"] == 920
        runs = client.runs()
        assert [(r["run_id"], r["status"]) for r in runs] == [
            (LOGISTIC_RUN, "published"), (RIDGE_RUN, "published")
        ]  # fmt: skip
        run = client.run(RIDGE_RUN)
        assert [e["kind"] for e in run["events"]] == ["info", "done"]
        assert [e["kind"] for e in client.watch(RIDGE_RUN)] == ["info", "done"]


def test_pages_follow_their_tokens(service: Service) -> None:
    with service.channel("ana") as channel:
        stub = _stub(channel)
        first = stub.ListModels(pb.ListModelsRequest(page_size=1), timeout=10)
        assert [m.run_id for m in first.models] == [LOGISTIC_RUN]
        assert first.next_page_token == LOGISTIC_RUN
        last = stub.ListModels(
            pb.ListModelsRequest(page_size=1, page_token=first.next_page_token), timeout=10
        )
        assert [m.run_id for m in last.models] == [RIDGE_RUN] and last.next_page_token == ""
        whole = stub.ListRuns(pb.ListRunsRequest(page_size=2), timeout=10)
        assert len(whole.runs) == 2 and whole.next_page_token == ""


def test_a_missing_run_is_not_found_and_a_bad_id_invalid(service: Service) -> None:
    with service.client("ana") as client:
        with pytest.raises(CityFedError, match="NOT_FOUND: run '20991231T000000Z-cccccc' not"):
            client.get_model("20991231T000000Z-cccccc")
        with pytest.raises(
            CityFedError, match=r"INVALID_ARGUMENT: run_id: '\.\./etc' is not a run id"
        ):
            client.report("../etc")


def _stub(channel: grpc.Channel) -> pb_grpc.CityFedStub:
    return pb_grpc.CityFedStub(channel)


def _code(call: object) -> grpc.StatusCode:
    try:
        call()  # type: ignore[operator]
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return,attr-defined]
    return grpc.StatusCode.OK


def _still_serving(service: Service) -> None:
    with service.channel("ana") as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="cityfed.v1.CityFed"), timeout=10
        )
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_refusals_each_with_its_status_while_the_server_keeps_serving(service: Service) -> None:
    listing = pb.ListModelsRequest()
    cases = {
        "no client certificate": (service.channel(None), grpc.StatusCode.UNAVAILABLE),
        "another CA": (service.channel("stranger"), grpc.StatusCode.UNAVAILABLE),
        "expired": (service.channel("late"), grpc.StatusCode.UNAVAILABLE),
        "plaintext": (grpc.insecure_channel(service.address), grpc.StatusCode.UNAVAILABLE),
    }
    for what, (channel, expected) in cases.items():
        with channel:
            code = _code(lambda: _stub(channel).ListModels(listing, timeout=10))  # noqa: B023
        assert code == expected, what
        _still_serving(service)
    with service.channel("city0") as channel:
        stub = _stub(channel)
        assert _code(lambda: stub.ListModels(listing, timeout=10)) == grpc.StatusCode.OK
        # A city calling an operator RPC.
        for call in (
            lambda: stub.StartRun(pb.StartRunRequest(), timeout=10),
            lambda: stub.ApproveEnrolment(pb.ApproveEnrolmentRequest(name="x"), timeout=10),
        ):
            assert _code(call) == grpc.StatusCode.PERMISSION_DENIED
        # Missing or wrong fields, an oversized message, random bytes.
        try:
            stub.Predict(pb.PredictRequest(), timeout=10)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "selector: give run_id or federation" in exc.details()
        wrong = pb.PredictRequest(
            run_id=RIDGE_RUN, columns=[pb.Column(name="dewpoint", values=[1.0])]
        )
        try:
            stub.Predict(wrong, timeout=10)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "columns: feature 'pressure' missing" in exc.details()
        huge = pb.PredictRequest(
            run_id=RIDGE_RUN, columns=[pb.Column(name="dewpoint", values=[0.0] * (3 << 20))]
        )
        assert _code(lambda: stub.Predict(huge, timeout=30)) == grpc.StatusCode.RESOURCE_EXHAUSTED
        raw = channel.unary_unary("/cityfed.v1.CityFed/Predict")
        assert _code(lambda: raw(os.urandom(512), timeout=10)) in (
            grpc.StatusCode.INTERNAL,
            grpc.StatusCode.INVALID_ARGUMENT,
        )
    _still_serving(service)


def test_a_revoked_city_is_refused_without_a_restart(service: Service) -> None:
    registry = service.layout.enrolment
    with service.channel("city0") as channel:
        stub = _stub(channel)
        assert (
            _code(lambda: stub.ListModels(pb.ListModelsRequest(), timeout=10)) == grpc.StatusCode.OK
        )
        registry.write_text(json.dumps({"city0": {"node_id": "1", "revoked_at": "now"}}))
        try:
            stub.ListModels(pb.ListModelsRequest(), timeout=10)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "city 'city0' was revoked" in exc.details()
        else:
            raise AssertionError("a revoked city was served")
        registry.unlink()
        assert (
            _code(lambda: stub.ListModels(pb.ListModelsRequest(), timeout=10)) == grpc.StatusCode.OK
        )


def test_a_revoked_certificate_is_refused_from_its_next_call(service: Service) -> None:
    from cityfed_server.requests import revoke_certificate

    with service.channel("olga") as channel:
        stub = _stub(channel)
        listing = pb.ListModelsRequest()
        assert _code(lambda: stub.ListModels(listing, timeout=10)) == grpc.StatusCode.OK
        revoke_certificate(service.layout, (service.root / "people" / "olga.pem").read_bytes())
        try:
            stub.ListModels(listing, timeout=10)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "the certificate of 'olga'" in exc.details() and "was revoked" in exc.details()
        else:
            raise AssertionError("a revoked certificate was served")
    _still_serving(service)


def test_streams_cannot_take_every_worker(service: Service) -> None:
    # Prepare: a run that never ends, and more watchers than the service keeps
    running = "20261201T100000Z-dddddd"
    folder = service.layout.models / running
    folder.mkdir()
    ProgressLog(folder / PROGRESS_FILE).emit("info", "waiting for 3 cities to connect")
    channels = [service.channel("ana") for _ in range(10)]
    watches = []
    try:
        watches = [
            _stub(c).WatchRun(pb.WatchRunRequest(run_id=running), timeout=20) for c in channels
        ]
        codes = []
        for watch in watches:
            try:
                next(watch)
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                codes.append(exc.code())
        # Assert: the service's stream slots (8 of 16 workers) are taken, the rest are
        # refused at once, and ordinary calls are still served
        assert codes.count(grpc.StatusCode.OK) == 8
        assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 2
        _still_serving(service)
        with service.client("ana") as client:
            assert client.list_models()
    finally:
        for watch in watches:
            watch.cancel()
        for channel in channels:
            channel.close()
        import shutil

        shutil.rmtree(folder)


_FEATURE_NAMES = st.sampled_from([*NAMES, "load", "", "x" * 300])
_COLUMNS = st.lists(
    st.builds(
        pb.Column,
        name=_FEATURE_NAMES,
        values=st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=20),
    ),
    max_size=6,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    run_id=st.one_of(st.none(), st.just(RIDGE_RUN), st.text(max_size=40)),
    federation=st.one_of(st.none(), st.just("synthetic"), st.text(max_size=20)),
    columns=_COLUMNS,
)
def test_generated_requests_get_an_answer_or_a_clear_refusal(
    service: Service, run_id: str | None, federation: str | None, columns: list[pb.Column]
) -> None:
    request = pb.PredictRequest(columns=columns)
    if run_id is not None:
        request.run_id = run_id
    elif federation is not None:
        request.federation = federation
    with service.channel("ana") as channel:
        try:
            answer = _stub(channel).Predict(request, timeout=10)
        except grpc.RpcError as exc:
            assert exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
            assert exc.details() and "Traceback" not in exc.details()
        else:
            assert len(answer.predictions) == len(columns[0].values)


def _peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.slow
def test_a_million_rows_stream_with_bounded_server_memory(service: Service) -> None:
    # Prepare: the service as its own process, as `coordinator start` runs it
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cityfed_server.service.server", "--state",
         str(service.layout.state), "--listen", f"127.0.0.1:{port}", "--certs", str(service.certs)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        address = f"127.0.0.1:{port}"
        rng = np.random.default_rng(5)
        base = service.frames[RIDGE_RUN]
        frame = pd.DataFrame(base.to_numpy()[rng.integers(0, len(base), 1_000_000)], columns=NAMES)
        client = Client(
            address, ca=service.certs / "ca.pem", cert=service.root / "people" / "ana.pem",
            key=service.root / "people" / "ana.key", server_name="localhost",
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                client.list_models()
                break
            except CityFedError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        before = _peak_kib(proc.pid)
        # Execute
        with client:
            predicted = client.predict(frame, RIDGE_RUN, chunk_rows=20_000)
        after = _peak_kib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    # Assert: every row predicted as load_model does; the server's peak grew by far
    # less than the 32 MB of input it streamed
    local = load_model(service.layout.models / RIDGE_RUN / "model.pb")
    assert predicted.values.shape == (1_000_000,)
    np.testing.assert_allclose(predicted.values, local.predict(frame), rtol=1e-12)
    assert after - before < 32 * 1024, (before, after)
    print(f"\nservice peak memory: {before} KiB -> {after} KiB for 1,000,000 rows")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_model_show_summary_prints_the_inference_table(service: Service) -> None:
    from typer.testing import CliRunner

    from cityfed.cli.main import app

    port = service.address.rsplit(":", 1)[1]
    people = service.root / "people"
    result = CliRunner().invoke(
        app,
        [
            "model", "show", LOGISTIC_RUN, "--summary",
            "--service", f"localhost:{port}", "--ca", str(service.certs / "ca.pem"),
            "--cert", str(people / "ana.pem"), "--key", str(people / "ana.key"),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "std err" in result.output and "P>|z|" in result.output
    assert (
        result.output.strip()
        == load_model(service.layout.models / LOGISTIC_RUN / "model.pb").summary()
    )
