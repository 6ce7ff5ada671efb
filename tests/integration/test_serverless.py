"""Serverless-sized memory: the real ./serve under a memory cap (MEMORY_LIMIT_MB, planned for exactly as a
serverless endpoint's cgroup limit is) refuses a model that cannot fit, at once and with the figures, and
serves one that fits."""
from __future__ import annotations

import time

import numpy as np

from http_helper import post


def test_a_cap_too_small_for_the_model_stops_serve_at_once_with_the_figures(serve, tiny_model_dir):
    started = time.monotonic()
    server = serve({"MODEL_DIR": str(tiny_model_dir), "MEMORY_LIMIT_MB": "512"}, wait_ready=False)
    assert server.wait_exit(timeout=30) == 2
    assert time.monotonic() - started < 15  # no worker started, no torch imported
    log = server.log()
    assert "serve: cannot start: the model needs about" in log
    assert "only 512 MiB are available (MEMORY_LIMIT_MB=512)" in log
    assert "Booting worker" not in log


def test_a_cap_the_model_fits_starts_and_answers(serve, tiny_model_dir, reference):
    server = serve({"MODEL_DIR": str(tiny_model_dir), "MEMORY_LIMIT_MB": "1100"})
    assert "memory 1100 MiB (MEMORY_LIMIT_MB=1100)" in server.log()
    body = post(server, "/invocations", {"task": "embed", "texts": ["a red car"]}).json()
    np.testing.assert_allclose(body["text_embeddings"], reference.texts(["a red car"]), atol=1e-4)
