"""``cityfed.Client``: the coordinator's gRPC service from Python, over mutual TLS.

>>> with cityfed.Client("coordinator.example.org:9444", ca="ca.pem",
...                     cert="ana.analyst.pem", key="ana.analyst.key") as client:
...     model = client.get_model(federation="ewr-energy")   # an sklearn estimator
...     y = client.predict(frame, federation="ewr-energy")

Predictions stream in chunks, so a frame of any length is sent with bounded
memory on both sides; every failure is a :class:`~cityfed.errors.CityFedError`
that names the gRPC status and the server's message.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
import numpy as np

from cityfed.errors import CityFedError
from cityfed.model.estimator import (
    CityFedClassifier,
    CityFedPoissonRegressor,
    CityFedRegressor,
    estimator_of,
)
from cityfed.model.proto import model_from_proto
from cityfed.typing import FloatArray
from cityfed.v1 import service_pb2 as pb
from cityfed.v1 import service_pb2_grpc as pb_grpc

__all__ = ["Client", "Prediction"]

#: Rows per PredictStream chunk (the server takes at most 100,000) ...
CHUNK_ROWS = 100_000
#: ... and at most this many bytes of values per chunk (messages stop at 16 MiB).
CHUNK_BYTES = 8 << 20
_MAX_MESSAGE = 16 << 20


@dataclass(frozen=True)
class Prediction:
    """Predictions of one model for a batch of rows."""

    run_id: str
    values: FloatArray
    #: P(class 1) for classification, empty otherwise.
    probabilities: FloatArray


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CityFedError(f"{path}: cannot read the {what} ({exc.strerror})") from None


def _selector(run_id: str | None, federation: str | None) -> dict[str, str]:
    if (run_id is None) == (federation is None):
        raise CityFedError("give exactly one of run_id and federation")
    return {"run_id": run_id} if run_id is not None else {"federation": str(federation)}


class Client:
    """A connection to the coordinator's gRPC service.

    Parameters
    ----------
    address : str
        ``HOST:PORT`` of the service.
    ca : path
        The federation's ``ca.pem``.
    cert, key : path
        This client's certificate and key (``cityfed certs city|analyst|operator``).
    timeout : float
        Seconds each call may take (streams: each chunk).
    server_name : str, optional
        The name to check in the server's certificate; default the host of ``address``.
    """

    def __init__(
        self,
        address: str,
        *,
        ca: str | Path,
        cert: str | Path,
        key: str | Path,
        timeout: float = 60.0,
        server_name: str | None = None,
    ) -> None:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read(ca, "CA certificate"),
            private_key=_read(key, "client key"),
            certificate_chain=_read(cert, "client certificate"),
        )
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", _MAX_MESSAGE),
            ("grpc.max_send_message_length", _MAX_MESSAGE),
        ]
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        self.address = address
        self.timeout = timeout
        self._channel = grpc.secure_channel(address, credentials, options=options)
        self._stub = pb_grpc.CityFedStub(self._channel)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection."""
        self._channel.close()

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise _error(self.address, exc) from None

    def _pages(self, method: Any, request_of: Callable[[str], Any]) -> Iterator[Any]:
        """Every answer of a paged call, following ``next_page_token``."""
        token = ""
        while True:
            answer = self._call(method, request_of(token))
            yield answer
            token = answer.next_page_token
            if not token:
                return

    # ------------------------------------------------------------------ models

    def list_models(self, federation: str = "") -> list[dict[str, Any]]:
        """Published models, newest first (every page)."""
        pages = self._pages(
            self._stub.ListModels,
            lambda token: pb.ListModelsRequest(
                federation=federation, page_size=500, page_token=token
            ),
        )
        return [_summary(m) for answer in pages for m in answer.models]

    def get_model(
        self, run_id: str | None = None, *, federation: str | None = None
    ) -> CityFedRegressor | CityFedClassifier | CityFedPoissonRegressor:
        """A published model as the estimator :func:`cityfed.load_model` returns."""
        answer = self._call(
            self._stub.GetModel, pb.GetModelRequest(**_selector(run_id, federation))
        )
        return estimator_of(model_from_proto(answer.model, f"model of run {answer.run_id}"))

    def predict(
        self,
        frame: Any,
        run_id: str | None = None,
        *,
        federation: str | None = None,
        chunk_rows: int = CHUNK_ROWS,
    ) -> Prediction:
        """Predictions for the rows of ``frame`` (a DataFrame in federation columns).

        The rows go in chunks of ``chunk_rows`` over one stream.
        """
        selector = _selector(run_id, federation)
        names = [str(c) for c in frame.columns]
        # Column by column: each is contiguous already (no row-major copy of the frame).
        columns = [np.asarray(frame[c], dtype=np.float64) for c in frame.columns]
        rows = len(frame)
        chunk_rows = max(1, min(chunk_rows, CHUNK_BYTES // (8 * max(len(names), 1))))

        def chunks() -> Iterator[pb.PredictStreamRequest]:
            for start in range(0, max(rows, 1), chunk_rows):
                stop = start + chunk_rows
                packed = [
                    pb.Column(name=name, float64=_packed(column[start:stop]))
                    for name, column in zip(names, columns, strict=True)
                ]
                yield pb.PredictStreamRequest(columns=packed, **(selector if start == 0 else {}))

        predictions: list[FloatArray] = []
        probabilities: list[FloatArray] = []
        answered = ""
        try:
            for part in self._stub.PredictStream(chunks(), timeout=self.timeout * 10):
                answered = part.run_id
                predictions.append(_unpacked(part.predictions_float64, part.predictions))
                probabilities.append(_unpacked(part.probabilities_float64, part.probabilities))
        except grpc.RpcError as exc:
            raise _error(self.address, exc) from None
        return Prediction(
            run_id=answered,
            values=np.concatenate(predictions) if predictions else np.empty(0),
            probabilities=np.concatenate(probabilities) if probabilities else np.empty(0),
        )

    # ------------------------------------------------------------------ runs

    def report(self, run_id: str) -> dict[str, Any]:
        """A run's ``report.json``."""
        answer = self._call(self._stub.GetReport, pb.GetReportRequest(run_id=run_id))
        report: dict[str, Any] = json.loads(answer.report_json)
        return report

    def runs(self) -> list[dict[str, Any]]:
        """Every run, newest first."""
        pages = self._pages(
            self._stub.ListRuns, lambda token: pb.ListRunsRequest(page_size=500, page_token=token)
        )
        return [_run(r) for answer in pages for r in answer.runs]

    def run(self, run_id: str) -> dict[str, Any]:
        """One run and its progress events."""
        answer = self._call(self._stub.GetRun, pb.GetRunRequest(run_id=run_id))
        return {**_run(answer.run), "events": [_event(e) for e in answer.events]}

    def start_run(self, *, expected_cities: int = 0, wait_seconds: float = 0.0) -> str:
        """Operator only: submit a run of the coordinator's federation; its run id."""
        answer = self._call(
            self._stub.StartRun,
            pb.StartRunRequest(expected_cities=expected_cities, wait_seconds=wait_seconds),
        )
        return str(answer.run_id)

    def watch(self, run_id: str, *, timeout: float = 3600.0) -> Iterator[dict[str, str]]:
        """A run's progress events as they come, until it is done or failed."""
        try:
            for answer in self._stub.WatchRun(pb.WatchRunRequest(run_id=run_id), timeout=timeout):
                yield _event(answer.event)
        except grpc.RpcError as exc:
            raise _error(self.address, exc) from None

    # ------------------------------------------------------------------ enrolment

    def request_enrolment(self, name: str, public_key: str | Path, contact: str) -> dict[str, str]:
        """Ask to enrol city ``name`` with its node public key file; the request."""
        text = _read(public_key, "node public key").decode("utf-8", errors="replace")
        answer = self._call(
            self._stub.RequestEnrolment,
            pb.RequestEnrolmentRequest(name=name, node_public_key=text, contact=contact),
        )
        return _enrolment(answer.enrolment)

    def enrolments(self) -> list[dict[str, str]]:
        """Requests and enrolled cities (a city sees its own)."""
        answer = self._call(self._stub.ListEnrolments, pb.ListEnrolmentsRequest())
        return [_enrolment(e) for e in answer.enrolments]

    def approve(self, name: str) -> dict[str, str]:
        """Operator only: admit the key city ``name`` asked for."""
        answer = self._call(self._stub.ApproveEnrolment, pb.ApproveEnrolmentRequest(name=name))
        return _enrolment(answer.enrolment)

    def reject(self, name: str, reason: str = "") -> dict[str, str]:
        """Operator only: turn city ``name``'s request down."""
        answer = self._call(
            self._stub.RejectEnrolment, pb.RejectEnrolmentRequest(name=name, reason=reason)
        )
        return _enrolment(answer.enrolment)


def _packed(values: FloatArray) -> bytes:
    """Values as little-endian doubles, the fast form of a Column."""
    return np.ascontiguousarray(values, dtype="<f8").tobytes()


def _unpacked(packed: bytes, values: Any) -> FloatArray:
    """An answer's values, from whichever form the server chose."""
    if packed:
        return np.frombuffer(packed, dtype="<f8").astype(np.float64)
    return np.asarray(values, dtype=np.float64)


def _error(address: str, exc: grpc.RpcError) -> CityFedError:
    code = exc.code() if isinstance(exc, grpc.Call) else None
    details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    name = code.name if code is not None else "UNKNOWN"
    return CityFedError(f"coordinator service {address}: {name}: {details}")


def _summary(model: pb.ModelSummary) -> dict[str, Any]:
    return {
        "run_id": model.run_id,
        "federation": model.federation,
        "kind": model.kind,
        "task": model.task,
        "created_at": model.created_at,
        "rounds": model.rounds,
        "cities": list(model.cities),
        "training_rows": model.training_rows,
    }


def _run(run: pb.RunSummary) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "federation": run.federation,
        "status": run.status,
        "cities": list(run.cities),
        "rounds": run.rounds,
        "message": run.message,
    }


def _event(event: pb.ProgressEvent) -> dict[str, str]:
    return {"kind": event.kind, "message": event.message}


def _enrolment(entry: pb.Enrolment) -> dict[str, str]:
    return {
        "name": entry.name,
        "status": entry.status,
        "contact": entry.contact,
        "requested_at": entry.requested_at,
        "node_id": entry.node_id,
        "key_sha256": entry.key_sha256,
    }
