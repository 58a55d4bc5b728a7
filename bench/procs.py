"""Processes for the benchmark: start pinned (and optionally under strace), watch, stop.

Everything here is bounded in time; every process is stopped by its own PID (or its own
process group, which the harness created).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the whole process (all threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) in KiB, from /proc/PID/status."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, value = line.split(":", 1)
                out[name] = int(value.split()[0])
    return out


def fsync_delay_prefix(delay_us: int, log: Path) -> list[str]:
    """strace in front of a command, delaying every fsync/fdatasync by ``delay_us``."""
    return [
        "strace",
        "-f",
        "-qq",
        "--seccomp-bpf",
        "-e",
        "trace=fsync,fdatasync",
        "-e",
        f"inject=fsync,fdatasync:delay_exit={delay_us}",
        "-o",
        str(log),
        "--",
    ]


def strace_supports_delay() -> bool:
    """True when strace exists and can delay fsync with --seccomp-bpf (strace >= 5.3)."""
    if shutil.which("strace") is None:
        return False
    try:
        done = subprocess.run(
            [*fsync_delay_prefix(1, Path("/dev/null")), "true"],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@dataclass
class Pinning:
    """Which cores the server and the load generator get (None: not pinned)."""

    server_core: int | None
    load_core: int | None

    @classmethod
    def detect(cls) -> Pinning:
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) >= 2 and shutil.which("taskset"):
            return cls(cores[0], cores[1])
        return cls(None, None)

    def server_prefix(self) -> list[str]:
        return [] if self.server_core is None else ["taskset", "-c", str(self.server_core)]

    def load_prefix(self) -> list[str]:
        return [] if self.load_core is None else ["taskset", "-c", str(self.load_core)]


@dataclass
class Server:
    name: str
    popen: subprocess.Popen[bytes]
    pid: int  # the server itself (the child of strace when under strace)
    port: int
    stderr_path: Path
    strace_log: Path | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def fsyncs(self) -> int:
        """fsync/fdatasync calls the server made so far (only known under strace)."""
        if self.strace_log is None or not self.strace_log.exists():
            return 0
        with self.strace_log.open("rb") as f:
            return sum(1 for line in f if b"sync(" in line)

    def stderr_tail(self, limit: int = 2000) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)  # our own session, see start()
                self.popen.wait(timeout=5)


def _child_of(pid: int, timeout_s: float, program: str) -> int:
    """The child of ``pid`` (strace) that runs ``program`` (after its exec, not before)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
                if cmdline and cmdline[0].decode() == program:
                    return int(child)
        time.sleep(0.01)
    raise RuntimeError(f"process {pid} started no child within {timeout_s:g} s")


def _is_up(port: int, path: str, *, until_ok: bool) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1):
            return True
    except urllib.error.HTTPError:
        return not until_ok  # any HTTP answer means the listener is up
    except (OSError, urllib.error.URLError):
        return False


def start_server(
    name: str,
    argv: list[str],
    *,
    port: int,
    pinning: Pinning,
    log_dir: Path,
    env: dict[str, str],
    cwd: Path,
    fsync_delay_us: int | None = None,
    health_path: str = "/healthz",
    until_ok: bool = False,
    timeout_s: float = 30.0,
) -> Server:
    """Start ``argv`` pinned to the server core, under strace when ``fsync_delay_us`` is set, and
    wait until it answers HTTP on ``port`` (``until_ok``: until ``health_path`` answers 200)."""
    prefix = pinning.server_prefix()
    strace_log = None
    if fsync_delay_us is not None:
        strace_log = log_dir / f"{name}.strace"
        prefix += fsync_delay_prefix(fsync_delay_us, strace_log)
    stderr_path = log_dir / f"{name}.stderr"
    with stderr_path.open("wb") as stderr:
        popen = subprocess.Popen(
            prefix + argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    pid = popen.pid
    server = Server(name, popen, pid, port, stderr_path, strace_log)
    try:
        if strace_log is not None:
            server.pid = _child_of(popen.pid, timeout_s=10, program=argv[0])
        deadline = time.monotonic() + timeout_s
        while not _is_up(port, health_path, until_ok=until_ok):
            if popen.poll() is not None:
                raise RuntimeError(f"{name} exited with {popen.returncode}: {server.stderr_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not answer within {timeout_s:g} s")
            time.sleep(0.05)
    except BaseException:
        server.stop()
        raise
    return server
