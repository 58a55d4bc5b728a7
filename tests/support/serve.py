"""A real ``receiver serve`` subprocess on free loopback ports, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.support.factories import free_port, write_config


class ServeProcess:
    """Starts ``python -m receiver serve`` and waits until /readyz answers 200 (the listeners
    open before the database: /healthz answers while it opens or migrates)."""

    def __init__(
        self,
        config_path: Path,
        env: Mapping[str, str],
        log_path: Path,
        *,
        interpreter_args: Sequence[str] = ("-m", "receiver"),
    ) -> None:
        self.config_path = config_path
        self.env = dict(env)
        self.log_path = log_path
        # What runs before "serve": ``-m receiver``, or ``-c …`` for a patched build in tests.
        self.interpreter_args = tuple(interpreter_args)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, ready_timeout_s: float = 20.0) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, *self.interpreter_args, "serve", "--config", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            cwd=self.config_path.parent,
        )
        log.close()
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"receiver exited early:\n{self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(self.admin_url + "/readyz", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"receiver did not become healthy:\n{self.log_path.read_text()}")

    @property
    def settings(self) -> dict[str, Any]:
        import yaml

        data: dict[str, Any] = yaml.safe_load(self.config_path.read_text())
        return data

    @property
    def ingest_url(self) -> str:
        server = self.settings["server"]
        return f"http://127.0.0.1:{server['port']}"

    @property
    def admin_url(self) -> str:
        admin = self.settings["admin"]
        return f"http://127.0.0.1:{admin['port']}"

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, as in a crash or an OOM kill."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def terminate(self, *, timeout_s: float = 15.0, sig: signal.Signals = signal.SIGTERM) -> float:
        """SIGTERM (or ``sig``) and wait; returns how long the exit took."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(sig)
        self.proc.wait(timeout=timeout_s)
        return time.monotonic() - started

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()


def serve_config(tmp_path: Path, **overrides: Any) -> Path:
    """A config for a subprocess: fixed free ports chosen now (they must survive restarts)."""
    server = {"port": free_port(), **overrides.pop("server", {})}
    admin = {"port": free_port(), **overrides.pop("admin", {})}
    return write_config(tmp_path, server=server, admin=admin, **overrides)


def serve_env(**extra: str) -> dict[str, str]:
    from tests.support.factories import test_environ

    env = test_environ(**extra)
    env.pop("RECEIVER_ADMIN_TOKEN", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path.cwd()), env.get("PYTHONPATH")]))
    return env
