"""``receiver serve`` raises a low soft open-files limit (often 1024) so the connections its
listeners admit fit, as far as the hard limit allows."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from tests.support.serve import ServeProcess, serve_config, serve_env

_LOWERED = 256
_AS_ANY_SHELL = (
    "import resource, sys; "
    f"resource.setrlimit(resource.RLIMIT_NOFILE, ({_LOWERED}, resource.getrlimit("
    "resource.RLIMIT_NOFILE)[1])); "
    "from receiver.cli import main; sys.exit(main(sys.argv[1:]))"
)


def _soft_open_files(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open-files line in /proc limits")


@pytest.mark.timeout(60)
def test_a_low_soft_limit_is_raised_to_hold_max_connections(tmp_path: Path) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    config = serve_config(tmp_path, server={"max_connections": 1000})
    server = ServeProcess(
        config, serve_env(), tmp_path / "serve.log", interpreter_args=("-c", _AS_ANY_SHELL)
    )
    server.start()
    try:
        assert server.proc is not None
        soft = _soft_open_files(server.proc.pid)
    finally:
        server.terminate()
    needed = 1000 + 64 + 8 + 256  # connections, admin's, worker concurrency, spare
    assert soft == (needed if hard == resource.RLIM_INFINITY else min(needed, hard))
    log = (tmp_path / "serve.log").read_text()
    assert ("open_files_limit_low" in log) == (soft < needed)
