"""Shared pieces of the benchmarks: the machine, the process tree's memory, tables.

Nothing here depends on CityFed's internals; both benchmark scripts import it
(``python bench/accuracy.py`` puts ``bench/`` on ``sys.path``, and Ray workers
inherit the driver's path, so ClientApps defined in ``bench/`` load there too).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
REPO_DIR = BENCH_DIR.parent

#: Environment of every engine process the benchmarks start.
ENGINE_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "RAY_DEDUP_LOGS": "0",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
    "PYTHONWARNINGS": "ignore::FutureWarning",
}


def engine_env() -> dict[str, str]:
    """The current environment plus the engine settings and ``bench/`` on the path."""
    env = {**os.environ, **ENGINE_ENV}
    path = [str(BENCH_DIR), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in path if p)
    return env


def backend_config() -> dict[str, Any]:
    """Flower's Ray backend as ``cityfed simulate`` configures it: 1 CPU per ClientApp."""
    return {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {
            "num_cpus": max(1, os.cpu_count() or 1),
            "include_dashboard": False,
            "log_to_driver": False,
            "logging_level": "error",
        },
    }


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import flwr
    import numpy
    import ray
    import sklearn

    mem_kb = 0
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kb / 2**20, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "flwr": flwr.__version__,
        "ray": ray.__version__,
        "numpy": numpy.__version__,
        "scikit_learn": sklearn.__version__,
    }


def machine_line(info: dict[str, Any]) -> str:
    """One line describing the machine."""
    return (
        f"{info['cpus']} CPUs ({info['cpu_model']}), {info['memory_gib']} GiB RAM, "
        f"Python {info['python']}, flwr {info['flwr']}, ray {info['ray']}, "
        f"scikit-learn {info['scikit_learn']}"
    )


# ----------------------------------------------------------------- process memory


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def _tree(root: int) -> list[int]:
    children = _children_map()
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def _memory_kb(pid: int) -> tuple[int, int]:
    """(PSS, RSS) of one process in KiB; (0, 0) when it is gone."""
    pss = rss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
                elif line.startswith("Rss:"):
                    rss = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return pss, rss


def _label(pid: int) -> str:
    """A short name for a process of the run, to split its memory by role."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return "gone"
    first = argv[0].decode(errors="replace")
    text = b" ".join(argv).decode(errors="replace")
    if first.startswith("ray::"):
        return "Ray worker processes (ClientApps)"
    for marker, label in (
        ("cityfed.sim.worker", "engine + ServerApp"),
        ("plain_flower.py", "engine + ServerApp"),
        ("cityfed.cli", "cityfed CLI"),
        ("raylet", "Ray raylet"),
        ("gcs_server", "Ray GCS"),
    ):
        if marker in text:
            return label
    return "Ray other"


@dataclass
class TreeMemory:
    """Peak memory of a process and all its descendants, sampled from ``/proc``.

    PSS (proportional set size) counts a shared page once across processes, so
    the sum over the tree is the run's real footprint; the RSS sum counts
    shared pages (Ray's libraries, forked interpreters) once per process.
    """

    root: int
    interval: float = 0.2
    peak_pss_kb: int = 0
    peak_rss_kb: int = 0
    peak_processes: int = 0
    peak_pss_kb_by_label: dict[str, int] = field(default_factory=dict)
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> None:
        """Take one sample now."""
        pids = _tree(self.root)
        pss = rss = 0
        by_label: dict[str, int] = {}
        for pid in pids:
            p, r = _memory_kb(pid)
            pss += p
            rss += r
            label = _label(pid)
            by_label[label] = by_label.get(label, 0) + p
        for label, value in by_label.items():
            self.peak_pss_kb_by_label[label] = max(self.peak_pss_kb_by_label.get(label, 0), value)
        self.peak_pss_kb = max(self.peak_pss_kb, pss)
        self.peak_rss_kb = max(self.peak_rss_kb, rss)
        self.peak_processes = max(self.peak_processes, len(pids))
        self.samples += 1

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeMemory:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


@dataclass(frozen=True)
class Measured:
    """A child process run to completion, with its wall time and peak memory."""

    returncode: int
    wall_seconds: float
    peak_pss_mib: float
    peak_rss_mib: float
    peak_processes: int
    peak_pss_mib_by_process: dict[str, float]
    stdout: str
    stderr: str

    def figures(self) -> dict[str, Any]:
        """Wall time and peak memory, as both runners report them."""
        return {
            "wall_seconds": self.wall_seconds,
            "peak_pss_mib": self.peak_pss_mib,
            "peak_rss_mib": self.peak_rss_mib,
            "peak_processes": self.peak_processes,
            "peak_pss_mib_by_process": self.peak_pss_mib_by_process,
        }


def run_measured(command: Sequence[str], *, timeout: float = 7200.0) -> Measured:
    """Run ``command`` and sample the memory of its whole process tree meanwhile."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        list(command),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=engine_env(),
        text=True,
    )
    with TreeMemory(proc.pid) as memory:
        stdout, stderr = proc.communicate(timeout=timeout)
    wall = time.perf_counter() - started
    return Measured(
        returncode=proc.returncode,
        wall_seconds=wall,
        peak_pss_mib=memory.peak_pss_kb / 1024,
        peak_rss_mib=memory.peak_rss_kb / 1024,
        peak_processes=memory.peak_processes,
        peak_pss_mib_by_process={
            k: round(v / 1024, 1)
            for k, v in sorted(memory.peak_pss_kb_by_label.items())
            if k != "gone"
        },
        stdout=stdout,
        stderr=stderr,
    )


# -------------------------------------------------------------------- output


def print_table(
    title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], *, left: int = 3
) -> None:
    """Print a table; the first ``left`` columns are text, the others numbers."""
    table = Table(title=title, title_justify="left")
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i < left else "right")
    for row in rows:
        table.add_row(*row)
    Console(width=max(120, Console().width)).print(table)


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[str]], *, left: int = 3) -> str:
    """The same table in Markdown, for the READMEs."""
    head = "| " + " | ".join(columns) + " |"
    rule = "|" + "|".join(" --- " if i < left else " ---: " for i in range(len(columns))) + "|"
    body = ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join([head, rule, *body])


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write results as indented JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def command_line() -> str:
    """How this script was invoked, from the repository root."""
    script = Path(sys.argv[0]).resolve()
    try:
        shown = script.relative_to(REPO_DIR)
    except ValueError:
        shown = script
    return " ".join(["python", str(shown), *sys.argv[1:]])
