"""The ``cityfed`` command line."""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from cityfed.cli.deploy import register as register_deploy
from cityfed.errors import CityFedError

if TYPE_CHECKING:
    from cityfed.report.types import Report
    from cityfed.sim.simulate import PooledCheckError

__all__ = ["app", "main"]

app = typer.Typer(
    name="cityfed",
    help="Exact federated regression across partner cities, on Flower.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

register_deploy(app)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version as dist_version

        from cityfed.version import __version__

        typer.echo(f"cityfed {__version__} (flwr {dist_version('flwr')})")
        raise typer.Exit(0)


@app.callback()
def _options(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="print the CityFed and Flower versions and exit",
        ),
    ] = False,
) -> None:
    """Exact federated regression across partner cities, on Flower."""


def _fail(message: str, code: int = 2) -> typer.Exit:
    Console(stderr=True).print(
        f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True
    )
    return typer.Exit(code)


def _run_simulation(
    federation: Path, cities: list[Path], out: Path, as_json: bool, check: bool | None = None
) -> Report:
    from cityfed.ops.output import check_output_dir
    from cityfed.ops.progress import ProgressEvent
    from cityfed.sim.simulate import prepare, simulate

    # Log lines say what happened, not which line of cli.py printed them.
    console = Console(stderr=True, log_path=False) if as_json else Console(log_path=False)
    started = time.monotonic()
    check_output_dir(out)
    with console.status("Checking the federation spec and every city's data...") as status:
        plan = prepare(federation, cities, check=check)
        for fact in plan.facts[:50]:
            console.log(
                escape(f"{fact.city}: {fact.rows_used} usable rows ({fact.rows_dropped} dropped)")
            )
        if len(plan.facts) > 50:
            rows = sum(fact.rows_used for fact in plan.facts)
            console.log(f"... {len(plan.facts)} cities in all, {rows} usable rows")
        if not plan.facts:
            console.log(
                f"{len(plan.cities)} cities: specs, units and headers checked; "
                "each node validates its own rows"
            )
        if not plan.check:
            console.log("No pooled check (many cities or rows): --check runs it")
        for name, reason in sorted(plan.refusals.items()):
            console.log(escape(f"{name} will not take part: {reason}"))
        status.update(f"Starting Flower's simulation engine with {len(plan.cities)} cities...")

        cities_told = [0]

        def on_event(event: ProgressEvent) -> None:
            # Thousands of cities: the first ones by name, the rest in the status line.
            if event.kind == "city":
                cities_told[0] += 1
                if cities_told[0] == 51:
                    console.log("... (more cities: counted in the status line)")
                if cities_told[0] > 50:
                    status.update(f"{cities_told[0]} city events so far")
                    return
            console.log(escape(event.message))
            status.update(escape(event.message))

        report = simulate(plan, out, on_event=on_event)
    command_seconds = round(time.monotonic() - started, 3)
    return replace(report, timing=replace(report.timing, command_seconds=command_seconds))


def _failed_check(exc: PooledCheckError, as_json: bool) -> typer.Exit:
    """Show the numbers of a model that failed its pooled check, then fail (exit 1)."""
    from cityfed.report.terminal import print_summary

    if as_json:
        _print_json(exc.report)
    else:
        print_summary(exc.report, Console())
    return _fail(str(exc), code=1)


def _print_json(report: Report) -> None:
    from cityfed.report.build import report_json_text

    sys.stdout.write(report_json_text(report))


@app.command()
def simulate(
    federation: Annotated[Path, typer.Argument(help="federation.toml")],
    cities: Annotated[list[Path], typer.Argument(help="one city.toml per city")],
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for model.pb and the reports")],
    as_json: Annotated[
        bool, typer.Option("--json", help="print report.json instead of tables")
    ] = False,
    check: Annotated[
        bool | None,
        typer.Option(
            "--check/--no-check",
            help="compare the model with the pooled fit of every city's rows (default: "
            "up to 100 cities and 2,000,000 rows)",
        ),
    ] = None,
) -> None:
    """Run the federation on this machine, one Flower node per city."""
    from cityfed.report.terminal import print_summary
    from cityfed.sim.simulate import PooledCheckError

    try:
        report = _run_simulation(federation, cities, out, as_json, check)
    except PooledCheckError as exc:
        raise _failed_check(exc, as_json) from None
    except CityFedError as exc:
        raise _fail(str(exc)) from None
    if as_json:
        _print_json(report)
        return
    console = Console()
    print_summary(report, console)
    console.print(f"Wrote {out / 'model.pb'}, {out / 'report.json'}, {out / 'report.html'}")


@app.command()
def demo(
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="where the demo's artifacts go (default: cityfed-demo, cityfed-demo-rain, "
            "cityfed-demo-counts or cityfed-demo-private, with -deploy for --deploy: one "
            "folder per variant)",
        ),
    ] = None,
    deploy: Annotated[
        bool,
        typer.Option(
            "--deploy",
            help="run it as a real deployment on loopback: certificates, coordinator, "
            "TLS front, four city nodes, a run, then a clean stop",
        ),
    ] = False,
    rain: Annotated[
        bool, typer.Option("--rain", help="the classification federation: will it rain?")
    ] = False,
    counts: Annotated[
        bool,
        typer.Option(
            "--counts",
            help="the count federation: hourly departures, Poisson regression with hour "
            "of day and weekday as categories",
        ),
    ] = False,
    private: Annotated[
        bool,
        typer.Option(
            "--private",
            help="the temperature federation under secure aggregation and differential "
            "privacy (epsilon = 1): what privacy costs each city in accuracy",
        ),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="print report.json instead of tables")
    ] = False,
) -> None:
    """Three New York airports and a new station as four partner cities, on real data."""
    from cityfed.cli.demo import COUNT_CITIES, DEMO_CITIES, copy_demo_data, deploy_demo
    from cityfed.ops.output import check_output_dir
    from cityfed.ops.progress import ProgressEvent
    from cityfed.report.terminal import print_summary
    from cityfed.sim.simulate import PooledCheckError

    if rain + counts + private > 1:
        raise _fail("--rain, --counts and --private are different demos: choose one")
    variant = "-rain" if rain else "-counts" if counts else "-private" if private else ""
    federation = (
        "rain.toml"
        if rain
        else "counts/federation.toml"
        if counts
        else "private.toml"
        if private
        else "federation.toml"
    )
    cities = COUNT_CITIES if counts else DEMO_CITIES
    if out is None:
        out = Path("cityfed-demo" + variant + ("-deploy" if deploy else ""))
    # Log lines say what happened, not which line of cli.py printed them.
    console = Console(stderr=True, log_path=False) if as_json else Console(log_path=False)
    try:
        if deploy:
            check_output_dir(out)  # before the deployment (a simulation checks it itself)
            with console.status("Deploying on loopback...") as status:

                def on_event(event: ProgressEvent) -> None:
                    console.log(escape(event.message))
                    status.update(escape(event.message))

                def say(text: str) -> None:
                    console.log(escape(text))

                report = deploy_demo(
                    out, federation=federation, cities=cities, say=say, on_event=on_event
                )
        else:
            with tempfile.TemporaryDirectory(prefix="cityfed-demo-") as tmp:
                work = copy_demo_data(Path(tmp))
                report = _run_simulation(
                    work / federation, [work / c for c in cities.values()], out, as_json
                )
    except PooledCheckError as exc:
        raise _failed_check(exc, as_json) from None
    except CityFedError as exc:
        raise _fail(str(exc)) from None
    if as_json:
        _print_json(report)
        return
    if counts:
        console.print(
            "\n[bold]CityFed count demo[/]: scheduled departures per hour at EWR, JFK and LGA "
            "(and NEW, one month of JFK at five hours a day), Poisson regression on the "
            "weather with hour of day and weekday as categories. Each airport spells its "
            "weekdays its own way (Mon, Monday, Mo) and maps them onto the federation's "
            "levels; JFK and NEW derive hour or weekday from the timestamp.\n"
        )
    elif private:
        console.print(
            "\n[bold]CityFed private demo[/]: the temperature federation again, but the "
            "coordinator receives only masked statistics and learns their sum (secure "
            "aggregation), and each airport clips its rows and adds Gaussian noise before "
            "anything leaves it (ε = 1 per run, charged to each city's own ledger). The "
            "accuracy cost compares each city's holdout error under the private model "
            "with the same model fitted without noise.\n"
        )
    else:
        console.print(
            "\n[bold]CityFed demo[/]: EWR and JFK share US-unit CSVs (JFK derives °C with a "
            "formula); LGA exports metric units under German column names with decimal "
            "commas; NEW is a station that has just started (one month, every fourth hour: "
            "177 rows). Each city maps its columns onto the federation's; only statistics "
            "leave a city.\n"
        )
    print_summary(report, console)
    console.print(
        f"\nReport: [bold]{(out / 'report.html').resolve()}[/] (and report.json, model.pb)"
    )


@app.command()
def version() -> None:
    """Print the CityFed and Flower versions (as ``cityfed --version``)."""
    _print_version(True)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    try:
        code = app(args=argv, standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except CityFedError as exc:
        Console(stderr=True).print(
            f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True
        )
        return 2
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            return exc.exit_code
        if isinstance(exc, click.exceptions.Abort):
            return 130
        raise
    return code if isinstance(code, int) else 0


def run() -> None:
    """Console-script wrapper: exit with :func:`main`'s code."""
    sys.exit(main())
