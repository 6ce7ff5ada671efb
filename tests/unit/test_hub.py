"""serve's probe of the Hugging Face Hub: a model that downloads from a Hub that does not answer is loaded
from the local cache only (HF_HUB_OFFLINE=1), instead of after minutes of retries."""
from __future__ import annotations

import time

from clip_sagemaker.hub import offline_when_unreachable
from clip_sagemaker.model_source import ModelSource
from server import free_port
from static_server import serve_files

TAG = ModelSource("ViT-B-32", "laion2b_s34b_b79k", "ViT-B-32 with pretrained tag laion2b_s34b_b79k")


def test_a_hub_that_refuses_connections_switches_the_workers_to_the_cache():
    environ = {"HF_ENDPOINT": f"http://127.0.0.1:{free_port()}"}
    started = time.monotonic()
    line = offline_when_unreachable(TAG, environ, timeout=5)
    assert time.monotonic() - started < 5
    assert environ["HF_HUB_OFFLINE"] == "1"
    assert "cannot be reached" in line and environ["HF_ENDPOINT"] in line and "HF_HUB_OFFLINE=1" in line


def test_a_hub_that_answers_anything_is_left_on():
    with serve_files({}) as base:  # answers HEAD with an error status: it answers
        for endpoint in (base, base.replace("http://", "https://")):  # TLS fails: something is there all the same
            environ = {"HF_ENDPOINT": endpoint}
            assert offline_when_unreachable(TAG, environ) is None
            assert "HF_HUB_OFFLINE" not in environ


def test_no_probe_when_the_hub_is_switched_off_or_not_needed(tmp_path):
    unreachable = f"http://127.0.0.1:{free_port()}"
    checkpoint = tmp_path / "weights.safetensors"
    checkpoint.write_bytes(b"")
    for source, environ in [
        (TAG, {"HF_ENDPOINT": unreachable, "HF_HUB_OFFLINE": "1"}),
        (ModelSource("ViT-B-32", None, "random", random_weights=True), {"HF_ENDPOINT": unreachable}),
        (ModelSource("ViT-B-32", str(checkpoint), "checkpoint"), {"HF_ENDPOINT": unreachable}),
        (ModelSource(f"local-dir:{tmp_path}", None, "model directory"), {"HF_ENDPOINT": unreachable}),
    ]:
        before = dict(environ)
        assert offline_when_unreachable(source, environ) is None
        assert environ == before
    hub_repo = ModelSource("hf-hub:org/name", None, "Hub repo")
    assert hub_repo.from_hub and offline_when_unreachable(hub_repo, {"HF_ENDPOINT": unreachable}) is not None
