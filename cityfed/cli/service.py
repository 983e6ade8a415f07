"""Commands that talk to the coordinator's gRPC service: models, runs, enrolment requests.

They connect with the caller's own certificate (``--cert``/``--key`` or
``CITYFED_CERT``/``CITYFED_KEY``), the federation CA (``--ca``/``CITYFED_CA``)
and the service's address (``--service``/``CITYFED_SERVICE``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from cityfed.client_api.client import Client

model_app = typer.Typer(
    help="Published models, from the coordinator's service.", no_args_is_help=True
)
runs_app = typer.Typer(help="Runs, from the coordinator's service.", no_args_is_help=True)

ServiceOption = Annotated[
    str, typer.Option("--service", envvar="CITYFED_SERVICE", help="HOST:PORT of the service")
]
CaOption = Annotated[
    Path, typer.Option("--ca", envvar="CITYFED_CA", help="the federation's ca.pem")
]
CertOption = Annotated[
    Path, typer.Option("--cert", envvar="CITYFED_CERT", help="your client certificate")
]
KeyOption = Annotated[Path, typer.Option("--key", envvar="CITYFED_KEY", help="its private key")]
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON")]


def _client(service: str, ca: Path, cert: Path, key: Path) -> Client:
    from cityfed.client_api.client import Client

    return Client(service, ca=ca, cert=cert, key=key)


def _console() -> Console:
    return Console(soft_wrap=True, stderr=False)


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


@model_app.command("list")
def model_list(
    service: ServiceOption, ca: CaOption, cert: CertOption, key: KeyOption,
    federation: Annotated[str, typer.Option("--federation", help="only this one")] = "",
    as_json: JsonOption = False,
) -> None:  # fmt: skip
    """Published models, newest first."""
    with _client(service, ca, cert, key) as client:
        models = client.list_models(federation)
    if as_json:
        _print_json(models)
        return
    console = _console()
    for m in models:
        console.print(
            f"{m['run_id']}  {escape(m['federation'])}  {m['kind']}  "
            f"{m['training_rows']} rows  cities {escape(', '.join(m['cities']))}"
        )


@model_app.command("show")
def model_show(
    service: ServiceOption, ca: CaOption, cert: CertOption, key: KeyOption,
    run_id: Annotated[str | None, typer.Argument(help="a run id")] = None,
    federation: Annotated[str | None, typer.Option("--federation", help="its latest")] = None,
    summary: Annotated[
        bool, typer.Option("--summary", help="the coefficient table with standard errors")
    ] = False,
) -> None:  # fmt: skip
    """One model: its features, units and coefficients in federation units."""
    with _client(service, ca, cert, key) as client:
        estimator = client.get_model(run_id, federation=federation)
    if summary:
        typer.echo(estimator.summary())
        return
    model = estimator.model_
    _print_json(
        {
            "run_id": model.run_id,
            "federation": model.federation,
            "kind": model.kind,
            "task": model.task,
            "features": [{"name": f.name, "unit": f.unit} for f in model.features],
            "target": {"name": model.target.name, "unit": model.target.unit},
            "coef": [float(c) for c in model.coef],
            "intercept": float(model.intercept),
            "cities": list(model.cities),
            "training_rows": model.training_rows,
        }
    )


@model_app.command("predict")
def model_predict(
    service: ServiceOption, ca: CaOption, cert: CertOption, key: KeyOption,
    rows: Annotated[Path, typer.Argument(help="a CSV with the model's features as columns")],
    run_id: Annotated[str | None, typer.Option("--run", help="a run id")] = None,
    federation: Annotated[str | None, typer.Option("--federation", help="its latest")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="CSV to write; default stdout")] = None,
    chunk_rows: Annotated[int, typer.Option("--chunk-rows", min=1, max=100_000)] = 20_000,
) -> None:  # fmt: skip
    """Predict the rows of a CSV (federation names and units), streaming, chunk by chunk."""
    import pandas as pd
    from rich.progress import Progress

    from cityfed.errors import CityFedError
    from cityfed.files import write_atomic

    if run_id is None and federation is None:
        raise CityFedError("model predict: give --run or --federation")
    try:
        reader = pd.read_csv(rows, chunksize=chunk_rows * 10)
    except (OSError, ValueError) as exc:
        raise CityFedError(f"{rows}: cannot read the CSV ({exc})") from None
    parts: list[str] = []
    header = True
    done = 0
    with (
        _client(service, ca, cert, key) as client,
        Progress(console=Console(stderr=True), transient=True) as bar,
    ):
        task = bar.add_task(f"predicting {rows.name}", total=None)
        for frame in reader:
            predicted = client.predict(frame, run_id, federation=federation, chunk_rows=chunk_rows)
            result = pd.DataFrame({"prediction": predicted.values})
            if predicted.probabilities.size:
                result["probability"] = predicted.probabilities
            text = result.to_csv(index=False, header=header)
            header = False
            if out is None:
                sys.stdout.write(text)
            else:
                parts.append(text)
            done += len(frame)
            bar.update(task, completed=done, description=f"predicted {done} rows")
    if out is not None:
        write_atomic(out, "".join(parts).encode())
        Console(stderr=True).print(f"wrote {escape(str(out))} ({done} rows)")


@runs_app.command("list")
def runs_list(
    service: ServiceOption, ca: CaOption, cert: CertOption, key: KeyOption,
    as_json: JsonOption = False,
) -> None:  # fmt: skip
    """Runs, newest first, with their status."""
    with _client(service, ca, cert, key) as client:
        runs = client.runs()
    if as_json:
        _print_json(runs)
        return
    for r in runs:
        _console().print(f"{r['run_id']}  {r['status']}  {escape(r['message'])}")


@runs_app.command("watch")
def runs_watch(
    service: ServiceOption, ca: CaOption, cert: CertOption, key: KeyOption,
    run_id: Annotated[str, typer.Argument(help="a run id")],
) -> None:  # fmt: skip
    """Print a run's progress as it happens, until it is done (exit 1 if it failed)."""
    last = ""
    with _client(service, ca, cert, key) as client:
        for event in client.watch(run_id):
            _console().print(f"{event['kind']}: {escape(event['message'])}")
            last = event["kind"]
    if last == "error":
        raise typer.Exit(1)


def city_enrol(
    service: ServiceOption, ca: CaOption, cert: CertOption, key: KeyOption,
    name: Annotated[str, typer.Argument(help="the city's name")],
    node_pub: Annotated[Path, typer.Argument(help="the city's NAME.node.pub")],
    contact: Annotated[str, typer.Option("--contact", help="who to call about it")] = "",
) -> None:  # fmt: skip
    """Ask the coordinator to enrol this city's node key (the operator approves)."""
    with _client(service, ca, cert, key) as client:
        entry = client.request_enrolment(name, node_pub, contact)
    _console().print(
        f"enrolment of {escape(name)} requested (key sha256 {entry['key_sha256'][:16]}…); "
        "the coordinator's operator approves it with `cityfed coordinator approve`"
    )


def register(app: typer.Typer, city_app: typer.Typer) -> None:
    """Add the service's commands to the main app (and ``city enrol`` to ``city``)."""
    app.add_typer(model_app, name="model")
    app.add_typer(runs_app, name="runs")
    city_app.command("enrol")(city_enrol)
