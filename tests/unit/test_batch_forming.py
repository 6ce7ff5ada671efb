"""Under a steady set of concurrent clients the model loop keeps forming full batches (model_loop.py)."""
from __future__ import annotations

import threading
import time

import numpy as np

from clip_sagemaker.model_loop import ModelLoop


def test_clients_returning_at_different_times_still_share_full_batches():
    sizes = []

    def encode(modality, rows):
        time.sleep(0.05)  # a forward pass
        sizes.append(len(rows))
        return np.zeros((len(rows), 1), np.float32)

    loop = ModelLoop(encode, max_batch_size=16, max_queue=64, stuck_after_s=60, max_wait_s=0.5).start()
    stop = time.monotonic() + 2.0

    def client(index: int) -> None:
        while time.monotonic() < stop:
            loop.submit("image", [index])[0].result(timeout=5)
            time.sleep(0.005 * index)  # clients take different times to send their next request

    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
    finally:
        loop.stop()
    steady = sizes[3:-2]  # after the first batches, before the clients stop
    assert steady and sum(size == 6 for size in steady) >= 0.8 * len(steady), sizes


def test_a_client_left_alone_stops_waiting_within_a_few_batches():
    def encode(modality, rows):
        return np.zeros((len(rows), 1), np.float32)

    loop = ModelLoop(encode, max_batch_size=16, max_queue=64, stuck_after_s=60, max_wait_s=0.2).start()
    try:
        pair = [loop.submit("text", [x]) for x in "ab"]  # queued together: a concurrent batch
        for futures in pair:
            futures[0].result(timeout=5)
        timings = []
        for _ in range(8):
            started = time.monotonic()
            loop.submit("text", ["alone"])[0].result(timeout=5)
            timings.append(time.monotonic() - started)
        assert max(timings[-3:]) < 0.1, timings  # the last batches no longer wait for a second client
    finally:
        loop.stop()


def test_one_large_request_does_not_make_the_next_lone_requests_wait():
    def encode(modality, rows):
        return np.zeros((len(rows), 1), np.float32)

    loop = ModelLoop(encode, max_batch_size=16, max_queue=64, stuck_after_s=60, max_wait_s=0.5).start()
    try:
        loop.submit("text", list(range(16)))[0].result(timeout=5)
        started = time.monotonic()
        for _ in range(4):
            loop.submit("text", ["alone"])[0].result(timeout=5)
        assert time.monotonic() - started < 0.5
    finally:
        loop.stop()
