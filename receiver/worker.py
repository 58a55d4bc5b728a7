"""The worker: claim -> handler -> complete / reschedule / bury, inside ``receiver serve``.

It wakes at once when ingest commits new work (:meth:`Worker.wake`, wired to
``store.on_committed``) and otherwise every ``poll_interval_s``. At most ``concurrency`` jobs run
at once (and at most a provider's own ``concurrency`` of that provider's). Every task is named
and owned by the worker: the loop task, one task per running job and its lease keeper.

:meth:`Worker.stop` stops claiming, gives running jobs ``shutdown_timeout_s``, then cancels them
and releases their jobs to the queue without counting the attempt. ``run(until_empty=True)``
drains the queue and returns (for tests); it waits for a scheduled retry or an expired lease with
the injected ``sleep``, so a test with a fake clock sees every backoff without sleeping.
"""

from __future__ import annotations

__all__ = ["Route", "Worker"]

import asyncio
import contextlib
import functools
import random as random_module
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from receiver.clock_steps import ClockWatch
from receiver.errors import StorageUnavailable
from receiver.handlers import (
    Handler,
    HandlerEvent,
    HttpClient,
    Outcome,
    build_handler,
    summarize,
)
from receiver.handlers.base import ERROR_CHARS
from receiver.metrics import Metrics
from receiver.retry import Dead, Failure, RetryPolicy
from receiver.settings import HttpHandler, ProviderSettings, WorkerSettings
from receiver.store.jobs import AttemptRecord, ClaimedJob, JobQueue

log = structlog.get_logger("receiver.worker")

_PURGED = "the payload was purged before the event was processed"
# A claim costs the same few statements for one job as for many: when only a few slots are free
# and jobs are still running, wait this long at most for more slots before claiming.
_GATHER_S = 0.005
# The queue gauges wait at least this many times as long as their last count took.
_STATS_COST_FACTOR = 100
# How long cancelled handler code gets to stop before it is logged as overrunning its timeout.
_OVERRUN_NOTICE_S = 1.0
# The longest wait before a crashed worker loop starts again (1 s, 2 s, 4 s, … up to this).
_RESTART_MAX_S = 60.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """How one provider's events are handled."""

    provider: str
    handler: Handler
    policy: RetryPolicy
    concurrency: int | None


@dataclass(slots=True)
class _Flight:
    job: ClaimedJob
    is_settling: bool = False  # writing the outcome: let it finish, never cancel it
    is_lease_lost: bool = False  # another worker may own the job now: stop renewing
    holds_slot: bool = True  # until its handler returns; its outcome is written meanwhile
    is_overrunning: bool = False  # past its timeout, not ended: waited for, for a while


class Worker:
    def __init__(
        self,
        queue: JobQueue,
        settings: WorkerSettings,
        providers: Mapping[str, ProviderSettings],
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        random: Callable[[], float] = random_module.random,
        metrics: Metrics | None = None,
        withheld_env: Collection[str] = (),
        clock_watch: ClockWatch | None = None,
    ) -> None:
        self._queue = queue
        # Watches ``clock`` for steps (None: a test's clock, which moves by design).
        self._clock_watch = clock_watch
        self._unshifted_s = 0.0  # a step back whose schedules are not moved yet
        self._settings = settings
        self._clock = clock
        self._sleep = sleep
        self._random = random
        self._metrics = metrics
        self._http = HttpClient()
        # Commands never inherit the variables that hold webhook secrets or an http handler's
        # header secrets, nor ``withheld_env`` (the admin tokens).
        withheld = frozenset(var for ps in providers.values() for var in ps.secret_envs)
        withheld |= frozenset(
            var
            for ps in providers.values()
            if isinstance(ps.handler, HttpHandler)
            for var in ps.handler.header_envs.values()
        )
        withheld |= frozenset(withheld_env)
        self.routes: dict[str, Route] = {
            name: Route(
                provider=name,
                handler=build_handler(ps.handler, self._http, withheld_env=withheld),
                policy=RetryPolicy(
                    max_attempts=ps.max_attempts or settings.max_attempts,
                    backoff_base_s=settings.backoff_base_s,
                    backoff_max_s=settings.backoff_max_s,
                ),
                concurrency=ps.concurrency,
            )
            for name, ps in providers.items()
            if ps.handler is not None
        }
        self._wake = asyncio.Event()
        self._is_stopping = False
        self._loop_task: asyncio.Task[None] | None = None
        self._flights: dict[asyncio.Task[None], _Flight] = {}
        self._stats_due_at = float("-inf")
        self._stats_task: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._log: structlog.typing.FilteringBoundLogger = log
        self._claim_batch = max(1, settings.concurrency // 2)
        # Handlers running now (a job whose outcome is being written no longer takes a slot).
        self._slots_taken = 0
        self._abandoned: Counter[str] = Counter()  # runs given up on, still running, by provider
        self._crashes = 0  # loop crashes in a row (reset by a claim that succeeds)
        self._restart_timer: asyncio.TimerHandle | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def wake(self) -> None:
        """New work was committed: claim now instead of at the next poll."""
        self._wake.set()

    @property
    def is_running(self) -> bool:
        task = self._loop_task
        return task is not None and not task.done() and not self._is_stopping

    async def not_running_reason(self) -> str | None:
        """For ``/readyz``: None while the worker runs; else why not."""
        if self.is_running:
            return None
        if self._is_stopping:
            return "the worker is stopping (the server is shutting down)"
        if self._restart_timer is not None:
            return f"the worker crashed ({self._crashes} in a row) and is about to start again"
        return "the worker is not running"

    async def start(self) -> None:
        if self._loop_task is None:
            self._is_stopping = False
            self._crashes = 0
            self._launch()

    def _launch(self) -> None:
        self._restart_timer = None
        if self._is_stopping:
            return
        self._loop_task = asyncio.create_task(self.run(), name="receiver-worker")
        self._loop_task.add_done_callback(self._loop_ended)

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        """A loop that raised is logged at once (it used to be only at shutdown, while nothing
        was processed and the queue gauges stood still) and started again after a backoff;
        ``/readyz`` says so meanwhile."""
        if task.cancelled() or task.exception() is None:
            return
        error = summarize(task.exception() or Exception())
        if self._is_stopping:
            self._log.error("worker_crashed", error=error)
            return
        self._crashes += 1
        if self._metrics is not None:
            self._metrics.background_errors.labels("worker").inc()
        # The queue gauges are counted from the loop: while it crash-loops they would stand
        # still (or never appear), and the alert on the oldest event's age never fire.
        self._stats_due_at = float("-inf")
        self._refresh_stats_soon()
        delay_s = min(_RESTART_MAX_S, 2.0 ** min(self._crashes - 1, 16))  # 2 ** 1024 overflows
        self._log.error(
            "worker_crashed", error=error, restart_in_s=delay_s, exc_info=task.exception()
        )
        self._restart_timer = asyncio.get_running_loop().call_later(delay_s, self._launch)

    async def stop(self) -> None:
        """Stop claiming; give running jobs ``shutdown_timeout_s``; release the rest."""
        self._is_stopping = True
        self._wake.set()
        if self._restart_timer is not None:
            self._restart_timer.cancel()
            self._restart_timer = None
        task, self._loop_task = self._loop_task, None
        if task is not None:
            await asyncio.wait({task})
        await self._http.close()

    async def run(self, *, until_empty: bool = False) -> None:
        """Process jobs until :meth:`stop`, or (``until_empty``) until none is left to do."""
        # Bound once logging is configured: a bound logger skips the module-level proxy's
        # configuration lookup, which every job's log lines would otherwise pay.
        self._log = log.bind()
        self._keeper = asyncio.create_task(self._keep_leases(), name="receiver-lease-keeper")
        late: asyncio.Task[None] | None = None
        try:
            # Now, and again every lease_s while a crashed predecessor's leases are live (a
            # quick restart comes back within them).
            if await self._requeue_unclaimable():
                late = asyncio.create_task(
                    self._keep_requeueing_unclaimable(), name="receiver-requeue-unclaimable"
                )
            while not self._is_stopping:
                self._wake.clear()
                await self._follow_clock_steps()
                await self._claim()
                self._crashes = 0
                self._refresh_stats_soon()
                if until_empty and not self._flights:
                    due = await self._queue.next_change_at(list(self.routes), now=self._clock())
                    if due is None:
                        return
                    delay_s = due - self._clock()
                    # Due already but not claimed (an earlier job of its serialize_by value is
                    # held elsewhere): look again shortly rather than spin.
                    await self._sleep(delay_s if delay_s > 0 else self._settings.poll_interval_s)
                    continue
                await self._wait()
                await self._gather_slots()
        finally:
            await self._drain()
            keeper, self._keeper = self._keeper, None
            keeper.cancel()  # a renewal already queued still commits: the coalescer runs it
            await asyncio.wait({keeper})
            if late is not None:
                late.cancel()
                await asyncio.wait({late})
            counting, self._stats_task = self._stats_task, None
            if counting is not None:
                counting.cancel()
                await asyncio.wait({counting})
            if until_empty:
                await self._http.close()

    async def _follow_clock_steps(self) -> None:
        """A step of the wall clock is logged; after a step back the stored schedules move
        with it (see :mod:`receiver.clock_steps`). A step forward needs no move: what was due
        later falls due as much earlier, and retention holds its clock back on its own."""
        if self._clock_watch is None:
            return
        step_s = self._clock_watch.step()
        if step_s:
            self._log.warning("clock_stepped", step_s=round(step_s, 3))
            if step_s < 0:
                self._unshifted_s += step_s
        if not self._unshifted_s:
            return
        try:
            moved = await self._queue.shift_schedules(self._unshifted_s)
        except StorageUnavailable as exc:  # tried again at the next pass
            self._log.warning("job_schedules_shift_failed", error=exc.detail)
            return
        self._log.info("job_schedules_shifted", step_s=round(self._unshifted_s, 3), jobs=moved)
        self._unshifted_s = 0.0

    async def _requeue_unclaimable(self) -> bool:
        """Requeue jobs no handler here will claim; True when a look later is needed (some are
        still leased, or this look failed)."""
        try:
            done = await self._queue.requeue_unclaimable(list(self.routes), now=self._clock())
        except StorageUnavailable as exc:
            self._log.warning("worker_requeue_failed", error=exc.detail)
            return True
        if done.requeued:
            self._log.warning("jobs_without_a_handler_requeued", jobs=done.requeued)
        if done.to_received or done.to_queued:
            self._log.info(
                "events_relabelled",
                waiting_for_a_handler=done.to_received,
                queued_for_their_handler=done.to_queued,
            )
        return done.still_leased

    async def _keep_requeueing_unclaimable(self) -> None:
        while True:
            await asyncio.sleep(self._settings.lease_s + 1.0)  # real time, like the leases
            if not await self._requeue_unclaimable():
                return

    async def _wait(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._settings.poll_interval_s):
                await self._wake.wait()

    async def _gather_slots(self) -> None:
        """A slot came free while others still run: let a few more come free (briefly), so one
        claim fills several. Nothing waits when enough are free, or none is running."""
        if self._free_slots() >= self._claim_batch or not self._slots_taken:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_GATHER_S):
                while self._free_slots() < self._claim_batch and not self._is_stopping:
                    self._wake.clear()
                    await self._wake.wait()

    def _free_slots(self) -> int:
        return self._settings.concurrency - self._slots_taken

    def _release_slot(self, flight: _Flight) -> None:
        if flight.holds_slot:
            flight.holds_slot = False
            self._slots_taken -= 1
            self._wake.set()  # a slot is free

    async def _drain(self) -> None:
        if not self._flights:
            return
        for task, flight in self._flights.items():
            if flight.is_overrunning:  # its attempt has failed: record it now, do not wait
                task.cancel()
        tasks = set(self._flights)
        _, pending = await asyncio.wait(tasks, timeout=self._settings.shutdown_timeout_s)
        for task in pending:
            if not self._flights[task].is_settling:
                task.cancel()  # a handler: its job goes back; an overrun: its attempt counts
        await asyncio.gather(*pending, return_exceptions=True)

    # -- claiming ----------------------------------------------------------------------------

    async def _claim(self) -> None:
        free = self._free_slots()
        if free <= 0 or not self.routes:
            return
        # Per-provider limits count live leases in the store, this worker's own included, and
        # this worker's runs left running past their timeout.
        caps = {
            name: None if cap is None else max(0, cap - self._abandoned[name])
            for name, cap in ((name, route.concurrency) for name, route in self.routes.items())
        }
        try:
            jobs = await self._queue.claim(
                caps=caps,
                limit=free,
                now=self._clock(),
                lease_s=self._settings.lease_s,
                running_here=[flight.job.event_id for flight in self._flights.values()],
            )
        except StorageUnavailable as exc:
            self._log.warning("worker_claim_failed", error=exc.detail)
            return
        for job in jobs:
            self._log.debug("job_claimed", **_job_fields(job))
            flight = _Flight(job=job)
            self._slots_taken += 1
            task = asyncio.create_task(
                self._process(flight, self.routes[job.provider]),
                name=f"receiver-job-{job.event_id}",
            )
            self._flights[task] = flight
            task.add_done_callback(self._landed)

    def _landed(self, task: asyncio.Task[None]) -> None:
        flight = self._flights.pop(task, None)
        if flight is not None:
            self._release_slot(flight)  # (already free unless the task ended early)
        if not task.cancelled() and task.exception() is not None:
            fields = _job_fields(flight.job) if flight is not None else {}
            error = summarize(task.exception() or Exception())
            self._log.error("job_task_failed", error=error, **fields)
        self._wake.set()

    def _refresh_stats_soon(self) -> None:
        """Count the queue for its gauges when due, beside the loop, not in it: the count shares
        the reader connection with admin reads, and claiming must never wait behind those."""
        if self._metrics is None or time.monotonic() < self._stats_due_at:
            return
        if self._stats_task is None or self._stats_task.done():
            self._stats_task = asyncio.create_task(
                self._refresh_stats(), name="receiver-queue-gauges"
            )

    async def _refresh_stats(self) -> None:
        """The queue gauges, every ``poll_interval_s``, or less often when counting a deep
        backlog gets expensive (the count reads every waiting job): at most 1 % of the time.
        The cost is the count's own, not the wait for the reader before it."""
        if self._metrics is None:
            return
        started = time.monotonic()
        self._stats_due_at = started + self._settings.poll_interval_s
        try:
            stats = await self._queue.stats(list(self.routes), now=self._clock())
        except StorageUnavailable:
            return  # metrics are best effort; the next poll tries again
        cost_s = self._queue.last_stats_cost_s
        self._stats_due_at = max(self._stats_due_at, started + cost_s * _STATS_COST_FACTOR)
        for row in stats:
            self._metrics.queue_depth.labels(row.provider).set(row.queued)
            self._metrics.running.labels(row.provider).set(row.running)
            self._metrics.oldest_queued_age.labels(row.provider).set(row.oldest_ready_age_s)
            self._metrics.oldest_unfinished_age.labels(row.provider).set(
                row.oldest_unfinished_age_s
            )

    # -- one job -----------------------------------------------------------------------------

    async def _process(self, flight: _Flight, route: Route) -> None:
        job = flight.job
        if job.body is None or job.attempt > route.policy.max_attempts:
            await self._settle(flight, route, _refusal(job, route), duration_s=0.0)
            return
        started = time.monotonic()
        try:
            outcome = await self._run_handler(job, route)
        except asyncio.CancelledError:
            flight.is_settling = True
            await self._release(job)
            raise
        if outcome.still_running is not None:
            await self._outlive(flight, outcome.still_running)
        await self._settle(flight, route, outcome, duration_s=time.monotonic() - started)

    async def _outlive(self, flight: _Flight, work: asyncio.Future[object]) -> None:
        """A run past its timeout that has not ended (a thread cannot be stopped; async code
        may ignore its cancellation): its slot goes to the next job, but its event stays
        running, the lease renewed, until it ends or ``lease_s`` more has passed. Run again
        meanwhile, the same event would run twice at once, past ``serialize_by`` and the
        provider's ``concurrency``. Bounded, and never past a shutdown, so that code that
        never returns still spends its attempts and goes dead instead of holding the event
        (and, given back at each restart, starting over) for ever. The attempt has failed
        all the same: it is recorded, not given back, however the wait ends."""
        self._release_slot(flight)
        flight.is_overrunning = True
        if self._is_stopping:  # timed out during a shutdown: record it now
            return
        try:
            done, _ = await asyncio.wait({work}, timeout=_OVERRUN_NOTICE_S)
            if done:
                return  # cancelled async code that stopped, as it should
            job = flight.job
            self._count_overrun(job.provider, work)
            self._log.warning(
                "handler_overrunning", waits_s=self._settings.lease_s, **_job_fields(job)
            )
            await asyncio.wait({work}, timeout=self._settings.lease_s)
        except asyncio.CancelledError:  # a shutdown: record the timed-out attempt below
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        if not work.done():  # left running unwatched: it still takes one of its provider's
            self._abandon(flight.job.provider, work)

    def _count_overrun(self, provider: str, work: asyncio.Future[object]) -> None:
        """``receiver_handlers_overrunning``: up now, down when the code really ends."""
        if self._metrics is None:
            return
        gauge = self._metrics.overrunning.labels(provider)
        gauge.inc()
        work.add_done_callback(lambda _: gauge.dec())

    def _abandon(self, provider: str, work: asyncio.Future[object]) -> None:
        """Count a run left running past its wait against its provider's ``concurrency``
        until it ends, so a capped provider's hung code cannot pile up threads."""
        self._abandoned[provider] += 1

        def ended(_: asyncio.Future[object]) -> None:
            self._abandoned[provider] -= 1
            self._wake.set()

        work.add_done_callback(ended)

    async def _run_handler(self, job: ClaimedJob, route: Route) -> Outcome:
        body = job.body or b""
        event = HandlerEvent(
            id=job.event_id,
            key=job.key,
            provider=job.provider,
            type=job.event_type,
            headers=job.headers,  # made read-only and case-blind by the event
            body=body,
            content_type=job.content_type,
            attempt=job.attempt,
            is_replay=job.is_replay,
        )
        try:
            return await route.handler.run(event)
        except Exception as exc:  # a handler must answer with an Outcome; a bug is a failure
            return Outcome(is_success=False, error=summarize(exc))

    async def _keep_leases(self) -> None:
        """Every ``lease_s / 2`` (real time), renew the leases of all running handlers in one
        transaction. A job claimed just before a round is renewed early, one claimed just after
        it within ``lease_s / 2``: every lease is renewed well before it runs out."""
        lease_s = self._settings.lease_s
        while True:
            await asyncio.sleep(lease_s / 2)
            flights = [f for f in self._flights.values() if not (f.is_settling or f.is_lease_lost)]
            if not flights:
                continue
            try:
                held = await self._queue.renew_many(
                    [f.job for f in flights], now=self._clock(), lease_s=lease_s
                )
            except StorageUnavailable:
                continue  # try again at the next round
            for flight in flights:
                if flight.job.event_id in held or flight.is_settling:
                    continue  # (a job that finished meanwhile is not a lost lease)
                flight.is_lease_lost = True
                self._log.warning("job_lease_lost", **_job_fields(flight.job))

    async def _settle(
        self, flight: _Flight, route: Route, outcome: Outcome, *, duration_s: float
    ) -> None:
        flight.is_settling = True
        # The handler is done: the next job may start while this outcome is written (the lease
        # holds this job meanwhile, and serialize_by still sees it running until then).
        self._release_slot(flight)
        job = flight.job
        now = self._clock()
        record = AttemptRecord(
            finished_at_s=now,
            duration_s=duration_s,
            http_status=outcome.http_status,
            exit_code=outcome.exit_code,
            error=outcome.error,
        )
        fields = _job_fields(job)
        write: Callable[[], Awaitable[bool]]
        if outcome.is_success:
            write = functools.partial(self._queue.complete, job, record)
            result = "succeeded"
        else:
            failure = Failure(
                error=outcome.error or "failed",
                is_permanent=outcome.is_permanent,
                http_status=outcome.http_status,
                retry_after=outcome.retry_after,
            )
            decision = route.policy.decide(
                attempt=job.attempt, failure=failure, now_s=now, random=self._random
            )
            if isinstance(decision, Dead):
                write = functools.partial(self._queue.bury, job, record)
                result = "dead"
                fields |= {"error": decision.error, "is_permanent": decision.is_permanent}
            else:
                run_at = now + decision.delay_s
                write = functools.partial(self._queue.reschedule, job, record, run_at=run_at)
                result = "retry"
                fields |= {"error": decision.error, "delay_s": round(decision.delay_s, 3)}
        is_held = await self._write_outcome(write, fields)
        if is_held is None:
            return
        if not is_held:
            self._log.warning("job_lease_lost", outcome=result, **fields)
            return
        self._observe(job.provider, result, duration_s)
        if result == "succeeded":
            self._log.info("job_succeeded", duration_s=round(duration_s, 3), **fields)
        elif result == "dead":
            self._log.warning("job_dead", **fields)
        else:
            self._log.info("job_retry_scheduled", **fields)

    async def _write_outcome(
        self, write: Callable[[], Awaitable[bool]], fields: dict[str, Any]
    ) -> bool | None:
        """Write a run's outcome (True: written under this worker's lease). On storage trouble
        (a lock held past the budget) try again, backing off, while the lease still holds the
        job: a brief lock must not turn a success into a second run, or into a dead event when
        that was the last attempt. None: not written; the lease brings the job back."""
        give_up_at = time.monotonic() + self._settings.lease_s / 2  # renewed that recently
        delay_s = 0.1
        while True:
            try:
                return await write()
            except StorageUnavailable as exc:
                if self._is_stopping or time.monotonic() + delay_s >= give_up_at:
                    self._log.error("job_settle_failed", storage_error=exc.detail, **fields)
                    return None
                self._log.warning("job_settle_retrying", storage_error=exc.detail, **fields)
                await asyncio.sleep(delay_s)  # real time, like the lease it races
                delay_s = min(delay_s * 2, 2.0)

    async def _release(self, job: ClaimedJob) -> None:
        try:
            is_held = await self._queue.release(job, now=self._clock())
        except StorageUnavailable as exc:
            self._log.error("job_release_failed", error=exc.detail, **_job_fields(job))
            return
        if is_held:
            self._observe(job.provider, "interrupted", None)
            self._log.info("job_released", **_job_fields(job))

    def _observe(self, provider: str, result: str, duration_s: float | None) -> None:
        if self._metrics is None:
            return
        self._metrics.attempts.labels(provider, result).inc()
        if duration_s is not None:
            self._metrics.handler_latency.labels(provider).observe(duration_s)
        if result == "dead":
            self._metrics.dead.labels(provider).inc()


def _refusal(job: ClaimedJob, route: Route) -> Outcome:
    """A job that must not run again: its payload is gone, or it has used every attempt (its
    last one's lease ran out, or ``max_attempts`` was lowered while it waited to retry)."""
    if job.body is None:
        error = _PURGED
    else:
        error = f"out of attempts ({route.policy.max_attempts} allowed)"
        if job.previous_error:  # kept: the error that matters is the last real one
            error += f"; the last one ended with: {job.previous_error}"
    return Outcome(is_success=False, error=error[:ERROR_CHARS], is_permanent=True)


def _job_fields(job: ClaimedJob) -> dict[str, Any]:
    """What every line about a job's run names: the key is what the downstream dedupes on and
    what an operator searches for; a replay's run says it is one."""
    return {
        "event_id": job.event_id,
        "key": job.key,
        "provider": job.provider,
        "attempt": job.attempt,
        "is_replay": job.is_replay,
    }
