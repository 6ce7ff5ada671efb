"""GET /metrics of the real ./serve with two gunicorn workers (prometheus-client's multiprocess mode): any
scrape, whichever worker answers it, adds up both workers' counts; counters move with the traffic; a killed
worker's gauges stop counting while its counts stay; the metrics folder is emptied at start and a default
one removed at exit. Bounded: a few dozen requests, loopback only."""
from __future__ import annotations

import concurrent.futures
import os
import signal
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from http_helper import get, post

WORKERS = 2


def scrape(server) -> dict:
    response = get(server, "/metrics")
    assert response.status_code == 200
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted((k, str(v)) for k, v in labels.items()))), 0.0)


def wait_for_workers_ready(server, count: int, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(server)
        if value(samples, "clip_workers_ready") == count:
            return samples
        assert time.monotonic() < deadline, f"not {count} workers ready within {timeout} s:\n{server.log()[-3000:]}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def server(serve_module, tiny_model_dir):
    return serve_module({"MODEL_DIR": str(tiny_model_dir), "SAGEMAKER_MODEL_SERVER_WORKERS": str(WORKERS),
                         "TORCH_NUM_THREADS": "1", "SERVER_THREADS": "4"})


def test_every_scrape_adds_up_both_workers_counts(server):
    assert len(server.workers()) == WORKERS
    wait_for_workers_ready(server, WORKERS)
    # Each worker ran one text and one image batch to warm up: a scrape that saw only the worker answering
    # it would say 1. Scraped several times, so that both workers answer some.
    for _ in range(6):
        samples = scrape(server)
        assert value(samples, "clip_batch_rows_count", modality="text") == WORKERS
        assert value(samples, "clip_batch_rows_count", modality="image") == WORKERS

    before = scrape(server)
    sent = 24
    with concurrent.futures.ThreadPoolExecutor(6) as pool:  # a new connection per request: either worker
        statuses = list(pool.map(lambda i: post(server, "/invocations",
                                                {"task": "embed", "texts": [f"metrics text {i}"]}).status_code,
                                 range(sent)))
    post(server, "/invocations", {"task": "nope"})
    assert statuses == [200] * sent
    for _ in range(4):
        after = scrape(server)
        assert value(after, "clip_requests_total", route="/invocations", status=200, format="task") - value(
            before, "clip_requests_total", route="/invocations", status=200, format="task") == sent
        assert value(after, "clip_requests_total", route="/invocations", status=400, format="task") - value(
            before, "clip_requests_total", route="/invocations", status=400, format="task") == 1
        assert value(after, "clip_request_duration_seconds_count", route="/invocations") - value(
            before, "clip_request_duration_seconds_count", route="/invocations") == sent + 1
        assert value(after, "clip_text_cache_lookups_total", result="miss") - value(
            before, "clip_text_cache_lookups_total", result="miss") == sent
        assert value(after, "clip_batch_rows_sum", modality="text") - value(
            before, "clip_batch_rows_sum", modality="text") == sent
    # Scrapes are counted but not logged.
    assert '"route": "/metrics"' not in server.log() and '"route":"/metrics"' not in server.log()


def test_a_killed_workers_gauges_stop_counting_and_its_counts_stay(server):
    wait_for_workers_ready(server, WORKERS)
    before = scrape(server)
    victim = server.workers()[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 90
    while victim in server.workers() or len(server.workers()) < WORKERS:
        assert time.monotonic() < deadline, server.log()[-3000:]
        time.sleep(0.1)
    after = wait_for_workers_ready(server, WORKERS)  # 2, not 3: the dead worker's "ready" no longer counts
    time.sleep(1)
    assert value(scrape(server), "clip_workers_ready") == WORKERS
    # The replacement warmed up once more; nothing the dead worker counted was lost.
    assert value(after, "clip_batch_rows_count", modality="text") == value(
        before, "clip_batch_rows_count", modality="text") + 1
    assert value(after, "clip_requests_total", route="/invocations", status=200, format="task") >= value(
        before, "clip_requests_total", route="/invocations", status=200, format="task")


def test_the_metrics_folder_is_emptied_at_start_and_a_default_one_removed_at_exit(serve, tiny_model_dir,
                                                                                tmp_path):
    configured = tmp_path / "metrics"
    configured.mkdir()
    (configured / "counter_999999.db").write_bytes(b"left over by an earlier run")
    one = serve({"MODEL_DIR": str(tiny_model_dir), "PROMETHEUS_MULTIPROC_DIR": str(configured)})
    assert not (configured / "counter_999999.db").exists()
    assert scrape(one)  # and the scrape works
    assert one.stop() == 0
    assert configured.is_dir()  # the operator's folder stays

    other = serve({"MODEL_DIR": str(tiny_model_dir)})
    default = Path(f"/tmp/clip-sagemaker-metrics-{other.process.pid}")
    assert any(default.glob("*.db"))
    assert other.stop() == 0
    assert not default.exists()


def test_an_unusable_metrics_folder_stops_serve_with_one_clear_line(serve, tiny_model_dir, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    server = serve({"MODEL_DIR": str(tiny_model_dir), "PROMETHEUS_MULTIPROC_DIR": str(blocker / "metrics")},
                   wait_ready=False)
    assert server.wait_exit(30) == 2
    assert "serve: cannot start: cannot use" in server.log() and "PROMETHEUS_MULTIPROC_DIR" in server.log()
