"""``cityfed simulate``: the whole federation on one machine, in Flower's engine.

Everything the user gave is validated first (specs, units, every city's CSV), so
a mistake fails in a second with a one-line message and nothing written. The
engine then runs in a child process of its own session; whatever happens, that
session is stopped before this function returns. Artifacts are written to a
private staging folder and moved into ``--out`` only when the run succeeded.
A model that fails the pooled check is never published as a success: ``--out``
gets the reports and ``model.rejected.pb`` (no ``model.pb``), and
:class:`PooledCheckError` is raised.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from cityfed_client.policy import check_data, check_levels

from cityfed.config.spec import (
    CitySpec,
    FederationSpec,
    federation_digest,
    load_city,
    load_federation,
)
from cityfed.data.city_data import load_city_data
from cityfed.data.harmonise import harmonised_chunks
from cityfed.data.rows import Tally, streamed_blocks, summarise
from cityfed.errors import FederationError, SpecError
from cityfed.federation.classes import one_class_problem
from cityfed.files import write_atomic
from cityfed.model.proto import read_model
from cityfed.ops.output import check_output_dir
from cityfed.ops.processes import log_tail, stop_process_group
from cityfed.ops.progress import ProgressEvent, ProgressFollower
from cityfed.report.build import read_report, write_report
from cityfed.report.pooled import pooled_check
from cityfed.report.types import PooledCheck, Report

__all__ = [
    "ARTIFACTS",
    "CHECK_CITIES",
    "CHECK_ROWS",
    "REJECTED_MODEL",
    "CityFacts",
    "PooledCheckError",
    "SimulationPlan",
    "city_facts",
    "prepare",
    "simulate",
]

#: The files a successful run leaves in ``--out``.
ARTIFACTS = ("model.pb", "report.json", "report.html")
#: Where a model that failed the pooled check is kept, for inspection only.
REJECTED_MODEL = "model.rejected.pb"


class PooledCheckError(FederationError):
    """The federated model is not the pooled fit it claims to be; ``report`` says by how much."""

    def __init__(self, message: str, report: Report) -> None:
        super().__init__(message)
        self.report = report


#: Up to this many cities and pooled rows, the pooled check runs unless ``--no-check``;
#: beyond, only with ``--check`` (it holds every city's rows in this process).
CHECK_CITIES = 100
CHECK_ROWS = 2_000_000

#: From this many cities on, their data is validated by a pool of processes (its
#: workers take seconds to start: about what 300 cities take in one process).
PARALLEL_CITIES = 400


@dataclass(frozen=True)
class CityFacts:
    """What validating one city's data found (all the checks need, no rows)."""

    city: str
    rows_read: int
    rows_train: int
    rows_holdout: int
    #: Training rows of class 1 (classification; 0 otherwise).
    ones: int
    #: Column sums of the design's level indicators over the training rows.
    level_sums: tuple[float, ...]

    @property
    def rows_used(self) -> int:
        """Usable rows, training and holdout."""
        return self.rows_train + self.rows_holdout

    @property
    def rows_dropped(self) -> int:
        """Rows dropped under ``missing = "drop"``."""
        return self.rows_read - self.rows_used


@dataclass(frozen=True)
class SimulationPlan:
    """Validated inputs of a simulation."""

    federation_path: Path
    federation: FederationSpec
    city_paths: tuple[Path, ...]
    cities: tuple[CitySpec, ...]
    #: Each city's facts; empty when the nodes validate their own data (at scale).
    facts: tuple[CityFacts, ...]
    #: Cities whose nodes will refuse to answer, and why (they leave the run).
    refusals: Mapping[str, str] = field(default_factory=dict)
    #: Whether the model is checked against the pooled fit (:data:`CHECK_CITIES`).
    check: bool = True


def city_facts(city: CitySpec, fed: FederationSpec) -> CityFacts:
    """Validate one city's data by one streamed pass over it, in bounded memory.

    Raises
    ------
    DataError, SpecError
        The first problem of the city's data, as its node would find it.
    """
    tally = Tally()
    summary = summarise(streamed_blocks(city, fed, tally), city, fed)
    moments = summary.moments
    ones = 0
    if fed.task == "classification" and moments.n:
        ones = round(moments.n * (float(moments.mean[-1]) + float(moments.low[-1])))
    return CityFacts(
        city.name,
        tally.rows_read,
        tally.rows_train,
        tally.rows_holdout,
        ones,
        tuple(summary.sums.tolist()),
    )


def _facts_of(paths: tuple[str, str]) -> CityFacts:
    """:func:`city_facts` from paths (a task of the validation pool)."""
    return city_facts(load_city(Path(paths[1])), load_federation(Path(paths[0])))


def _all_facts(
    fed_path: Path, fed: FederationSpec, paths: Sequence[Path], cities: Sequence[CitySpec]
) -> tuple[CityFacts, ...]:
    """Every city's facts, in order; many cities are validated by a pool of processes."""
    workers = min(os.cpu_count() or 1, 8)
    if len(cities) < PARALLEL_CITIES or workers < 2:
        return tuple(city_facts(city, fed) for city in cities)
    tasks = [(str(fed_path), str(path)) for path in paths]
    # spawn: the caller may run threads (a progress display), which fork would copy.
    # One BLAS thread per worker: the workers are the parallelism, and BLAS threads
    # spinning beside them made the pool 3x slower than one process.
    context = multiprocessing.get_context("spawn")
    saved = {name: os.environ.get(name) for name in _THREAD_VARIABLES}
    os.environ.update(dict.fromkeys(_THREAD_VARIABLES, "1"))  # workers start on demand
    try:
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            try:
                chunks = max(1, len(tasks) // (8 * workers))
                return tuple(pool.map(_facts_of, tasks, chunksize=chunks))
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def prepare(
    federation_path: str | Path,
    city_paths: Sequence[str | Path],
    *,
    check: bool | None = None,
) -> SimulationPlan:
    """Parse and check everything before the engine starts.

    Up to :data:`CHECK_CITIES` cities (or with ``check``), every city's data is
    read once, streamed (a pool of processes validates many cities in
    parallel), and no rows are kept; beyond, the specs, units, headers and
    columns are checked here and each node validates its own cells as it reads
    them (a bad city then fails alone, named in the report). ``check`` runs the
    pooled check (None: up to :data:`CHECK_CITIES` cities and :data:`CHECK_ROWS`
    rows).

    Raises
    ------
    SpecError, DataError
        The first problem found, naming the file and the key or column and row.
    """
    fed_path = Path(federation_path).resolve()
    fed = load_federation(fed_path)
    paths = tuple(Path(p).resolve() for p in city_paths)
    if not paths:
        raise SpecError("simulate: give at least one CITY.toml")
    given: set[Path] = set()
    for path in paths:
        if path in given:
            raise SpecError(f"simulate: {path.name} is given twice ({path})")
        given.add(path)
    cities = tuple(load_city(p) for p in paths)
    seen: dict[str, Path] = {}
    for path, city in zip(paths, cities, strict=True):
        if city.name in seen:
            raise SpecError(
                f"{path.name}: [city] name: {city.name!r} is also the name in "
                f"{seen[city.name].name}"
            )
        seen[city.name] = path
        if city.policy.agreement(fed) is None:
            raise SpecError(
                f"{path.name}: [policy] agreed: city {city.name!r} has not agreed to "
                f"federation {fed.name!r} as given in {fed_path.name} "
                f"({federation_digest(fed)[:19]}…); add the path of the federation.toml it "
                "agreed to"
            )
    if len(cities) > CHECK_CITIES and not check:
        # At scale every node validates its own data as it reads it (a bad city
        # fails alone, with its one-line reason in the report); here only what
        # can be known before a row is read: the mapping, units, header, columns.
        for city in cities:
            harmonised_chunks(city, fed)  # its checks run before the first row is read
        return SimulationPlan(fed_path, fed, paths, cities, (), {}, check=False)
    facts = _all_facts(fed_path, fed, paths, cities)
    # What the cities' nodes will refuse in the engine, known before it starts: a
    # refusing city leaves the run, and a run that cannot have enough cities
    # fails now rather than after the engine started.
    refusals = {
        city.name: reason
        for city, fact in zip(cities, facts, strict=True)
        if (
            reason := check_data(fed, city, fact.rows_train)
            or check_levels(fed, city, np.asarray(fact.level_sums), fact.rows_train)
        )
        is not None
    }
    if len(cities) - len(refusals) < fed.min_cities:
        named = "; ".join(f"{name}: {reason}" for name, reason in sorted(refusals.items()))
        raise SpecError(
            f"only {len(cities) - len(refusals)} of {len(cities)} cities can take part; the "
            f"federation needs min_cities = {fed.min_cities} ({named})"
        )
    if fed.task == "classification":
        counts = {fact.city: (fact.rows_train - fact.ones, fact.ones) for fact in facts}
        problem = one_class_problem(counts)
        if problem is not None:
            raise SpecError(f"{fed_path.name}: {problem}")
    if check is None:
        check = len(cities) <= CHECK_CITIES and sum(f.rows_used for f in facts) <= CHECK_ROWS
    return SimulationPlan(fed_path, fed, paths, cities, facts, refusals, check)


def simulate(
    plan: SimulationPlan,
    out_dir: str | Path,
    *,
    on_event: Callable[[ProgressEvent], None] = lambda event: None,
    timeout: float = 3600.0,
) -> Report:
    """Run the federation in Flower's simulation engine and publish into ``out_dir``.

    Returns
    -------
    Report
        The report (also written as ``report.json``), with its pooled check.

    Raises
    ------
    FederationError
        If the run could not produce a model (the message says why); nothing is
        written to ``out_dir`` then.
    """
    out = check_output_dir(Path(out_dir)).resolve()
    run_id = f"sim-{uuid.uuid4().hex[:12]}"
    staging = Path(tempfile.mkdtemp(prefix="cityfed-sim-"))
    log_path = staging / "engine.log"
    progress_path = staging / "progress.jsonl"
    command = [
        sys.executable,
        "-m",
        "cityfed.sim.worker",
        str(plan.federation_path),
        str(staging),
        run_id,
        *map(str, plan.city_paths),
    ]
    final: ProgressEvent | None = None
    try:
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            follower = ProgressFollower(progress_path, on_event)
            try:
                deadline = time.monotonic() + timeout
                while final is None:
                    final = follower.poll()
                    if final is None and proc.poll() is not None:
                        final = follower.poll()  # what the engine wrote last
                        break
                    if time.monotonic() > deadline:
                        raise FederationError(f"simulation: no result within {timeout:g} s")
                    time.sleep(0.1)
            finally:
                stop_process_group(proc.pid)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
        if final is None:
            raise FederationError(
                f"simulation engine stopped without a result (exit {proc.returncode}); "
                f"last log lines:\n{log_tail(log_path, 15)}"
            )
        if final.kind == "error":
            raise FederationError(final.message)
        model = read_model(staging / "model.pb")
        check = None
        if plan.check:  # every city's rows, harmonised again here: the reference's input
            data = [load_city_data(city, plan.federation) for city in plan.cities]
            check = pooled_check(model, data)
        report = replace(read_report(staging / "report.json"), pooled_check=check)
        write_report(report, staging)
        out.mkdir(parents=True, exist_ok=True)
        if check is not None and not check.within_tolerance:
            (out / "model.pb").unlink(missing_ok=True)  # an earlier run's, now misleading
            write_atomic(out / REJECTED_MODEL, (staging / "model.pb").read_bytes())
            for name in ARTIFACTS[1:]:
                write_atomic(out / name, (staging / name).read_bytes())
            raise PooledCheckError(_check_failure(check, out), report)
        (out / REJECTED_MODEL).unlink(missing_ok=True)
        for name in ARTIFACTS:
            write_atomic(out / name, (staging / name).read_bytes())
        return report
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_failure(check: PooledCheck, out: Path) -> str:
    relative = (
        f" ({check.relative_to_std_y:.2g} x std(y))" if check.relative_to_std_y is not None else ""
    )
    return (
        f"pooled check failed: the federated model's {check.compared} differs from "
        f"{check.reference} on the {check.rows} pooled training rows by "
        f"{check.max_abs_prediction_diff:.3g}{relative}, more than the tolerance; the "
        f"model is not published: {out / REJECTED_MODEL} and the reports are kept for "
        "inspection"
    )
