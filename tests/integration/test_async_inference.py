"""Asynchronous inference: with ASYNC_INFERENCE=true the real ./serve answers a 100 MB JSON Lines body (the
size of S3 object an async endpoint passes on) one line per record, in order, while the worker's peak memory
stays within a bound far below the body's size: the body is spooled, answered and sent a chunk at a time."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import requests

BODY_BYTES = 100 * 1024 * 1024
DISTINCT_TEXTS = 3000  # repeated: after the first pass every text comes from the text cache
# The worker's peak resident memory while answering may exceed its resident memory before by at most this
# (measured: about 30 MB for the 100 MB body, whose answer is about 280 MB).
PEAK_GROWTH_BOUND_KB = 64 * 1024


def texts() -> list[str]:
    return [f"caption {i}: a photograph of a small red house beside a quiet river at dusk, seen from across "
            f"the water, variant {i}" for i in range(DISTINCT_TEXTS)]


def write_body(path: Path) -> int:
    """Item records {"id": i, "text": ...} until the file holds BODY_BYTES; returns the record count."""
    lines = [orjson.dumps({"text": t}) for t in texts()]
    count = 0
    with open(path, "wb") as f:
        while f.tell() < BODY_BYTES:
            f.write(b'{"id":%d,' % count + lines[count % DISTINCT_TEXTS][1:] + b"\n")
            count += 1
    return count


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {key} in /proc/{pid}/status")


def test_a_100_mb_json_lines_body_is_answered_line_by_line_within_a_memory_bound(serve, tiny_model_dir,
                                                                                  reference, tmp_path):
    server = serve({"MODEL_DIR": str(tiny_model_dir), "ASYNC_INFERENCE": "true"})
    body = tmp_path / "body.jsonl"
    count = write_body(body)
    [worker] = server.workers()
    rss_before = status_kb(worker, "VmRSS")
    Path(f"/proc/{worker}/clear_refs").write_text("5")  # VmHWM restarts from the resident memory now
    expected = reference.texts(texts()[:5])

    answered = 0
    with open(body, "rb") as f:
        response = requests.post(f"{server.url}/invocations", data=f, stream=True, timeout=240,
                                 headers={"Content-Type": "application/jsonlines"})
        assert response.status_code == 200
        for line in response.iter_lines(chunk_size=1 << 16):
            answer = orjson.loads(line)
            assert answer["id"] == answered
            if answered % DISTINCT_TEXTS < len(expected):
                np.testing.assert_allclose(answer["embedding"], expected[answered % DISTINCT_TEXTS], atol=1e-4)
            else:
                assert len(answer["embedding"]) == 32
            answered += 1
    peak = status_kb(worker, "VmHWM")
    assert answered == count > 500_000
    assert peak - rss_before < PEAK_GROWTH_BOUND_KB, (rss_before, peak)
    print(f"{count} records, {body.stat().st_size / 2**20:.0f} MiB: worker RSS before {rss_before / 1024:.0f} MiB, "
          f"peak during {peak / 1024:.0f} MiB")
