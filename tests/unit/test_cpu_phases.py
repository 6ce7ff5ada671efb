"""Image preparation and forward passes take turns on the CPU (cpu_phases.py)."""
from __future__ import annotations

import threading
import time

from clip_sagemaker.cpu_phases import CpuPhases


def test_preparation_starts_at_once_while_no_forward_runs():
    phases = CpuPhases()
    started = time.monotonic()
    with phases.preparing():
        pass
    assert time.monotonic() - started < 0.05


def test_preparation_waits_for_the_running_forward_to_end():
    phases = CpuPhases()
    events = []
    in_forward = threading.Event()

    def forward():
        with phases.forward():
            in_forward.set()
            time.sleep(0.2)
            events.append("forward done")

    thread = threading.Thread(target=forward)
    thread.start()
    in_forward.wait()
    with phases.preparing():
        events.append("preparing")
    thread.join()
    assert events == ["forward done", "preparing"]


def test_the_loop_lets_preparations_under_way_finish_before_its_next_batch():
    phases = CpuPhases()
    inside = threading.Event()

    def prepare():
        with phases.preparing():
            inside.set()
            time.sleep(0.15)

    thread = threading.Thread(target=prepare)
    thread.start()
    inside.wait()
    started = time.monotonic()
    phases.await_preparations(timeout_s=2)
    waited = time.monotonic() - started
    thread.join()
    assert 0.1 <= waited < 1.0


def test_the_loop_waits_for_preparations_no_longer_than_its_timeout():
    phases = CpuPhases()
    release = threading.Event()

    def prepare():
        with phases.preparing():
            release.wait(5)

    thread = threading.Thread(target=prepare)
    thread.start()
    time.sleep(0.05)
    started = time.monotonic()
    phases.await_preparations(timeout_s=0.1)
    assert time.monotonic() - started < 0.5
    release.set()
    thread.join()


def test_disabled_phases_never_wait():
    phases = CpuPhases(enabled=False)
    with phases.forward():
        started = time.monotonic()
        with phases.preparing():
            pass
        assert time.monotonic() - started < 0.05


def test_two_loops_forward_passes_never_overlap_enabled_or_not():
    """Two model loops sharing one CpuPhases (a multi-model endpoint's models) take turns: torch's intra-op
    pool is per calling thread, so overlapping forwards would run twice the threads there are cores."""
    for enabled in (True, False):
        phases = CpuPhases(enabled=enabled)
        running, most = [0], [0]
        lock = threading.Lock()

        def forward():
            for _ in range(5):
                with phases.forward():
                    with lock:
                        running[0] += 1
                        most[0] = max(most[0], running[0])
                    time.sleep(0.01)
                    with lock:
                        running[0] -= 1

        threads = [threading.Thread(target=forward) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert most[0] == 1, enabled
