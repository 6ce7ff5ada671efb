#!/usr/bin/env python3
"""Slow and stalled clients against a running container, while /ping and real requests must still be answered.

    python3 local_test/slow_clients.py [--url http://127.0.0.1:8080] [--clients 200] [--seconds 10]
                                       [--cut-after S]

Opens CLIENTS connections to the server, a quarter of each kind (a slow mobile upload looks the same as an
attack): `stall-headers` sends half a request's headers, then nothing; `trickle-headers` sends its headers
a byte every half second; `stall-body` sends headers promising a 100 kB body, a few bytes of it, then
nothing; `trickle-body` sends that body a byte every half second. While they hold their connections for
SECONDS, it asks GET /ping (each must answer 200 within 2 s, SageMaker's limit) and POST /invocations
(each must answer 200 with one unit-length embedding per text). With --cut-after S it then checks that the
server closed every stalled connection within S seconds of its last byte (the front's CLIENT_TIMEOUT plus
slack). Prints one JSON report on stdout and a summary line on stderr; exits 0 when every check held, 1 otherwise. Standard library only: CI runs
it against ./serve (tests/integration/test_front.py) and against the Docker image (.ci/docker_smoke.sh).
Loopback or a host you own only; every connection is closed when it ends.
"""
from __future__ import annotations

import argparse
import http.client
import json
import math
import select
import socket
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Optional

KINDS = ("stall-headers", "trickle-headers", "stall-body", "trickle-body")
PROMISED_BODY = 100_000
TRICKLE_EVERY_S = 0.5
PING_LIMIT_S = 2.0


@dataclass
class SlowClient:
    kind: str
    sock: socket.socket
    pending: bytes  # what it still has to trickle, a byte at a time
    last_sent: float = field(default_factory=time.monotonic)
    closed_at: Optional[float] = None

    @property
    def stalls(self) -> bool:
        return self.kind.startswith("stall")


def _request_head(host: str, kind: str) -> bytes:
    if kind.endswith("headers"):
        return (f"POST /invocations HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"X-Slow-Client: {kind}\r\n").encode()  # never the blank line that ends the headers
    return (f"POST /invocations HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {PROMISED_BODY}\r\n\r\n").encode()


def open_clients(host: str, port: int, count: int) -> list[SlowClient]:
    clients = []
    for i in range(count):
        kind = KINDS[i % len(KINDS)]
        sock = socket.create_connection((host, port), timeout=5)
        head = _request_head(f"{host}:{port}", kind)
        if kind == "stall-headers":
            sock.sendall(head)
            pending = b""
        elif kind == "trickle-headers":
            sock.sendall(head[:10])
            pending = head[10:] + b"X-Padding: " + b"x" * 1000
        elif kind == "stall-body":
            sock.sendall(head + b'{"texts": [')
            pending = b""
        else:
            sock.sendall(head)
            pending = b'{"texts": ["' + b"a" * PROMISED_BODY
        sock.setblocking(False)
        clients.append(SlowClient(kind, sock, pending))
    return clients


def _closed_by_server(client: SlowClient) -> bool:
    """True once the server has closed (or reset) the connection: readable, then EOF or an error."""
    try:
        readable, _, _ = select.select([client.sock], [], [], 0)
        if not readable:
            return False
        while True:
            chunk = client.sock.recv(65536)
            if not chunk:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def tend(clients: list[SlowClient], stop: threading.Event) -> None:
    """Trickles a byte per client every TRICKLE_EVERY_S and notes when the server closed each one."""
    while not stop.is_set():
        now = time.monotonic()
        for client in clients:
            if client.closed_at is not None:
                continue
            if _closed_by_server(client):
                client.closed_at = now
                continue
            if client.pending and now - client.last_sent >= TRICKLE_EVERY_S:
                try:
                    client.sock.send(client.pending[:1])
                    client.pending = client.pending[1:]
                    client.last_sent = now
                except BlockingIOError:
                    pass
                except OSError:
                    client.closed_at = now
        stop.wait(0.05)


def _ask(host: str, port: int, method: str, path: str, body: Optional[bytes] = None,
         timeout: float = 30.0) -> tuple[int, bytes, float]:
    started = time.monotonic()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read(), time.monotonic() - started
    finally:
        conn.close()


def _embedding_ok(status: int, body: bytes, n: int) -> bool:
    if status != 200:
        return False
    vectors = json.loads(body).get("text_embeddings", [])
    return len(vectors) == n and all(abs(math.sqrt(sum(x * x for x in v)) - 1.0) < 1e-3 for v in vectors)


def probe(host: str, port: int, seconds: float) -> dict:
    """/ping and real requests, one after another, for `seconds`."""
    pings, invocations, failures = [], 0, []
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        i += 1
        try:
            status, _, took = _ask(host, port, "GET", "/ping", timeout=PING_LIMIT_S + 3)
            pings.append(took)
            if status != 200 or took > PING_LIMIT_S:
                failures.append(f"/ping answered {status} in {took:.2f} s")
            texts = [f"probe {i} a", f"probe {i} b"]
            body = json.dumps({"task": "embed", "texts": texts}).encode()
            status, answer, took = _ask(host, port, "POST", "/invocations", body)
            invocations += 1
            if not _embedding_ok(status, answer, len(texts)):
                failures.append(f"/invocations answered {status} in {took:.2f} s: {answer[:200]!r}")
        except OSError as exc:
            failures.append(f"request failed: {exc!r}")
        time.sleep(0.1)
    return {"pings": len(pings), "ping_max_s": round(max(pings, default=0.0), 3), "invocations": invocations,
            "failures": failures[:10], "failure_count": len(failures)}


def run(url: str, clients: int, seconds: float, cut_after: Optional[float]) -> dict:
    parsed = urllib.parse.urlsplit(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
    slow = open_clients(host, port, clients)
    stop = threading.Event()
    tender = threading.Thread(target=tend, args=(slow, stop), daemon=True)
    tender.start()
    try:
        report = probe(host, port, seconds)
        if cut_after is not None:
            deadline = max(c.last_sent for c in slow if c.stalls) + cut_after
            while time.monotonic() < deadline and any(c.closed_at is None for c in slow if c.stalls):
                time.sleep(0.1)
    finally:
        stop.set()
        tender.join(5)
        for client in slow:
            client.sock.close()
    report["clients"] = {kind: sum(c.kind == kind for c in slow) for kind in KINDS}
    report["closed_by_server"] = {kind: sum(c.kind == kind and c.closed_at is not None for c in slow) for kind in KINDS}
    stalled_open = [c for c in slow if c.stalls and c.closed_at is None]
    report["stalled_still_open"] = len(stalled_open) if cut_after is not None else None
    report["ok"] = report["failure_count"] == 0 and report["pings"] > 0 and report["invocations"] > 0 \
        and (cut_after is None or not stalled_open)
    return report


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0, help="how long the probes run (default 10)")
    parser.add_argument("--cut-after", type=float, default=None,
                        help="then require every stalled connection closed within this many seconds")
    args = parser.parse_args(argv)
    report = run(args.url, args.clients, args.seconds, args.cut_after)
    print(json.dumps(report, indent=2))
    print(f"{'ok' if report['ok'] else 'FAILED'}: {args.clients} slow and stalled clients; {report['pings']} pings "
          f"(slowest {report['ping_max_s']} s) and {report['invocations']} requests answered, "
          f"{report['failure_count']} failures; stalled connections still open: {report['stalled_still_open']}",
          file=sys.stderr)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
