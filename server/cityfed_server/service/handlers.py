"""The RPCs of ``cityfed.v1.CityFed``: checks first, then the catalog and the roles.

Every handler names who may call it; every request is validated, and a bad one
gets ``INVALID_ARGUMENT`` with the field it is about. Expected failures map to
status codes (``NOT_FOUND``, ``PERMISSION_DENIED``, ``FAILED_PRECONDITION``);
anything unexpected is logged here and answered ``INTERNAL`` without details.
"""

from __future__ import annotations

import hashlib
import logging
import math
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

import grpc
import numpy as np
from scipy.special import expit

from cityfed.errors import CityFedError
from cityfed.model.proto import model_to_proto
from cityfed.model.record import FederatedModel
from cityfed.typing import FloatArray
from cityfed.v1 import service_pb2 as pb
from cityfed.v1 import service_pb2_grpc as pb_grpc
from cityfed_server.layout import CoordinatorLayout
from cityfed_server.requests import approve, enrolments, reject, request_enrolment
from cityfed_server.service.catalog import RUN_ID, Catalog, NotFoundError, RunInfo
from cityfed_server.service.roles import Caller, RefusedError, Revocations, Role, caller_of

__all__ = ["MAX_ROWS", "CityFedService"]

logger = logging.getLogger(__name__)

#: Rows in one Predict request or one PredictStream chunk (messages stop at 16 MiB).
MAX_ROWS = 100_000
#: Long-lived streams (WatchRun, PredictStream) open at once: each holds a worker
#: thread, so they must leave workers for everything else.
MAX_STREAMS = 8
_PAGE, _MAX_PAGE = 50, 500
_ANY: tuple[Role, ...] = ("city", "analyst", "operator")
_OPERATOR: tuple[Role, ...] = ("operator",)

_Reply = TypeVar("_Reply")


class _InvalidError(Exception):
    """A request that does not say what it must; the message names the field."""


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("unreachable")  # context.abort raises


class CityFedService(pb_grpc.CityFedServicer):
    """The service of one coordinator state folder."""

    def __init__(self, layout: CoordinatorLayout, max_streams: int = MAX_STREAMS) -> None:
        self.layout = layout
        self.streams = threading.BoundedSemaphore(max_streams)
        self.catalog = Catalog(layout.models)
        self.revocations = Revocations(layout.enrolment, layout.state / "revoked-certs.json")

    # ------------------------------------------------------------------ plumbing

    def _caller(self, context: grpc.ServicerContext, roles: tuple[Role, ...]) -> Caller:
        auth = {k: [bytes(x) for x in v] for k, v in context.auth_context().items()}
        try:
            caller = caller_of(auth, self.revocations)
        except RefusedError as exc:
            code = grpc.StatusCode.UNAUTHENTICATED if exc.unauthenticated else None
            _abort(context, code or grpc.StatusCode.PERMISSION_DENIED, str(exc))
        if caller.role not in roles:
            _abort(
                context,
                grpc.StatusCode.PERMISSION_DENIED,
                f"{caller.role} {caller.name!r} may not call this: {' or '.join(roles)} only",
            )
        return caller

    def _answer(
        self,
        context: grpc.ServicerContext,
        roles: tuple[Role, ...],
        work: Callable[[Caller], _Reply],
    ) -> _Reply:
        caller = self._caller(context, roles)
        try:
            return work(caller)
        except _InvalidError as exc:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except NotFoundError as exc:
            _abort(context, grpc.StatusCode.NOT_FOUND, str(exc))
        except CityFedError as exc:
            _abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except Exception:  # never a traceback to the client
            logger.exception("internal error in %s", work)
            _abort(context, grpc.StatusCode.INTERNAL, "internal error; see the service's log")

    def _run_of(self, message: Any) -> str:
        """The run a request selects: its run_id, or the latest of its federation."""
        which = message.WhichOneof("selector")
        if which == "run_id":
            return _run_id(str(message.run_id))
        if which == "federation":
            if not message.federation:
                raise _InvalidError("federation: empty")
            return self.catalog.latest(message.federation)
        raise _InvalidError("selector: give run_id or federation")

    # ------------------------------------------------------------------ models

    def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.ServicerContext
    ) -> pb.ListModelsResponse:
        def work(_: Caller) -> pb.ListModelsResponse:
            runs = self.catalog.published(request.federation)
            page, token = _page(runs, request.page_size, request.page_token)
            summaries = [_summary(run_id, self.catalog.model(run_id)) for run_id in page]
            return pb.ListModelsResponse(models=summaries, next_page_token=token)

        return self._answer(context, _ANY, work)

    def GetModel(
        self, request: pb.GetModelRequest, context: grpc.ServicerContext
    ) -> pb.GetModelResponse:
        def work(_: Caller) -> pb.GetModelResponse:
            run_id = self._run_of(request)
            model = model_to_proto(self.catalog.model(run_id))
            return pb.GetModelResponse(run_id=run_id, model=model)

        return self._answer(context, _ANY, work)

    def Predict(
        self, request: pb.PredictRequest, context: grpc.ServicerContext
    ) -> pb.PredictResponse:
        def work(_: Caller) -> pb.PredictResponse:
            run_id = self._run_of(request)
            model = self.catalog.model(run_id)
            predictions, probabilities = _predict(model, _rows(model, request.columns, "")[0])
            return pb.PredictResponse(
                run_id=run_id,
                predictions=predictions.tolist(),
                probabilities=probabilities.tolist(),
            )

        return self._answer(context, _ANY, work)

    def _stream_slot(self, context: grpc.ServicerContext) -> None:
        if not self.streams.acquire(blocking=False):
            _abort(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "too many streams open at once on this service; try again later",
            )

    def PredictStream(
        self, request_iterator: Iterator[pb.PredictStreamRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.PredictStreamResponse]:
        self._caller(context, _ANY)
        self._stream_slot(context)
        try:
            yield from self._predict_stream(request_iterator, context)
        finally:
            self.streams.release()

    def _predict_stream(
        self, request_iterator: Iterator[pb.PredictStreamRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.PredictStreamResponse]:
        model: FederatedModel | None = None
        run_id, offset = "", 0
        for index, chunk in enumerate(request_iterator):
            try:
                if model is None:
                    run_id = self._run_of(chunk)
                    model = self.catalog.model(run_id)
                X, packed = _rows(model, chunk.columns, f"chunk {index}: ")
                predictions, probabilities = _predict(model, X)
            except _InvalidError as exc:
                _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            except NotFoundError as exc:
                _abort(context, grpc.StatusCode.NOT_FOUND, str(exc))
            if packed:
                yield pb.PredictStreamResponse(
                    run_id=run_id,
                    offset=offset,
                    predictions_float64=predictions.astype("<f8").tobytes(),
                    probabilities_float64=probabilities.astype("<f8").tobytes(),
                )
            else:
                yield pb.PredictStreamResponse(
                    run_id=run_id,
                    offset=offset,
                    predictions=predictions.tolist(),
                    probabilities=probabilities.tolist(),
                )
            offset += X.shape[0]

    # ------------------------------------------------------------------ runs

    def GetReport(
        self, request: pb.GetReportRequest, context: grpc.ServicerContext
    ) -> pb.GetReportResponse:
        def work(_: Caller) -> pb.GetReportResponse:
            run_id = _run_id(request.run_id)
            return pb.GetReportResponse(run_id=run_id, report_json=self.catalog.report_json(run_id))

        return self._answer(context, _ANY, work)

    def ListRuns(
        self, request: pb.ListRunsRequest, context: grpc.ServicerContext
    ) -> pb.ListRunsResponse:
        def work(_: Caller) -> pb.ListRunsResponse:
            page, token = _page(self.catalog.run_ids(), request.page_size, request.page_token)
            return pb.ListRunsResponse(
                runs=[_run(self.catalog.run(r)) for r in page], next_page_token=token
            )

        return self._answer(context, _ANY, work)

    def GetRun(self, request: pb.GetRunRequest, context: grpc.ServicerContext) -> pb.GetRunResponse:
        def work(_: Caller) -> pb.GetRunResponse:
            run_id = _run_id(request.run_id)
            events = self.catalog.events(run_id)[0]
            return pb.GetRunResponse(
                run=_run(self.catalog.run(run_id)), events=[_event(e) for e in events]
            )

        return self._answer(context, _ANY, work)

    def StartRun(
        self, request: pb.StartRunRequest, context: grpc.ServicerContext
    ) -> pb.StartRunResponse:
        def work(_: Caller) -> pb.StartRunResponse:
            wait = request.wait_seconds or 120.0
            if not math.isfinite(wait) or not 0.0 < wait <= 3600.0:
                raise _InvalidError("wait_seconds: between 0 and 3600")
            return pb.StartRunResponse(run_id=self._start_run(request.expected_cities, wait))

        return self._answer(context, _OPERATOR, work)

    def _start_run(self, expected: int, wait: float) -> str:
        """Submit a run as ``cityfed run`` does, in the background; its run id."""
        before = set(self.catalog.run_ids())
        command = [sys.executable, "-m", "cityfed.cli", "run", "--coordinator",
                   str(self.layout.state), "--json", "--wait", str(wait)]  # fmt: skip
        if expected:
            command += ["--expected-cities", str(expected)]
        log = (self.layout.state / "logs" / "service-runs.log").open("ab")
        with log:
            proc = subprocess.Popen(
                command, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
            )
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            new = set(self.catalog.run_ids()) - before
            if new:
                return sorted(new)[-1]
            if proc.poll() is not None:
                raise CityFedError(
                    f"the run could not be submitted (exit {proc.returncode}); "
                    "see logs/service-runs.log"
                )
            time.sleep(0.2)
        raise CityFedError("the run was not submitted within 30 s; see logs/service-runs.log")

    def WatchRun(
        self, request: pb.WatchRunRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.WatchRunResponse]:
        self._caller(context, _ANY)
        self._stream_slot(context)
        try:
            yield from self._watch(request, context)
        finally:
            self.streams.release()

    def _watch(
        self, request: pb.WatchRunRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.WatchRunResponse]:
        try:
            run_id = _run_id(request.run_id)
            self.catalog.folder(run_id)
        except _InvalidError as exc:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except NotFoundError as exc:
            _abort(context, grpc.StatusCode.NOT_FOUND, str(exc))
        offset = 0
        while context.is_active():
            try:
                events, offset = self.catalog.events(run_id, offset)
            except NotFoundError:
                _abort(context, grpc.StatusCode.NOT_FOUND, f"run {run_id!r} is gone (lost)")
            for event in events:
                yield pb.WatchRunResponse(event=_event(event))
                if event.kind in ("done", "error"):
                    return
            time.sleep(0.3)

    # ------------------------------------------------------------------ enrolment

    def RequestEnrolment(
        self, request: pb.RequestEnrolmentRequest, context: grpc.ServicerContext
    ) -> pb.RequestEnrolmentResponse:
        def work(caller: Caller) -> pb.RequestEnrolmentResponse:
            if caller.role == "city" and caller.name != request.name:
                raise _InvalidError(
                    f"name: a city asks for itself: this certificate is {caller.name!r}"
                )
            try:
                entry = request_enrolment(
                    self.layout, request.name, request.node_public_key, request.contact,
                    by=f"{caller.role}:{caller.name}",
                )  # fmt: skip
            except CityFedError as exc:
                raise _InvalidError(str(exc)) from None
            return pb.RequestEnrolmentResponse(enrolment=_enrolment(request.name, entry))

        return self._answer(context, ("city", "operator"), work)

    def ListEnrolments(
        self, request: pb.ListEnrolmentsRequest, context: grpc.ServicerContext
    ) -> pb.ListEnrolmentsResponse:
        def work(caller: Caller) -> pb.ListEnrolmentsResponse:
            found = enrolments(self.layout)
            if caller.role == "city":
                found = {n: e for n, e in found.items() if n == caller.name}
            return pb.ListEnrolmentsResponse(
                enrolments=[_enrolment(n, e) for n, e in sorted(found.items())]
            )

        return self._answer(context, ("city", "operator"), work)

    def ApproveEnrolment(
        self, request: pb.ApproveEnrolmentRequest, context: grpc.ServicerContext
    ) -> pb.ApproveEnrolmentResponse:
        def work(_: Caller) -> pb.ApproveEnrolmentResponse:
            approve(self.layout, request.name)
            entry = enrolments(self.layout)[request.name]
            return pb.ApproveEnrolmentResponse(enrolment=_enrolment(request.name, entry))

        return self._answer(context, _OPERATOR, work)

    def RejectEnrolment(
        self, request: pb.RejectEnrolmentRequest, context: grpc.ServicerContext
    ) -> pb.RejectEnrolmentResponse:
        def work(_: Caller) -> pb.RejectEnrolmentResponse:
            entry = reject(self.layout, request.name, request.reason)
            return pb.RejectEnrolmentResponse(enrolment=_enrolment(request.name, entry))

        return self._answer(context, _OPERATOR, work)


# ---------------------------------------------------------------------- helpers


def _run_id(text: str) -> str:
    if not RUN_ID.match(text):
        raise _InvalidError(f"run_id: {text[:80]!r} is not a run id")
    return text


def _page(items: list[str], size: int, token: str) -> tuple[list[str], str]:
    """One page of ``items`` after ``token``, and the token of the next page ("" at the end)."""
    if size > _MAX_PAGE:
        raise _InvalidError(f"page_size: at most {_MAX_PAGE}")
    start = 0
    if token:
        if token not in items:
            raise _InvalidError("page_token: not one this service gave (or its run is gone)")
        start = items.index(token) + 1
    end = start + (size or _PAGE)
    page = items[start:end]
    return page, (page[-1] if page and end < len(items) else "")


def _values(column: Any, where: str) -> FloatArray:
    """A column's values, from doubles or from packed little-endian doubles."""
    if column.float64:
        if column.values:
            raise _InvalidError(f"{where}columns[{column.name}]: give values or float64, not both")
        if len(column.float64) % 8:
            raise _InvalidError(
                f"{where}columns[{column.name}]: float64 is {len(column.float64)} bytes, "
                "not a whole number of 8-byte doubles"
            )
        return np.frombuffer(column.float64, dtype="<f8")
    return np.asarray(column.values, dtype=np.float64)


def _rows(model: FederatedModel, columns: Any, where: str) -> tuple[FloatArray, bool]:
    """The rows of a request as a matrix in model order, and whether they came packed.

    Raises
    ------
    _InvalidError
        Naming the field: a column twice, one the model does not know, one missing,
        columns of different lengths, too many rows, a value that is not finite.
    """
    names = model.feature_names
    given: dict[str, FloatArray] = {}
    packed = {bool(column.float64) for column in columns}
    for column in columns:
        if column.name in given:
            raise _InvalidError(f"{where}columns: {column.name!r} appears twice")
        if column.name not in names:
            raise _InvalidError(
                f"{where}columns: {column.name[:80]!r} is not a feature of the model "
                f"({', '.join(names)})"
            )
        given[column.name] = _values(column, where)
    missing = [n for n in names if n not in given]
    if missing:
        raise _InvalidError(f"{where}columns: feature {missing[0]!r} missing")
    lengths = {given[n].shape[0] for n in names}
    if len(lengths) != 1:
        raise _InvalidError(f"{where}columns: the columns have different lengths {sorted(lengths)}")
    rows = lengths.pop()
    if rows > MAX_ROWS:
        raise _InvalidError(f"{where}columns: {rows} rows; at most {MAX_ROWS} per message")
    X = np.empty((rows, len(names)))
    for j, name in enumerate(names):
        X[:, j] = given[name]
        bad = np.flatnonzero(~np.isfinite(X[:, j]))
        if bad.size:
            raise _InvalidError(f"{where}columns[{name}]: row {int(bad[0])} is not a finite number")
    return X, packed == {True}


def _predict(model: FederatedModel, X: FloatArray) -> tuple[FloatArray, FloatArray]:
    """What the published estimator predicts (the same arithmetic as load_model)."""
    decision = model.decision(X)
    if model.task == "classification":
        return (decision > 0.0).astype(np.float64), expit(decision)
    if model.task == "count":
        return np.exp(decision), np.empty(0)  # the expected count per unit of exposure
    return decision, np.empty(0)


def _summary(run_id: str, model: FederatedModel) -> pb.ModelSummary:
    return pb.ModelSummary(
        run_id=run_id,
        federation=model.federation,
        kind=model.kind,
        task=model.task,
        created_at=model.created_at,
        rounds=model.rounds,
        cities=list(model.cities),
        training_rows=model.training_rows,
    )


def _run(info: RunInfo) -> pb.RunSummary:
    return pb.RunSummary(
        run_id=info.run_id,
        federation=info.federation,
        status=info.status,
        cities=list(info.cities),
        rounds=info.rounds,
        message=info.message,
    )


def _event(event: Any) -> pb.ProgressEvent:
    return pb.ProgressEvent(kind=event.kind, message=event.message, time=time.time())


def _enrolment(name: str, entry: dict[str, Any]) -> pb.Enrolment:
    key = str(entry.get("public_key", ""))
    return pb.Enrolment(
        name=name,
        status=str(entry.get("status", "")),
        contact=str(entry.get("contact", "")),
        requested_at=str(entry.get("requested_at", "")),
        node_id=str(entry.get("node_id", "")),
        key_sha256=hashlib.sha256(key.encode()).hexdigest() if key else "",
    )
