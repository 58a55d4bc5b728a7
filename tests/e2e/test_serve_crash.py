"""A real ``receiver serve``: SIGKILL mid-stream loses nothing acknowledged."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.crash import run_crash_cycles
from tests.support.serve import ServeProcess, serve_config, serve_env


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_sigkill_mid_stream_loses_no_acknowledged_event(tmp_path: Path) -> None:
    server = ServeProcess(serve_config(tmp_path), serve_env(), tmp_path / "serve.log")
    report = await run_crash_cycles(
        server, tmp_path / "receiver.db", cycles=3, events_per_cycle=600, concurrency=16
    )
    report.assert_sound()
    assert report.cycles == 3
    assert len(report.acked) >= 150
