"""The model loop, driven by a fake encode function: batching, chunking, limits, failures and health.

Every wait has a timeout, and every loop is released and stopped at teardown, so nothing here can hang.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from clip_sagemaker.model_loop import ModelLoop, QueueFull

WAIT = 3.0  # seconds: the most any single wait in these tests may take


class FakeEncode:
    """Records each batch; rows are numbers and row r encodes to [r, 2r]. Optionally holds the first batch."""

    def __init__(self, hold_first: bool = False, fail_on=None):
        self.batches: list[tuple[str, list]] = []
        self.started = threading.Event()   # set when the first batch has entered encode
        self.release = threading.Event()   # the first batch waits for this when hold_first
        self.hold_first = hold_first
        self.fail_on = fail_on
        self._lock = threading.Lock()

    def __call__(self, modality, rows):
        with self._lock:
            self.batches.append((modality, list(rows)))
            first = len(self.batches) == 1
        if first:
            self.started.set()
            if self.hold_first:
                assert self.release.wait(WAIT), "the test never released the first batch"
        if self.fail_on is not None and self.fail_on in rows:
            raise ValueError(f"cannot encode {self.fail_on}")
        values = np.asarray(rows, dtype=np.float32)
        return np.stack([values, 2 * values], axis=1)

    def sizes(self) -> list[int]:
        return [len(rows) for _, rows in self.batches]

    def rows_seen(self) -> list:
        return [row for _, rows in self.batches for row in rows]


def expected(rows) -> np.ndarray:
    values = np.asarray(rows, dtype=np.float32)
    return np.stack([values, 2 * values], axis=1)


@pytest.fixture()
def make_loop():
    made: list[tuple[ModelLoop, FakeEncode]] = []

    def make(encode: FakeEncode, max_batch_size=8, max_queue=64, stuck_after_s=60.0, start=True):
        loop = ModelLoop(encode, max_batch_size=max_batch_size, max_queue=max_queue, stuck_after_s=stuck_after_s)
        made.append((loop, encode))
        return loop.start() if start else loop

    yield make
    for loop, encode in made:
        encode.release.set()
    # stop() waits for the loop's idle poll (up to 0.2 s); let that happen off the test's clock.
    for loop, _ in made:
        threading.Thread(target=loop.stop, daemon=True).start()


def results(futures) -> np.ndarray:
    return np.concatenate([f.result(timeout=WAIT) for f in futures])


def hold_loop(loop: ModelLoop, encode: FakeEncode, row=-1):
    """Occupies the loop with a one-row batch that waits for encode.release; returns its futures."""
    futures = loop.submit("text", [row])
    assert encode.started.wait(WAIT), "the loop never picked up the first job"
    return futures


def wait_until(predicate, timeout=WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


# --- batching -----------------------------------------------------------------------------------------------

def test_lone_job_is_encoded_at_once_with_its_own_rows(make_loop):
    encode = FakeEncode()
    loop = make_loop(encode)
    [future] = loop.submit("text", [1, 2, 3])
    np.testing.assert_array_equal(future.result(timeout=WAIT), expected([1, 2, 3]))
    assert encode.batches == [("text", [1, 2, 3])]
    assert loop.batches_run == 1


def test_rows_from_concurrent_submitters_share_one_batch(make_loop):
    encode = FakeEncode(hold_first=True)
    loop = make_loop(encode, max_batch_size=16)
    first = hold_loop(loop, encode)

    submitted: dict[int, list] = {}
    barrier = threading.Barrier(4)

    def submitter(n):
        barrier.wait(WAIT)
        submitted[n] = loop.submit("text", [10 * n + 1, 10 * n + 2])

    threads = [threading.Thread(target=submitter, args=(n,)) for n in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
        assert not t.is_alive()
    encode.release.set()

    for n, futures in submitted.items():
        np.testing.assert_array_equal(results(futures), expected([10 * n + 1, 10 * n + 2]))
    np.testing.assert_array_equal(results(first), expected([-1]))
    # The held batch, then all four submitters' eight rows in one shared batch.
    assert encode.sizes() == [1, 8]
    assert sorted(encode.batches[1][1]) == sorted(r for n in range(1, 5) for r in (10 * n + 1, 10 * n + 2))
    assert loop.batches_run == 2


def test_job_larger_than_max_batch_size_is_split_into_ordered_chunks(make_loop):
    encode = FakeEncode()
    loop = make_loop(encode, max_batch_size=4)
    rows = list(range(100, 110))
    futures = loop.submit("image", rows)
    assert len(futures) == 3
    chunks = [f.result(timeout=WAIT) for f in futures]
    assert [len(c) for c in chunks] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate(chunks), expected(rows))
    assert encode.rows_seen() == rows
    assert all(size <= 4 for size in encode.sizes())
    assert all(modality == "image" for modality, _ in encode.batches)


def test_no_batch_ever_exceeds_max_batch_size(make_loop):
    encode = FakeEncode(hold_first=True)
    loop = make_loop(encode, max_batch_size=5, max_queue=256)
    hold_loop(loop, encode)
    rng = np.random.default_rng(0)
    jobs = []
    start = 0
    for _ in range(40):
        n = int(rng.integers(1, 12))
        rows = list(range(start, start + n))
        start += n
        jobs.append((rows, loop.submit("text", rows)))
    encode.release.set()
    for rows, futures in jobs:
        np.testing.assert_array_equal(results(futures), expected(rows))
    assert max(encode.sizes()) <= 5
    assert sum(encode.sizes()) == start + 1
    assert sorted(encode.rows_seen()) == [-1] + list(range(start))


def test_job_that_would_overflow_a_batch_waits_for_the_next_one(make_loop):
    encode = FakeEncode(hold_first=True)
    loop = make_loop(encode, max_batch_size=5)
    hold_loop(loop, encode)
    a, b, c = loop.submit("text", [1, 2, 3]), loop.submit("text", [4, 5, 6]), loop.submit("text", [7, 8])
    encode.release.set()
    for futures, rows in ((a, [1, 2, 3]), (b, [4, 5, 6]), (c, [7, 8])):
        np.testing.assert_array_equal(results(futures), expected(rows))
    # 3 + 3 > 5, so [4, 5, 6] starts the next batch, which [7, 8] then fills.
    assert [rows for _, rows in encode.batches] == [[-1], [1, 2, 3], [4, 5, 6, 7, 8]]


def test_each_modality_in_a_batch_gets_one_encode_call_with_its_own_rows(make_loop):
    encode = FakeEncode(hold_first=True)
    loop = make_loop(encode, max_batch_size=16)
    hold_loop(loop, encode)
    t1 = loop.submit("text", [1, 2])
    i1 = loop.submit("image", [3])
    t2 = loop.submit("text", [4])
    encode.release.set()
    np.testing.assert_array_equal(results(t1), expected([1, 2]))
    np.testing.assert_array_equal(results(i1), expected([3]))
    np.testing.assert_array_equal(results(t2), expected([4]))
    assert encode.batches[1:] == [("text", [1, 2, 4]), ("image", [3])]


# --- limits -------------------------------------------------------------------------------------------------

def test_full_queue_is_refused_at_once(make_loop):
    encode = FakeEncode(hold_first=True)
    loop = make_loop(encode, max_batch_size=4, max_queue=2)
    hold_loop(loop, encode)
    waiting = [loop.submit("text", [1]), loop.submit("text", [2])]
    started = time.monotonic()
    with pytest.raises(QueueFull) as caught:
        loop.submit("text", [3])
    assert time.monotonic() - started < 0.1
    assert "2 jobs" in str(caught.value)
    encode.release.set()
    np.testing.assert_array_equal(results(waiting[0]), expected([1]))
    np.testing.assert_array_equal(results(waiting[1]), expected([2]))
    assert 3 not in encode.rows_seen()


def test_refused_multi_chunk_job_leaves_no_chunk_to_be_encoded(make_loop):
    encode = FakeEncode(hold_first=True)
    loop = make_loop(encode, max_batch_size=2, max_queue=2)
    hold_loop(loop, encode)
    # Three chunks, room for two: the whole job is refused and its queued chunks are cancelled.
    with pytest.raises(QueueFull):
        loop.submit("text", [1, 2, 3, 4, 5, 6])
    encode.release.set()
    # The cancelled chunks hold their queue slots only until the loop takes and drops them.
    accepted = []

    def try_submit():
        try:
            accepted.extend(loop.submit("text", [7]))
            return True
        except QueueFull:
            return False

    assert wait_until(try_submit), "the cancelled chunks never left the queue"
    np.testing.assert_array_equal(results(accepted), expected([7]))
    assert encode.rows_seen() == [-1, 7]


# --- failures and cancellation ------------------------------------------------------------------------------

def test_failing_encode_fails_only_its_own_batch_and_the_loop_keeps_serving(make_loop):
    encode = FakeEncode(hold_first=True, fail_on=666)
    loop = make_loop(encode, max_batch_size=16)
    hold_loop(loop, encode)
    bad_text = loop.submit("text", [1, 666])
    other_text = loop.submit("text", [2])      # same batch as the bad rows: fails with them
    good_image = loop.submit("image", [3, 4])  # same take, but its own batch: unaffected
    encode.release.set()
    for futures in (bad_text, other_text):
        error = futures[0].exception(timeout=WAIT)
        assert isinstance(error, ValueError)
        assert "666" in str(error)
    np.testing.assert_array_equal(results(good_image), expected([3, 4]))
    # The loop survives and serves the next jobs.
    after = loop.submit("text", [5, 6])
    np.testing.assert_array_equal(results(after), expected([5, 6]))
    assert loop.healthy()


def test_failure_of_one_chunk_does_not_fail_later_jobs(make_loop):
    encode = FakeEncode(fail_on=13)
    loop = make_loop(encode, max_batch_size=2)
    futures = loop.submit("text", [13, 1])
    with pytest.raises(ValueError):
        futures[0].result(timeout=WAIT)
    for n in range(3):
        np.testing.assert_array_equal(results(loop.submit("text", [n])), expected([n]))
    assert loop.batches_run == 3


def test_cancelled_futures_are_skipped(make_loop):
    encode = FakeEncode(hold_first=True)
    loop = make_loop(encode, max_batch_size=16)
    hold_loop(loop, encode)
    [gone] = loop.submit("text", [41, 42])
    [kept] = loop.submit("text", [43])
    assert gone.cancel()
    encode.release.set()
    np.testing.assert_array_equal(kept.result(timeout=WAIT), expected([43]))
    assert gone.cancelled()
    assert 41 not in encode.rows_seen() and 42 not in encode.rows_seen()
    assert encode.batches[1] == ("text", [43])


def test_batch_of_only_cancelled_jobs_never_reaches_encode(make_loop):
    encode = FakeEncode(hold_first=True)
    loop = make_loop(encode)
    hold_loop(loop, encode)
    [gone] = loop.submit("image", [9])
    assert gone.cancel()
    encode.release.set()
    [later] = loop.submit("text", [10])
    later.result(timeout=WAIT)
    assert encode.batches == [("text", [-1]), ("text", [10])]


# --- health -------------------------------------------------------------------------------------------------

def test_loop_is_unhealthy_before_start_and_after_stop(make_loop):
    encode = FakeEncode()
    loop = make_loop(encode, start=False)
    assert not loop.healthy()
    loop.start()
    assert loop.healthy()
    loop.stop()
    assert not loop.healthy()


def test_loop_is_unhealthy_while_a_batch_runs_too_long_and_recovers(make_loop):
    encode = FakeEncode(hold_first=True)
    loop = make_loop(encode, stuck_after_s=0.05)
    assert loop.healthy()
    started = time.monotonic()
    [future] = hold_loop(loop, encode)
    assert wait_until(lambda: not loop.healthy()), "a stuck batch never made the loop unhealthy"
    assert time.monotonic() - started >= 0.05
    encode.release.set()
    future.result(timeout=WAIT)
    assert wait_until(loop.healthy), "the loop stayed unhealthy after the batch finished"
    np.testing.assert_array_equal(results(loop.submit("text", [1])), expected([1]))
    assert loop.healthy()


def test_a_batch_shorter_than_the_stuck_limit_keeps_the_loop_healthy(make_loop):
    encode = FakeEncode(hold_first=True)
    loop = make_loop(encode, stuck_after_s=30.0)
    hold_loop(loop, encode)
    time.sleep(0.02)
    assert loop.healthy()
    encode.release.set()


def test_jobs_still_queued_at_stop_fail_instead_of_hanging():
    import threading
    from clip_sagemaker.model_loop import ModelLoop

    release = threading.Event()

    def encode(modality, rows):
        release.wait(5)
        return np.zeros((len(rows), 2), np.float32)

    loop = ModelLoop(encode, max_batch_size=1, max_queue=10, stuck_after_s=60).start()
    first = loop.submit("text", ["a"])[0]
    waiting = loop.submit("text", ["b"])[0]
    stopper = threading.Thread(target=loop.stop)
    stopper.start()
    release.set()
    stopper.join(10)
    assert first.result(timeout=5).shape == (1, 2)
    with pytest.raises(RuntimeError, match="stopped"):
        waiting.result(timeout=5)


class OutOfMemoryError(RuntimeError):
    """Named like torch's, which is how the loop recognises it."""


def test_out_of_memory_splits_the_batch_so_only_the_row_that_cannot_fit_fails():
    import threading
    from clip_sagemaker.model_loop import ModelLoop

    gate, seen = threading.Event(), []

    def encode(modality, rows):
        gate.wait(5)
        seen.append(len(rows))
        if len(rows) > 2 or "huge" in rows:
            raise OutOfMemoryError("CUDA out of memory")
        return np.array([[float(len(r))] for r in rows], np.float32)

    loop = ModelLoop(encode, max_batch_size=8, max_queue=10, stuck_after_s=60).start()
    try:
        futures = [loop.submit("image", rows)[0] for rows in (["a"], ["bb", "ccc"], ["huge"], ["dddd", "e"])]
        gate.set()
        assert futures[0].result(timeout=5).ravel().tolist() == [1.0]
        assert futures[1].result(timeout=5).ravel().tolist() == [2.0, 3.0]
        with pytest.raises(OutOfMemoryError):
            futures[2].result(timeout=5)
        assert futures[3].result(timeout=5).ravel().tolist() == [4.0, 1.0]
        assert max(seen[1:]) <= 3  # after the first failure, no batch as large as the one that failed
    finally:
        loop.stop()


def test_a_single_large_job_is_split_by_rows_on_out_of_memory():
    from clip_sagemaker.model_loop import ModelLoop

    def encode(modality, rows):
        if len(rows) > 2:
            raise OutOfMemoryError("CUDA out of memory")
        return np.array([[float(r)] for r in rows], np.float32)

    loop = ModelLoop(encode, max_batch_size=8, max_queue=10, stuck_after_s=60).start()
    try:
        assert loop.submit("image", list(range(7)))[0].result(timeout=5).ravel().tolist() == list(range(7))
    finally:
        loop.stop()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the death is the point
def test_a_dead_loop_thread_is_replaced_and_health_comes_back():
    import time
    from clip_sagemaker.model_loop import ModelLoop

    loop = ModelLoop(lambda m, rows: np.zeros((len(rows), 1), np.float32), max_batch_size=4, max_queue=10,
                     stuck_after_s=60).start()
    try:
        original = loop._take_batch
        calls = {"n": 0}

        def dies_once():
            calls["n"] += 1
            if calls["n"] == 1:
                raise SystemExit("simulated crash of the loop thread")
            return original()

        loop._take_batch = dies_once
        deadline = time.monotonic() + 5
        while loop.restarts == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert loop.restarts == 1
        assert loop.healthy()
        assert loop.submit("text", ["x"])[0].result(timeout=5).shape == (1, 1)
    finally:
        loop.stop()


def test_under_concurrent_load_the_loop_waits_briefly_to_fill_the_batch_but_a_lone_job_never_waits():
    import threading
    import time
    from clip_sagemaker.model_loop import ModelLoop

    gate, sizes = threading.Event(), []

    def encode(modality, rows):
        gate.wait(5)
        sizes.append(len(rows))
        return np.zeros((len(rows), 1), np.float32)

    loop = ModelLoop(encode, max_batch_size=8, max_queue=20, stuck_after_s=60, max_wait_s=2.0).start()
    try:
        # A lone job: answered without the 2 s wait.
        gate.set()
        started = time.monotonic()
        loop.submit("text", ["a"])[0].result(timeout=5)
        assert time.monotonic() - started < 1.0
        # Two jobs that queue up behind a busy batch share the next one, which marks the load as concurrent ...
        gate.clear()
        busy = loop.submit("text", ["x"])[0]
        time.sleep(0.3)  # the loop sits in encode with "x"
        pair = [loop.submit("text", [x])[0] for x in "bc"]
        gate.set()
        busy.result(timeout=5)
        for f in pair:
            f.result(timeout=5)
        assert sizes[-1] == 2
        # ... so the next batch waits for a job that arrives a little later, and the two run together.
        first = loop.submit("text", ["d"])[0]
        time.sleep(0.3)
        second = loop.submit("text", ["e"])[0]
        first.result(timeout=5), second.result(timeout=5)
        assert sizes[-1] == 2
    finally:
        loop.stop()
