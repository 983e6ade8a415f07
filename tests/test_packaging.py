"""The tree is the architecture: no symlinks, one import path per file, a clean wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Source folders of the three import packages, by package name.
PACKAGES = {
    "cityfed": ROOT / "cityfed",
    "cityfed_server": ROOT / "server" / "cityfed_server",
    "cityfed_client": ROOT / "client" / "cityfed_client",
}


def _shipped_sources() -> dict[str, Path]:
    """Every shipped module, by its path inside the wheel."""
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            found[f"{package}/{path.relative_to(folder).as_posix()}"] = path
    return found


def test_no_symlinks_in_the_tree() -> None:
    links = []
    for top, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in {".git", ".venv"} and not d.startswith(".")]
        links += [Path(top, name) for name in dirs + files if Path(top, name).is_symlink()]
    assert links == []


def test_each_module_is_imported_from_its_own_file() -> None:
    import importlib

    for wheel_path, path in _shipped_sources().items():
        name = wheel_path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        if name.endswith("__main__"):
            continue
        module = importlib.import_module(name)
        assert Path(str(module.__file__)).resolve() == path.resolve(), name


@pytest.mark.slow
def test_wheel_ships_the_three_packages_and_nothing_generic(tmp_path: Path) -> None:
    # Prepare: what the Dockerfiles copy into their build stage (building there
    # leaves no build/ folder in the checkout)
    source = tmp_path / "src"
    for name in ("pyproject.toml", "README.md"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    for name in ("cityfed", "server", "client"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    # Execute: build the wheel as the Dockerfiles do
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    [wheel] = tmp_path.glob("cityfed-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    # Assert
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"cityfed", "cityfed_server", "cityfed_client"}
    assert set(_shipped_sources()) <= set(names)
    assert {"cityfed/py.typed", "cityfed/v1/model_pb2.pyi", "cityfed/demo_data/EWR.csv"} <= set(
        names
    )


def test_the_console_script_resolves_to_the_cli() -> None:
    from importlib.metadata import entry_points

    from cityfed.cli.main import run

    [script] = entry_points(group="console_scripts", name="cityfed")
    assert script.load() is run
