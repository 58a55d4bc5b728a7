"""Many SIGKILL/restart cycles under concurrent clients and ~30 % redeliveries: every 2xx stays
stored under its id, one job per event, and the database passes ``PRAGMA integrity_check``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.crash import run_crash_cycles
from tests.support.serve import ServeProcess, serve_config, serve_env

CYCLES = 20


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_repeated_sigkill_under_concurrent_clients_loses_nothing(tmp_path: Path) -> None:
    server = ServeProcess(serve_config(tmp_path), serve_env(), tmp_path / "serve.log")
    report = await run_crash_cycles(
        server,
        tmp_path / "receiver.db",
        cycles=CYCLES,
        events_per_cycle=500,
        kill_after_acks=(20, 300),
        redelivery_ratio=0.3,
        clients=4,
        concurrency=8,
        seed=20240607,
        final_sample=200,
    )
    report.assert_sound()
    assert report.cycles == CYCLES
    assert len(report.acked) >= CYCLES * 20
    # The kills really landed mid-stream: some requests got no answer at all.
    assert report.statuses[0] > 0
