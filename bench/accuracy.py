"""How close each method gets to the pooled fit, in how many rounds, for how many bytes.

For every data set (the bundled NYC airports, synthetic non-IID cities), one Flower
simulation (``run_simulation``, Ray backend, one ClientApp per city) runs every
method on both models (ridge, logistic), one after another in the same ServerApp:

* the exact method: CityFed's own ServerApp code (``run_server``) and ClientApp;
* FedAvg of locally fitted scikit-learn models (the approach of Flower's
  scikit-learn examples, ``cityfed.core.fedavg.local_update``), for ``--rounds`` rounds;
* FedProx (mini-batch SGD on the local objective plus ``mu/2 ||w - w_global||^2``).

After every round the global model is scored on the union of the cities'
holdout rows (CityFed's own per-city split) and compared with scikit-learn
fitted on the union of their training rows ("pooled"). Score: R² (ridge),
mean log-loss (logistic). "Within 1e-3" means ``|score - pooled score| <= 1e-3``,
absolute, from that round on to the last round run. Bytes: the protobuf size of
what a city returns in the training rounds (CityFed's holdout scoring excluded),
mean over cities.

    python bench/accuracy.py --quick      # 3 data sets, under 5 minutes
    python bench/accuracy.py              # adds 100 synthetic cities
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from common import (
    RESULTS_DIR,
    backend_config,
    command_line,
    engine_env,
    machine,
    machine_line,
    markdown_table,
    print_table,
    write_json,
)
from numpy.typing import NDArray

from cityfed.core.newton import ROUND_LENGTHS

FloatArray = NDArray[np.float64]
MODELS = ("ridge", "logistic")
METHODS = ("exact", "fedavg", "fedprox")
TOLERANCES = (1e-3, 1e-6)
DEMO_DIR = Path(__file__).resolve().parent.parent / "cityfed" / "demo_data"


# ------------------------------------------------------------------ data sets


@dataclass(frozen=True)
class Dataset:
    """A federation on disk: one federation file per model, one config per city."""

    name: str
    description: str
    federations: dict[str, Path]
    cities: tuple[Path, ...]


def _federation_toml(
    name: str, model: str, target: tuple[str, str], features: Sequence[tuple[str, str]]
) -> str:
    task = "classification" if model == "logistic" else "regression"
    penalty = "C = 1.0" if model == "logistic" else "alpha = 1.0"
    body = "".join(f'[[features]]\nname = "{n}"\nunit = "{u}"\n\n' for n, u in features)
    return (
        f'[federation]\nname = "{name}"\ntask = "{task}"\nmodel = "{model}"\n{penalty}\n'
        "standardize = true\nholdout_fraction = 0.2\nseed = 0\nmin_cities = 2\n"
        'min_rows_per_city = 50\nmissing = "drop"\n\n'
        f'[target]\nname = "{target[0]}"\nunit = "{target[1]}"\n\n{body}'
    )


def nyc_dataset(root: Path) -> Dataset:
    """The bundled NYC airports: the demo federations, copied into ``root``.

    Ridge predicts the temperature (``federation.toml``); logistic predicts
    whether it rains this hour (``rain.toml``, label ``precip > 0``). The copies
    keep the cities' audit trails out of the package folder.
    """
    for path in DEMO_DIR.iterdir():
        if path.suffix in (".csv", ".toml"):
            (root / path.name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, root / path.name)
    return Dataset(
        "nyc-airports",
        "bundled real data: 3 NYC airports, 2013 hourly weather (temp; rain yes/no)",
        {"ridge": root / "federation.toml", "logistic": root / "rain.toml"},
        tuple(root / name for name in ("ewr.toml", "jfk.toml", "lga.toml")),
    )


def write_synthetic(root: Path, n_cities: int, seed: int = 0, d: int = 6) -> Dataset:
    """Non-IID cities: own feature means and spreads, own intercepts, own sizes.

    Features are correlated (a shared mixing matrix); city ``k`` shifts and
    scales them, adds its own offset to the target (``load``) and to the log-odds
    of the label (``alert``), and has a log-normal number of rows (80 to 4,000).
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    beta = rng.normal(0.0, 1.0, d)
    gamma = rng.normal(0.0, 0.6, d)
    mix = np.eye(d) + rng.normal(0.0, 0.4, (d, d))
    names = [f"x{j}" for j in range(d)]
    cities = []
    for k in range(n_cities):
        n = int(np.clip(rng.lognormal(math.log(400.0), 0.9), 80, 4000))
        centre = rng.normal(0.0, 2.0, d)
        spread = rng.uniform(0.3, 2.0, d)
        X = centre + (rng.normal(size=(n, d)) @ mix) * spread
        load = 50.0 + rng.normal(0.0, 4.0) + X @ beta + rng.normal(0.0, 1.5, n)
        logit = rng.normal(0.0, 1.0) + (X - centre) @ gamma + 0.3 * (centre @ gamma)
        alert = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(float)
        table = np.column_stack([X, load, alert])
        csv = root / f"city{k:04d}.csv"
        np.savetxt(
            csv, table, delimiter=",", fmt="%.10g", header=",".join([*names, "load", "alert"])
        )
        _strip_comment_header(csv)
        config = root / f"city{k:04d}.toml"
        mapping = "".join(f'{name} = "{name}"\n' for name in (*names, "load", "alert"))
        config.write_text(
            f'[city]\nname = "city{k:04d}"\ndata = "{csv.name}"\n\n[columns]\n{mapping}\n'
            '[policy]\nagreed = ["federation-ridge.toml", "federation-logistic.toml"]\n',
            "utf-8",
        )
        cities.append(config)
    features = [(name, "dimensionless") for name in names]
    feds = {}
    for model, target in (("ridge", "load"), ("logistic", "alert")):
        path = root / f"federation-{model}.toml"
        path.write_text(
            _federation_toml(f"synthetic-{model}", model, (target, "dimensionless"), features)
        )
        feds[model] = path
    return Dataset(
        f"synthetic-{n_cities}",
        f"{n_cities} synthetic non-IID cities, d = {d}",
        feds,
        tuple(cities),
    )


def _strip_comment_header(path: Path) -> None:
    """``np.savetxt`` writes the header as ``# a,b``; make it a plain CSV header."""
    text = path.read_text(encoding="utf-8")
    path.write_text(text[2:] if text.startswith("# ") else text, encoding="utf-8")


# ------------------------------------------------------------ worker: one data set


@dataclass(frozen=True)
class Holdout:
    """The union of the cities' holdout rows and the pooled fit's score on it."""

    task: str
    X: FloatArray
    y: FloatArray
    pooled_score: float
    train_rows: int


def score(task: str, y: FloatArray, decision: FloatArray) -> float:
    """R² for regression, mean log-loss for classification."""
    from sklearn.metrics import log_loss, r2_score

    if task == "classification":
        p = 1.0 / (1.0 + np.exp(-decision))
        return float(log_loss(y, p, labels=[0.0, 1.0]))
    return float(r2_score(y, decision))


def pooled_holdout(fed_path: Path, cities: Sequence[str | Path]) -> Holdout:
    """Fit scikit-learn on all cities' training rows; score it on all holdout rows."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from cityfed.config.spec import load_city, load_federation
    from cityfed.data.city_data import load_city_data

    fed = load_federation(fed_path)
    data = [load_city_data(load_city(Path(path)), fed) for path in cities]
    X_train = np.vstack([c.X_train for c in data])
    y_train = np.concatenate([c.y_train for c in data])
    X_hold = np.vstack([c.X_holdout for c in data])
    y_hold = np.concatenate([c.y_holdout for c in data])
    estimator: Any
    if fed.model == "logistic":
        estimator = LogisticRegression(C=fed.C, tol=1e-12, max_iter=10_000)
    else:
        estimator = Ridge(alpha=fed.alpha)
    pipe = make_pipeline(StandardScaler(), estimator).fit(X_train, y_train)
    if fed.task == "classification":
        decision = pipe.decision_function(X_hold)
    else:
        decision = pipe.predict(X_hold)
    return Holdout(fed.task, X_hold, y_hold, score(fed.task, y_hold, decision), y_train.size)


def _linear_decision(X: FloatArray, mean: FloatArray, scale: FloatArray, w: FloatArray) -> Any:
    return w[0] + ((X - mean) / scale) @ w[1:]


def rounds_to(curve: Sequence[float], target: float, tolerance: float) -> int | None:
    """First round (1-based) from which every score is within ``tolerance`` of ``target``.

    "From which on" matters for the noisy baselines: a curve that only crosses
    the pooled score on its way (the holdout score of a worse model can equal it
    by chance) has not reached the pooled fit. ``None``: not within at the end.
    """
    reached = None
    for i, value in enumerate(curve, start=1):
        within = abs(value - target) <= tolerance
        reached = (reached or i) if within else None
    return reached


@dataclass
class WorkerPlan:
    """What one worker process runs (passed as JSON)."""

    dataset: str
    federations: dict[str, str]
    cities: list[str]
    out_dir: str
    rounds: int
    mu: float
    learning_rate: float
    batch_size: int


def _wait_for_nodes(grid: Any, count: int, timeout: float = 120.0) -> list[int]:
    deadline = time.monotonic() + timeout
    nodes = sorted(int(n) for n in grid.get_node_ids())
    while len(nodes) < count and time.monotonic() < deadline:
        time.sleep(0.1)
        nodes = sorted(int(n) for n in grid.get_node_ids())
    return nodes


def _bytes_summary(grid: Any, job: str, nodes: Sequence[int]) -> dict[str, float]:
    per_city = [grid.bytes_up[job].get(node, 0) for node in nodes]
    replies = [grid.replies[job].get(node, 0) for node in nodes]
    total = float(np.mean(per_city)) if per_city else 0.0
    rounds = float(np.mean(replies)) if replies else 0.0
    return {
        "bytes_per_city": total,
        "bytes_per_city_per_round": total / rounds if rounds else 0.0,
        "rounds_sent": rounds,
    }


def _run_exact(
    grid: Any, plan: WorkerPlan, model: str, holdout: Holdout, nodes: list[int]
) -> dict[str, Any]:
    from cityfed_server.app import ServerSettings, run_server

    from cityfed.model.proto import read_model
    from cityfed.ops.progress import PROGRESS_FILE, read_events

    job = f"exact/{model}"
    grid.job = job
    out = Path(plan.out_dir) / f"exact-{model}"
    out.mkdir(parents=True, exist_ok=True)  # the ServerApp abandons a run whose folder is gone
    settings = ServerSettings(
        federation=Path(plan.federations[model]),
        out_dir=out,
        run_id=f"bench-{plan.dataset}-{model}",
        expected_cities=len(nodes),
        wait_seconds=60.0,
    )
    started = time.perf_counter()
    run_server(grid, settings)
    seconds = time.perf_counter() - started
    events, _ = read_events(out / PROGRESS_FILE, 0)
    failed = [e.message for e in events if e.kind == "error"]
    if failed:
        return {"error": failed[0]}
    report = json.loads((out / "report.json").read_text())
    final = read_model(out / "model.pb")
    rounds = int(report["model"]["rounds"])
    curve = []
    for r in range(1, rounds):
        trial = grid.newton[job].get(r + 1)
        if trial is None or trial.scaler is None or trial.weights is None:
            break
        # Several points per round: the model so far is the full (t = 1) step's point.
        weights = np.atleast_2d(trial.weights)
        point = weights[ROUND_LENGTHS.index(1.0)] if weights.shape[0] > 1 else weights[0]
        decision = _linear_decision(holdout.X, trial.scaler.mean, trial.scaler.scale, point)
        curve.append(score(holdout.task, holdout.y, decision))
    curve.append(score(holdout.task, holdout.y, final.decision(holdout.X)))
    return {
        "rounds_run": rounds,
        "converged": bool(report["model"]["converged"]),
        "curve": curve,
        "seconds": seconds,
        "server_wall_seconds": report["timing"]["wall_seconds"],
        "aggregation_seconds": report["timing"]["aggregation_seconds"],
        **_bytes_summary(grid, job, nodes),
    }


@dataclass
class _Job:
    name: str
    algorithm: str
    model: str
    fed_json: str
    mean: FloatArray
    scale: FloatArray
    w: FloatArray
    holdout: Holdout
    curve: list[float]


def _run_baselines(
    grid: Any, plan: WorkerPlan, holdouts: dict[str, Holdout], nodes: list[int]
) -> dict[str, dict[str, Any]]:
    """FedAvg and FedProx for both models, in lockstep: one round of each at a time."""
    from baselines import ProxSettings, baseline_message, reply_update

    from cityfed.config.spec import federation_to_json, load_city, load_federation
    from cityfed.core.fedavg import WeightedAverage
    from cityfed.core.scaling import Scaler
    from cityfed.core.stats import Moments, merge_all
    from cityfed.data.city_data import load_city_data

    prox = ProxSettings(plan.mu, plan.learning_rate, plan.batch_size)
    jobs: list[_Job] = []
    for model in MODELS:
        fed = load_federation(Path(plan.federations[model]))
        # The exact federated scaler (what CityFed's statistics round yields),
        # given to the baselines for free, as CityFed's algorithm = "fedavg" has it.
        parts = []
        for path in plan.cities:
            data = load_city_data(load_city(Path(path)), fed)
            parts.append(Moments.of(data.X_train))
        scaler = Scaler.from_moments(merge_all(parts, len(fed.design)), len(fed.design), True)
        for algorithm in ("fedavg", "fedprox"):
            jobs.append(
                _Job(
                    f"{algorithm}/{model}",
                    algorithm,
                    model,
                    federation_to_json(fed),
                    scaler.mean,
                    scaler.scale,
                    np.zeros(len(fed.design) + 1),
                    holdouts[model],
                    [],
                )
            )
    started = time.perf_counter()
    for round_number in range(1, plan.rounds + 1):
        owner: dict[str, _Job] = {}
        for job in jobs:
            grid.job = job.name
            messages = [
                baseline_message(
                    node,
                    algorithm=job.algorithm,
                    fed_json=job.fed_json,
                    round_number=round_number,
                    mean=job.mean,
                    scale=job.scale,
                    w=job.w,
                    prox=prox,
                    group=f"{job.name}/{round_number}",
                )
                for node in nodes
            ]
            for message_id in grid.push_messages(messages):
                owner[message_id] = job
        averages = {job.name: WeightedAverage(job.w.size) for job in jobs}
        pending = set(owner)
        deadline = time.monotonic() + 600.0
        while pending and time.monotonic() < deadline:
            replies = list(grid.pull_messages(list(pending)))
            for reply in replies:
                message_id = reply.metadata.reply_to_message_id
                pending.discard(message_id)
                if reply.has_error():
                    raise RuntimeError(f"a baseline ClientApp failed: {reply.error.reason}")
                w, n = reply_update(reply)
                averages[owner[message_id].name].add(w, n)
            if pending and not replies:
                time.sleep(0.01)
        if pending:
            raise RuntimeError(f"round {round_number}: {len(pending)} replies missing")
        for job in jobs:
            job.w = averages[job.name].mean()
            decision = _linear_decision(job.holdout.X, job.mean, job.scale, job.w)
            job.curve.append(score(job.holdout.task, job.holdout.y, decision))
    seconds = time.perf_counter() - started
    return {
        job.name: {
            "rounds_run": plan.rounds,
            "converged": None,
            "curve": job.curve,
            "seconds_all_baselines": seconds,
            **_bytes_summary(grid, job.name, nodes),
        }
        for job in jobs
    }


def run_worker(plan: WorkerPlan, out_json: Path) -> int:
    """Run every method on one data set in one Flower simulation; write JSON."""
    from baselines import BASELINE, MeteredGrid, baseline_reply
    from cityfed_client.app import make_client_app
    from flwr.app import Context, Message
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation

    logging.getLogger("flwr").setLevel(logging.WARNING)
    started = time.perf_counter()
    holdouts = {
        model: pooled_holdout(Path(plan.federations[model]), plan.cities) for model in MODELS
    }
    cities = tuple(plan.cities)
    cityfed_client = make_client_app(cities)
    client_app = ClientApp()

    @client_app.train()
    def train(msg: Message, context: Context) -> Message:
        if BASELINE in msg.content.config_records:
            return baseline_reply(msg, context, cities[int(context.node_config["partition-id"])])
        reply: Message = cityfed_client(msg, context)
        return reply

    @client_app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        reply: Message = cityfed_client(msg, context)
        return reply

    result: dict[str, Any] = {"dataset": plan.dataset, "cities": len(cities), "methods": {}}
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        metered = MeteredGrid(grid)
        try:
            nodes = _wait_for_nodes(metered, len(cities))
            for model in MODELS:
                result["methods"][f"exact/{model}"] = _run_exact(
                    metered, plan, model, holdouts[model], nodes
                )
            result["methods"].update(_run_baselines(metered, plan, holdouts, nodes))
        except Exception:
            result["error"] = traceback.format_exc()

    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=len(cities),
        backend_config=backend_config(),
    )
    result["pooled"] = {
        model: {"score": h.pooled_score, "train_rows": h.train_rows, "holdout_rows": h.y.size}
        for model, h in holdouts.items()
    }
    result["simulation_seconds"] = time.perf_counter() - started
    write_json(out_json, result)
    return 0 if "error" not in result else 1


# --------------------------------------------------------------------- report


def _summarise(result: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for model in MODELS:
        pooled = result["pooled"][model]["score"]
        exact_r6 = None
        for method in METHODS:
            entry = result["methods"].get(f"{method}/{model}")
            if entry is None or "error" in entry:
                continue
            curve = entry["curve"]
            row = {
                "dataset": result["dataset"],
                "model": model,
                "method": method,
                "pooled_score": pooled,
                "rounds_1e-3": rounds_to(curve, pooled, 1e-3),
                "rounds_1e-6": rounds_to(curve, pooled, 1e-6),
                "rounds_run": entry["rounds_run"],
                "final_gap": abs(curve[-1] - pooled),
                "bytes_per_city": entry["bytes_per_city"],
                "bytes_per_city_per_round": entry["bytes_per_city_per_round"],
            }
            if method == "exact":
                exact_r6 = row["rounds_1e-6"]
            row["rounds_vs_exact"] = _ratio(row["rounds_1e-6"], exact_r6, entry["rounds_run"])
            rows.append(row)
    return rows


def _ratio(rounds: int | None, exact: int | None, rounds_run: int) -> str:
    if exact is None:
        return "n/a"
    if rounds is None:
        return f"> {rounds_run / exact:.0f}x"
    return f"{rounds / exact:.0f}x" if rounds >= exact else f"{rounds / exact:.2f}x"


def _fmt_rounds(rounds: int | None, rounds_run: int) -> str:
    return "never" if rounds is None else str(rounds)


def _fmt_bytes(value: float) -> str:
    return f"{value / 1024:,.1f} KiB" if value >= 10 * 1024 else f"{value:,.0f} B"


COLUMNS = (
    "data",
    "model",
    "method",
    "rounds ≤1e-3",
    "rounds ≤1e-6",
    "rounds to 1e-6 vs exact",
    "final gap",
    "sent per city (rounds run)",
)


def table_rows(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    """Table cells of summarised rows."""
    cells = []
    for row in rows:
        cells.append(
            [
                row["dataset"],
                row["model"],
                row["method"],
                _fmt_rounds(row["rounds_1e-3"], row["rounds_run"]),
                _fmt_rounds(row["rounds_1e-6"], row["rounds_run"]),
                row["rounds_vs_exact"],
                f"{row['final_gap']:.1e}",
                f"{_fmt_bytes(row['bytes_per_city'])} ({row['rounds_run']})",
            ]
        )
    return cells


def main(argv: Sequence[str] | None = None) -> int:
    """Build the data sets, run one worker per data set, print and save the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 small data sets (< 5 min)")
    parser.add_argument("--rounds", type=int, default=100, help="FedAvg/FedProx rounds")
    parser.add_argument("--mu", type=float, default=0.1, help="FedProx proximal weight")
    parser.add_argument("--learning-rate", type=float, default=0.05, help="FedProx SGD step")
    parser.add_argument("--batch-size", type=int, default=32, help="FedProx mini-batch")
    parser.add_argument("--json", type=Path, help="results file (default bench/results/)")
    parser.add_argument("--keep", action="store_true", help="keep the generated data")
    parser.add_argument("--only", help="run only the data set of this name")
    parser.add_argument("--worker", nargs=2, metavar=("PLAN", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        plan = WorkerPlan(**json.loads(Path(args.worker[0]).read_text()))
        return run_worker(plan, Path(args.worker[1]))

    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="cityfed-bench-accuracy-"))
    sizes = (3, 10) if args.quick else (3, 10, 100)
    results: list[dict[str, Any]] = []
    try:
        datasets = [nyc_dataset(root / "nyc-airports")]
        datasets += [write_synthetic(root / f"synthetic-{k}", k) for k in sizes]
        for dataset in datasets:
            if args.only and dataset.name != args.only:
                continue
            print(f"running {dataset.name}: {dataset.description} ...", flush=True)
            out_dir = root / "runs" / dataset.name
            out_dir.mkdir(parents=True)
            plan = WorkerPlan(
                dataset=dataset.name,
                federations={m: str(p) for m, p in dataset.federations.items()},
                cities=[str(p) for p in dataset.cities],
                out_dir=str(out_dir),
                rounds=args.rounds,
                mu=args.mu,
                learning_rate=args.learning_rate,
                batch_size=args.batch_size,
            )
            plan_path = out_dir / "plan.json"
            plan_path.write_text(json.dumps(plan.__dict__))
            out_json = out_dir / "result.json"
            log_path = out_dir / "engine.log"
            with log_path.open("wb") as log:
                proc = subprocess.run(
                    [
                        sys.executable,
                        os.path.abspath(__file__),
                        "--worker",
                        str(plan_path),
                        str(out_json),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=engine_env(),
                    check=False,
                )
            if not out_json.exists():
                tail = log_path.read_text(errors="replace").splitlines()[-20:]
                print(f"{dataset.name}: worker failed (exit {proc.returncode})", *tail, sep="\n")
                return 1
            result = json.loads(out_json.read_text())
            if "error" in result:
                print(f"{dataset.name}: {result['error']}")
                return 1
            result["description"] = dataset.description
            print(f"  done in {result['simulation_seconds']:.0f} s", flush=True)
            results.append(result)
    finally:
        if args.keep:
            print(f"data and runs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    rows = [row for result in results for row in _summarise(result)]
    info = machine()
    elapsed = time.perf_counter() - started
    title = (
        f"Distance to the pooled fit's holdout score (R² ridge, log-loss logistic); "
        f"FedAvg/FedProx run {args.rounds} rounds"
    )
    print_table(title, COLUMNS, table_rows(rows))
    print(f"machine: {machine_line(info)}; total {elapsed:.0f} s")
    out = args.json or RESULTS_DIR / ("accuracy-quick.json" if args.quick else "accuracy.json")
    write_json(
        out,
        {
            "command": command_line(),
            "machine": info,
            "seconds": round(elapsed, 1),
            "settings": {
                "rounds": args.rounds,
                "fedprox": {
                    "mu": args.mu,
                    "learning_rate": args.learning_rate,
                    "batch_size": args.batch_size,
                    "local_epochs": 1,
                },
                "fedavg": {"local_epochs": 1},
            },
            "rows": rows,
            "markdown": markdown_table(COLUMNS, table_rows(rows)),
            "datasets": [
                {
                    "name": r["dataset"],
                    "description": r["description"],
                    "cities": r["cities"],
                    "pooled": r["pooled"],
                    "simulation_seconds": round(r["simulation_seconds"], 1),
                    "curves": {name: m["curve"] for name, m in r["methods"].items()},
                }
                for r in results
            ],
        },
    )
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
