"""The model loop: one thread per model copy that batches work across requests.

Request threads submit prepared rows (image tensors, token rows) as jobs; the loop takes whatever is
waiting, up to `max_batch_size` rows, runs one forward pass per modality and hands each job its own rows.
Under concurrent load it waits up to `max_wait_s` for more jobs, because clients answered by the last
batch are already sending their next requests: while the batch holds fewer jobs and fewer rows than were
ever waiting or running at once during the last few batches (the clients there are; then it takes only
what is already queued). So a steady set of clients keeps forming full batches instead of splitting
into small ones, which cost several times more per row. A lone client never has more jobs in flight than
the batch it is in, and one large request is one job: neither makes a later lone request wait. The queue is
bounded: a full queue is refused at once. A failing batch fails only its own jobs and the loop goes on; a
batch that runs out of accelerator memory is split in halves and retried, so only a single row that
cannot fit on its own fails. `healthy()` turns false when the loop thread has died or one batch has run
for too long; a supervisor thread starts a new loop thread when one has died, so health comes back.
"""
from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from . import metrics
from .cpu_phases import CpuPhases

log = logging.getLogger(__name__)

Encode = Callable[[str, Sequence[Any]], np.ndarray]
# Longest the loop lets images being prepared catch up before it takes a batch (cpu_phases.py): a few
# preparations' time, so that one huge image cannot hold the batch back for long.
PREPARATION_WAIT_S = 0.1
RECENT_BATCHES = 4  # how many batches back the loop looks to judge concurrency and the batch to aim for


class QueueFull(Exception):
    """More work is waiting than the loop is allowed to hold."""


class LoopStopped(RuntimeError):
    """The loop was stopped (its model unloaded) before it ran this job."""


def is_out_of_memory(exc: BaseException) -> bool:
    # torch.OutOfMemoryError (torch.cuda.OutOfMemoryError): matched by name, to keep torch out of this module.
    return type(exc).__name__ == "OutOfMemoryError"


@dataclass
class _Job:
    modality: str
    rows: Sequence[Any]
    future: Future = field(default_factory=Future)


class ModelLoop:
    def __init__(self, encode: Encode, max_batch_size: int, max_queue: int, stuck_after_s: float,
                 max_wait_s: float = 0.0, phases: Optional[CpuPhases] = None):
        self._encode = encode
        self._phases = phases or CpuPhases(enabled=False)
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        # Rows submitted and not yet answered, their peak since the last batch was taken, and recent peaks.
        # Counted in (jobs, rows): waiting for more rows makes sense only while more jobs (clients) may come.
        self._in_flight_lock = threading.Lock()
        self._in_flight = (0, 0)
        self._peak = (0, 0)
        self._recent_peaks: collections.deque[tuple[int, int]] = collections.deque(maxlen=RECENT_BATCHES)
        self._queue: queue.Queue[_Job] = queue.Queue(maxsize=max_queue)
        self._stuck_after_s = stuck_after_s
        self._busy_since: Optional[float] = None
        self._carried: Optional[_Job] = None
        self._stopping = threading.Event()
        self._thread = self._new_thread()
        self._supervisor = threading.Thread(target=self._supervise, name="model-loop-supervisor", daemon=True)
        self.batches_run = 0
        self.restarts = 0

    def _new_thread(self) -> threading.Thread:
        return threading.Thread(target=self._run, name="model-loop", daemon=True)

    def start(self) -> "ModelLoop":
        self._thread.start()
        self._supervisor.start()
        return self

    def _supervise(self) -> None:
        while not self._stopping.wait(0.5):
            if not self._thread.is_alive():
                log.error("model loop: the loop thread died; starting a new one")
                # Started before it is published: stop() and healthy() must never see an unstarted thread.
                thread = self._new_thread()
                thread.start()
                self._thread = thread
                self.restarts += 1

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)
        self._supervisor.join(timeout=5)
        # Whoever still waits must hear that no answer is coming rather than wait out its deadline.
        leftovers = [self._carried] if self._carried is not None else []
        while True:
            try:
                leftovers.append(self._queue.get_nowait())
            except queue.Empty:
                break
        for job in leftovers:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(LoopStopped("the model loop was stopped"))

    def healthy(self) -> bool:
        busy_since = self._busy_since
        stuck = busy_since is not None and time.monotonic() - busy_since > self._stuck_after_s
        return self._thread.is_alive() and not stuck

    def submit(self, modality: str, rows: Sequence[Any]) -> list[Future]:
        """Queue rows for encoding; one future per chunk of at most max_batch_size rows, in order."""
        if self._stopping.is_set():
            raise LoopStopped("the model loop was stopped")  # nobody would ever take the work
        jobs = [_Job(modality, rows[i:i + self.max_batch_size]) for i in range(0, len(rows), self.max_batch_size)]
        for index, job in enumerate(jobs):
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                for queued in jobs[:index]:
                    queued.future.cancel()  # still counted: the loop takes and discards them
                raise QueueFull(f"{self._queue.maxsize} jobs are already waiting for the model") from None
            self._count_in_flight(1, len(job.rows))
        metrics.QUEUE_DEPTH.set(self._queue.qsize())
        return [job.future for job in jobs]

    def _count_in_flight(self, jobs: int, rows: int) -> None:
        with self._in_flight_lock:
            self._in_flight = (self._in_flight[0] + jobs, self._in_flight[1] + rows)
            self._peak = (max(self._peak[0], self._in_flight[0]), max(self._peak[1], self._in_flight[1]))

    def _take_batch(self) -> list[_Job]:
        if self._carried is not None:
            jobs, self._carried = [self._carried], None
        else:
            try:
                jobs = [self._queue.get(timeout=0.2)]
            except queue.Empty:
                return []
        rows = len(jobs[0].rows)
        with self._in_flight_lock:
            self._recent_peaks.append(self._peak)
            self._peak = self._in_flight
        peak_jobs = max(jobs_ for jobs_, _ in self._recent_peaks)
        target = min(self.max_batch_size, max(rows_ for _, rows_ in self._recent_peaks))
        wait_until = time.monotonic() + self.max_wait_s
        while rows < self.max_batch_size:
            more_may_come = rows < target and len(jobs) < peak_jobs
            remaining = max(0.0, wait_until - time.monotonic()) if more_may_come else 0.0
            try:
                job = self._queue.get(timeout=remaining) if remaining else self._queue.get_nowait()
            except queue.Empty:
                break
            if rows + len(job.rows) > self.max_batch_size:
                self._carried = job  # first in the next batch, so that no batch grows past the limit
                break
            jobs.append(job)
            rows += len(job.rows)
        metrics.QUEUE_DEPTH.set(self._queue.qsize())
        return jobs

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._phases.await_preparations(PREPARATION_WAIT_S)
            taken = self._take_batch()
            jobs = [job for job in taken if job.future.set_running_or_notify_cancel()]
            try:
                for modality in dict.fromkeys(job.modality for job in jobs):
                    self._run_batch(modality, [job for job in jobs if job.modality == modality])
            finally:
                self._count_in_flight(-len(taken), -sum(len(job.rows) for job in taken))

    def _encode_splitting(self, modality: str, rows: Sequence[Any]) -> np.ndarray:
        """One job's rows, halved and retried while they run out of memory, down to a single row."""
        try:
            return self._encode(modality, rows)
        except Exception as exc:
            if not is_out_of_memory(exc) or len(rows) == 1:
                raise
        half = len(rows) // 2
        return np.concatenate([self._encode_splitting(modality, rows[:half]),
                               self._encode_splitting(modality, rows[half:])])

    def _run_batch(self, modality: str, jobs: list[_Job]) -> None:
        rows = [row for job in jobs for row in job.rows]
        started = self._busy_since = time.monotonic()
        try:
            with self._phases.forward():
                out = self._encode_splitting(modality, rows) if len(jobs) == 1 else self._encode(modality, rows)
        except BaseException as exc:  # a failed batch must fail its own jobs, never the loop
            if is_out_of_memory(exc) and len(jobs) > 1:
                # Retry in halves, so that every request succeeds or fails on its own.
                log.warning("model loop: out of memory on %d %s rows; retrying the batch in halves",
                            len(rows), modality)
                self._run_batch(modality, jobs[:len(jobs) // 2])
                self._run_batch(modality, jobs[len(jobs) // 2:])
                return
            log.exception("model loop: a %s batch of %d rows failed", modality, len(rows))
            for job in jobs:
                job.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise  # SystemExit and the like end this thread; the supervisor starts a new one
            return
        finally:
            self._busy_since = None
            metrics.MODEL_BUSY_SECONDS.labels(modality=modality).inc(time.monotonic() - started)
        self.batches_run += 1
        metrics.BATCH_ROWS.labels(modality=modality).observe(len(rows))
        log.debug("model loop: %d %s rows of %d jobs in %.1f ms", len(rows), modality, len(jobs),
                  1000 * (time.monotonic() - started))
        start = 0
        for job in jobs:
            job.future.set_result(out[start:start + len(job.rows)])
            start += len(job.rows)
