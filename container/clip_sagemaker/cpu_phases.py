"""Takes turns on the CPU: request threads' image preparation (decode, resize, normalise) and the model
loop's forward passes never run at the same time.

Why: a CPU forward pass runs on an OpenMP team with one thread per core, and every op ends at a barrier.
A request thread decoding a JPEG on one of those cores holds up its team thread, and so the whole op, at
every one of the forward's hundreds of ops: on 2 cores a bf16 ViT-B-32 batch under that contention took
several times its idle time, and throughput fell to about 0.4x of the bare forward. Taking turns, each
phase has every core to itself: preparation starts freely while no forward runs (a lone request never
waits), waits while one runs, and the model loop lets the preparations already under way finish before it
takes its next batch, so their images join it.

On a GPU the forward does not occupy the CPU's cores: `enabled=False` makes preparation free to overlap.

Forward passes never overlap one another, enabled or not: torch's intra-op pool is per calling thread
(OpenMP), so two model loops in one process (a multi-model endpoint's models, which share one CpuPhases)
running forwards at once would run two teams of threads on the same cores.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator


class CpuPhases:
    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._changed = threading.Condition()
        self._one_forward = threading.Lock()
        self._forward_running = False
        self._preparing = 0

    @contextmanager
    def preparing(self) -> Iterator[None]:
        """Request threads: around CPU-heavy preparation. Waits while a forward pass runs."""
        if not self.enabled:
            yield
            return
        with self._changed:
            self._changed.wait_for(lambda: not self._forward_running)
            self._preparing += 1
        try:
            yield
        finally:
            with self._changed:
                self._preparing -= 1
                self._changed.notify_all()

    def await_preparations(self, timeout_s: float) -> None:
        """Model loop: before taking a batch, let preparations under way finish (at most `timeout_s`)."""
        if self.enabled:
            with self._changed:
                self._changed.wait_for(lambda: self._preparing == 0, timeout=timeout_s)

    @contextmanager
    def forward(self) -> Iterator[None]:
        """Model loop: around a forward pass. Waits for another loop's forward to end; preparations that
        start meanwhile wait for its end."""
        with self._one_forward:
            if not self.enabled:
                yield
                return
            with self._changed:
                self._forward_running = True
            try:
                yield
            finally:
                with self._changed:
                    self._forward_running = False
                    self._changed.notify_all()
