"""GET /metrics on the tiny model, in one process: prometheus-client's own parser reads it, and every metric
moves with the traffic that should move it (requests by route, status and format; latencies; batches and
model time; the caches; images read, refused and failed). Across gunicorn workers: tests/integration/test_metrics.py."""
from __future__ import annotations

import logging

from prometheus_client.parser import text_string_to_metric_families

from http_helper import get, post
from images import b64, pattern


def scrape(client, **headers) -> dict:
    """{(sample name, sorted label pairs): value} of one scrape."""
    response = get(client, "/metrics", **headers)
    assert response.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted((k, str(v)) for k, v in labels.items()))), 0.0)


def moved(before: dict, after: dict, name: str, **labels) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_metrics_parse_and_name_every_metric(client):
    response = get(client, "/metrics")
    assert response.content_type.startswith("text/plain")
    names = {family.name for family in text_string_to_metric_families(response.get_data(as_text=True))}
    assert {"clip_requests", "clip_request_duration_seconds", "clip_batch_rows", "clip_model_busy_seconds",
            "clip_queue_depth", "clip_workers_ready", "clip_text_cache_lookups",
            "clip_class_weight_cache_lookups", "clip_images"} <= names


def test_a_request_is_counted_by_route_status_and_format_with_its_latency(client):
    before = scrape(client)
    post(client, "/invocations", {"task": "embed", "images": [b64(pattern(80)), b64(pattern(81))],
                                  "texts": ["a metric text 1"]})
    post(client, "/embed", {"texts": ["a metric text 2"]})
    post(client, "/invocations", {"images": [b64(pattern(80))], "classes": ["x", 3]})  # a 400 in seed 003's format
    after = scrape(client)
    assert moved(before, after, "clip_requests_total", route="/invocations", status=200, format="task") == 1
    assert moved(before, after, "clip_requests_total", route="/embed", status=200, format="embed") == 1
    assert moved(before, after, "clip_requests_total", route="/invocations", status=400,
                 format="sagemaker_clip") == 1
    assert moved(before, after, "clip_request_duration_seconds_count", route="/invocations") == 2
    assert moved(before, after, "clip_request_duration_seconds_sum", route="/invocations") > 0
    assert moved(before, after, "clip_images_total", source="inline", outcome="ok") == 2
    assert moved(before, after, "clip_batch_rows_sum", modality="image") == 2
    assert moved(before, after, "clip_batch_rows_count", modality="image") == 1  # both in one forward pass
    assert moved(before, after, "clip_batch_rows_sum", modality="text") == 2
    assert moved(before, after, "clip_model_busy_seconds_total", modality="image") > 0
    assert moved(before, after, "clip_text_cache_lookups_total", result="miss") == 2


def test_caches_count_their_hits_and_misses(client):
    body = {"images": [b64(pattern(82))], "classes": ["metric owl", "metric lark"]}
    before = scrape(client)
    post(client, "/invocations", body)
    post(client, "/invocations", body)
    after = scrape(client)
    assert moved(before, after, "clip_class_weight_cache_lookups_total", result="miss") == 1
    assert moved(before, after, "clip_class_weight_cache_lookups_total", result="hit") == 1
    assert moved(before, after, "clip_text_cache_lookups_total", result="miss") == 2  # two prompts, once


def test_images_refused_and_failed_are_counted_apart(client):
    before = scrape(client)
    post(client, "/invocations", {"task": "embed", "images": ["http://127.0.0.1:9/x.png"]})  # no allow list: 403
    post(client, "/invocations", {"task": "embed", "images": ["not an image!"]})
    after = scrape(client)
    assert moved(before, after, "clip_images_total", source="url", outcome="refused") == 1
    assert moved(before, after, "clip_images_total", source="inline", outcome="failed") == 1


def test_a_path_no_route_serves_is_counted_as_unmatched(client):
    before = scrape(client)
    get(client, "/wp-admin/setup.php")
    after = scrape(client)
    assert moved(before, after, "clip_requests_total", route="unmatched", status=404, format="none") == 1
    assert not any("wp-admin" in str(labels) for _, labels in after)


def test_a_ready_worker_says_so(client):
    assert value(scrape(client), "clip_workers_ready") == 1


def test_scrapers_asking_for_openmetrics_get_it(client):
    response = get(client, "/metrics", Accept="application/openmetrics-text; version=1.0.0")
    assert response.content_type.startswith("application/openmetrics-text")
    assert response.get_data(as_text=True).rstrip().endswith("# EOF")


def test_metrics_and_ping_stay_out_of_the_access_log(client, caplog):
    with caplog.at_level(logging.INFO, logger="clip_sagemaker.access"):
        get(client, "/metrics")
        get(client, "/ping")
        get(client, "/info")
    routes = [record.getMessage() for record in caplog.records if record.name == "clip_sagemaker.access"]
    assert len(routes) == 1 and '"/info"' in routes[0]


def test_metrics_answer_while_the_model_loads(settings):
    from clip_sagemaker.app import create_app
    from clip_sagemaker.readiness import EngineSlot

    loading = create_app(settings, EngineSlot()).test_client()
    assert get(loading, "/metrics").status_code == 200
    assert get(loading, "/ping").status_code == 503
