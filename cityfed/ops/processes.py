"""Background processes that outlive the command that started them.

A :class:`Daemon` is a process started in a session of its own, with its pid in
a file and its output in a log. Stopping it signals the whole session (process
group), so children it spawned (Flower's SuperExec, ServerApp and ClientApp
processes) stop with it, even when the leader itself was killed earlier.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cityfed.errors import CityFedError
from cityfed.files import PRIVATE_UMASK

__all__ = ["Daemon", "executable", "flower_env", "log_tail", "stop_process_group"]


def executable(name: str) -> str:
    """Path of a console script installed beside this Python, or on ``PATH``."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise CityFedError(f"{name}: not found; is flwr installed in this environment?")
    return found


def flower_env(flwr_home: Path | None = None) -> dict[str, str]:
    """Environment for Flower processes: offline, quiet, and our scripts on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["FLWR_TELEMETRY_ENABLED"] = "0"
    env["FLWR_DISABLE_UPDATE_CHECK"] = "1"
    if flwr_home is not None:
        env["FLWR_HOME"] = str(flwr_home)
    return env


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def _group_members(pgid: int) -> list[int]:
    """Living processes of the process group ``pgid`` (its leader included)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                members.append(int(entry.name))
    return sorted(members)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # killpg(0) succeeds while zombies remain; look for a living member.
    return bool(_group_members(pgid))


def log_tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file ("" when there is none)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def stop_process_group(pgid: int, timeout: float = 10.0) -> bool:
    """SIGTERM the process group ``pgid``, SIGKILL what is left after ``timeout``.

    Returns
    -------
    bool
        True if a member of the group was alive.
    """
    was_running = _group_alive(pgid)
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        if not _group_alive(pgid):
            break
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _group_alive(pgid):
            _reap(pgid)
            time.sleep(0.1)
    _reap(pgid)
    return was_running


@dataclass(frozen=True)
class Daemon:
    """A named background process with a pid file and a log file."""

    name: str
    pid_file: Path
    log_file: Path

    def pid(self) -> int | None:
        """The pid recorded when it was started, if any."""
        try:
            return int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def running(self) -> bool:
        """True while the process it started is alive."""
        pid = self.pid()
        return pid is not None and _alive(pid)

    def orphans(self) -> list[int]:
        """Processes it started that outlive it (its session's members, once it died).

        nginx's workers keep serving when their master is killed; a status that
        looked only at the master would call such a front stopped and healthy.
        """
        pid = self.pid()
        if pid is None or _alive(pid):
            return []
        return _group_members(pid)

    def start(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path | None = None) -> int:
        """Start the process detached from this one; returns its pid."""
        self.stop()  # leftovers of an earlier, killed instance
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} start {self.name}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                list(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
                umask=PRIVATE_UMASK,  # its files 0600, its folders 0700
            )
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.write_text(f"{proc.pid}\n")
        return proc.pid

    def exit_code(self) -> int | None:
        """Exit code if this process (a child of ours) has ended, else None."""
        pid = self.pid()
        if pid is None:
            return None
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        return os.waitstatus_to_exitcode(status) if done else None

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the process group; True if something was running."""
        pid = self.pid()
        if pid is None:
            return False
        was_running = stop_process_group(pid, timeout)
        self.pid_file.unlink(missing_ok=True)
        return was_running

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the log."""
        return log_tail(self.log_file, lines)

    def log_since_start(self, lines: int = 20) -> str:
        """The last lines the latest start wrote (earlier runs stay in the log)."""
        tail = self.log_tail(max(lines, 2000)).splitlines()
        marker = f" start {self.name}"
        starts = [
            i for i, line in enumerate(tail) if line.startswith("==== ") and line.endswith(marker)
        ]
        since = tail[starts[-1] + 1 :] if starts else tail
        return "\n".join(since[-lines:])
