"""The load: one round of back-to-back requests from a pool of client threads, the cells that collect a
scenario's rounds per server (or raw row), and a scenario's run: a warm-up on each server, then rounds that
alternate the servers and, where the scenario has them, the raw model's side-by-side rounds."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from .common import REQUEST_TIMEOUT_S, SCENARIOS, UNITS, BenchmarkError, log
from .inputs import PayloadPool, check_answer, pool_factory
from .processes import MemorySampler, OtherLoad, own_cpu_s, tree_cpu_s
from .raw_process import SIDE_BY_SIDE, RawProcess, RawRow
from .servers import Server


@dataclass
class RoundResult:
    items: int
    requests: int
    elapsed_s: float
    latencies_s: list[float]
    server_cpu_s: float = 0.0  # for a raw row, the raw model process
    client_cpu_s: Optional[float] = None
    other_cpu_s: float = 0.0  # processes outside the benchmark: anything above ~0.1 cores disturbs the figures

    @property
    def rate(self) -> float:
        return self.items / self.elapsed_s if self.elapsed_s > 0 else 0.0


class _Clients:
    """`concurrency` threads, one requests.Session each, that send back to back until the end of the round;
    requests in flight at the end finish. The first failure stops them all."""

    def __init__(self, url: str, pool: PayloadPool, concurrency: int, keep_first: bool):
        self.url, self.pool, self.keep_first = url, pool, keep_first
        self.barrier = threading.Barrier(concurrency + 1)
        self.end = 0.0
        self.done: list[list[tuple[float, int, float]]] = [[] for _ in range(concurrency)]
        self.errors: list[str] = []
        self.first: list[bytes] = []
        self.abort = threading.Event()
        self.threads = [threading.Thread(target=self._client, args=(i,), daemon=True, name=f"client-{i}")
                        for i in range(concurrency)]
        for thread in self.threads:
            thread.start()

    def run(self, seconds: float) -> float:
        start = time.perf_counter()
        self.end = start + seconds  # set before the barrier releases the clients, which then read it
        self.barrier.wait()
        for thread in self.threads:
            while thread.is_alive():
                thread.join(0.2)  # a short join keeps Ctrl-C working
        return start

    def _client(self, index: int) -> None:
        import requests

        session = requests.Session()
        try:
            self.barrier.wait()
            while not self.abort.is_set() and time.perf_counter() < self.end and self._one(session, index):
                pass
        except BenchmarkError as exc:
            self._fail(str(exc))
        finally:
            session.close()

    def _one(self, session, index: int) -> bool:
        import requests

        payload = self.pool.take()
        started = time.perf_counter()
        try:
            answer = session.post(self.url, data=payload.body, headers={"Content-Type": payload.content_type},
                                  timeout=REQUEST_TIMEOUT_S)
        except requests.RequestException as exc:
            return self._fail(f"{type(exc).__name__}: {exc}")
        finished = time.perf_counter()
        if answer.status_code != 200:
            return self._fail(f"HTTP {answer.status_code}: {answer.content[:300]!r}")
        if self.keep_first and not self.first:
            self.first.append(answer.content)
        self.done[index].append((finished - started, payload.items, finished))
        return True

    def _fail(self, message: str) -> bool:
        self.errors.append(message)
        self.abort.set()
        return False


def run_round(server: Server, pool: PayloadPool, concurrency: int, seconds: float,
              keep_first: bool = False) -> tuple[RoundResult, Optional[bytes]]:
    clients = _Clients(f"{server.url}/invocations", pool, concurrency, keep_first)
    server_cpu, client_cpu, other = tree_cpu_s(server.pid), own_cpu_s(), OtherLoad()
    start = clients.run(seconds)
    server_cpu, client_cpu, other = tree_cpu_s(server.pid) - server_cpu, own_cpu_s() - client_cpu, other.seconds()
    if clients.errors:
        raise BenchmarkError(f"server ({server.name}) failed {len(clients.errors)} request(s); first: "
                             f"{clients.errors[0]}\nserver log tail:\n{server.log_tail()}")
    records = [r for per_thread in clients.done for r in per_thread]
    last = max((r[2] for r in records), default=start + seconds)
    result = RoundResult(items=sum(r[1] for r in records), requests=len(records), elapsed_s=last - start,
                         latencies_s=[r[0] for r in records], server_cpu_s=server_cpu, client_cpu_s=client_cpu,
                         other_cpu_s=other)
    return result, (clients.first[0] if clients.first else None)


def raw_round(raw: RawProcess, row: RawRow, seconds: float) -> RoundResult:
    other = OtherLoad()
    answer = raw.call(row, seconds)
    return RoundResult(items=answer["items"], requests=answer["requests"], elapsed_s=answer["elapsed_s"],
                       latencies_s=answer["latencies_s"], server_cpu_s=answer["cpu_s"], other_cpu_s=other.seconds())


def percentile(values: list[float], q: float) -> float:
    import numpy as np
    return float(np.percentile(values, q)) if values else float("nan")


@dataclass
class Cell:
    scenario: str
    server: str  # "b", "c", "d", or a raw row's key ("a-fp32", "a-bf16")
    concurrency: int
    label: str = ""
    rounds: list[RoundResult] = field(default_factory=list)

    @property
    def raw(self) -> bool:
        return self.server.startswith("a")

    @property
    def elapsed_s(self) -> float:
        return sum(r.elapsed_s for r in self.rounds)

    @property
    def rate(self) -> float:
        return sum(r.items for r in self.rounds) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def latencies(self) -> list[float]:
        return [lat for r in self.rounds for lat in r.latencies_s]

    def cores(self, which: str) -> Optional[float]:
        values = [getattr(r, which) for r in self.rounds]
        if any(v is None for v in values) or self.elapsed_s <= 0:
            return None
        return sum(values) / self.elapsed_s

    def round_other_cores(self) -> list[float]:
        return [r.other_cpu_s / r.elapsed_s if r.elapsed_s else 0.0 for r in self.rounds]

    def as_json(self) -> dict:
        lat = self.latencies()
        return {"scenario": self.scenario, "server": self.server, "label": self.label,
                "concurrency": self.concurrency, "items_per_s": self.rate,
                "round_items_per_s": [r.rate for r in self.rounds],
                "requests": sum(r.requests for r in self.rounds), "items": sum(r.items for r in self.rounds),
                "p50_ms": percentile(lat, 50) * 1000, "p99_ms": percentile(lat, 99) * 1000, "errors": 0,
                "server_cpu_cores": self.cores("server_cpu_s"), "client_cpu_cores": self.cores("client_cpu_s"),
                "other_cpu_cores": self.cores("other_cpu_s"), "round_other_cpu_cores": self.round_other_cores()}


def _log_round(scenario: str, who: str, unit: str, index: int, rounds: int, result: RoundResult) -> None:
    client = (f", client CPU {result.client_cpu_s / result.elapsed_s:.2f} cores"
              if result.client_cpu_s is not None else "")
    log(f"{scenario} ({who}) round {index + 1}/{rounds}: {result.rate:.1f} {unit}, {result.requests} requests, "
        f"p50 {percentile(result.latencies_s, 50) * 1000:.0f} ms, CPU {result.server_cpu_s / result.elapsed_s:.2f} "
        f"cores{client}, other processes {result.other_cpu_s / result.elapsed_s:.2f} cores")


def _loaded_round(server: Server, sampler: MemorySampler, pool: PayloadPool, concurrency: int, seconds: float,
                  keep_first: bool = False) -> tuple[RoundResult, Optional[bytes]]:
    sampler.target = server
    try:
        return run_round(server, pool, concurrency, seconds, keep_first)
    finally:
        sampler.target = None


def _warm_up(kind: str, servers: list[Server], make_pool: Callable[[float], PayloadPool], concurrency: int,
             seconds: float, sampler: MemorySampler) -> None:
    for server in servers:
        _, first = _loaded_round(server, sampler, make_pool(seconds), concurrency, seconds, keep_first=True)
        if first is None:
            raise BenchmarkError(f"server ({server.name}) answered nothing during the {seconds:g} s warm-up")
        check_answer(kind, first)


def run_scenario(name: str, servers: list[Server], raw: Optional[RawProcess], jpegs: list[bytes], rounds: int,
                 seconds: float, warmup_s: float, sampler: MemorySampler) -> list[Cell]:
    """Warm-up on each, then rounds that alternate the servers and the scenario's raw rows, if any."""
    kind, concurrency = SCENARIOS[name]
    make_pool = pool_factory(kind, jpegs)
    raw_rows = SIDE_BY_SIDE.get(name, ()) if raw else ()
    cells = {s.name: Cell(name, s.name, concurrency, s.label) for s in servers}
    cells.update({row.key: Cell(name, row.key, 1, row.label) for row in raw_rows})
    for row in raw_rows:
        raw_round(raw, row, warmup_s)
    _warm_up(kind, servers, make_pool, concurrency, warmup_s, sampler)
    for r in range(rounds):
        for server in servers:
            result, _ = _loaded_round(server, sampler, make_pool(seconds), concurrency, seconds)
            cells[server.name].rounds.append(result)
            _log_round(name, server.name, UNITS[kind], r, rounds, result)
        for row in raw_rows:
            result = raw_round(raw, row, seconds)
            cells[row.key].rounds.append(result)
            _log_round(name, row.key, row.unit, r, rounds, result)
    return list(cells.values())
