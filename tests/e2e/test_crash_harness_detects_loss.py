"""The crash test is itself tested: against a build that acknowledges before COMMIT
(tests/support/broken_ack.py) the same harness must report acknowledged events as lost.

broken_ack is only ever imported by the subprocess: importing it here would patch the writer of
every in-process test that runs after this one."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.crash import BROKEN_ACK_ARGV_PREFIX, run_crash_cycles
from tests.support.serve import ServeProcess, serve_config, serve_env


@pytest.mark.timeout(90)
async def test_harness_reports_losses_of_a_build_that_acks_before_commit(
    tmp_path: Path,
) -> None:
    server = ServeProcess(
        serve_config(tmp_path),
        serve_env(),
        tmp_path / "serve.log",
        interpreter_args=BROKEN_ACK_ARGV_PREFIX,
    )
    # Kill as soon as anything is acknowledged: the batch that was answered is still
    # inside its transaction for COMMIT_DELAY_S seconds.
    report = await run_crash_cycles(
        server,
        tmp_path / "receiver.db",
        cycles=2,
        events_per_cycle=200,
        kill_after_acks=(1, 1),
        concurrency=16,
        final_sample=3,  # each redelivery waits out the delayed commit ahead of it
    )
    assert report.cycles == 2
    assert report.lost, f"the harness missed the broken build's losses: {report}"
    with pytest.raises(AssertionError, match="lost after SIGKILL"):
        report.assert_sound()
    # Nothing else is wrong with that build: SQLite rolled the open transaction back cleanly.
    assert not report.problems
