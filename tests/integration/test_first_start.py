"""What a new user meets on the first `./serve`: `--help`, a start with no network, a model directory
of random weights."""
from __future__ import annotations

import os
import subprocess
import sys

import requests

from server import REPO, free_port, skip_if_a_default_model_dir_holds_a_model


def test_serve_help_prints_usage_and_exits_without_starting_anything():
    # No model is anywhere: a server that started would fail or try the Hub, never exit 0 this fast.
    env = {**os.environ, "MODEL_DIR": "/nonexistent", "SAGEMAKER_BIND_TO_PORT": "1"}
    for flag in ("--help", "-h"):
        result = subprocess.run([str(REPO / "serve"), flag], env=env, capture_output=True, text=True, timeout=20)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("Usage: ./serve")
        for name in ("MODEL_DIR", "MODEL_PRETRAINED", "IMAGE_URL_ALLOWED_HOSTS", "docs/configuration.md"):
            assert name in result.stdout
        assert "gunicorn" not in result.stderr


def test_serve_help_does_not_import_torch():
    code = ("import sys; sys.argv = ['serve', '--help']; from clip_sagemaker import launcher; "
            "rc = launcher.main(); print(rc, 'torch' in sys.modules, 'gunicorn' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=REPO / "container")
    assert result.stdout.splitlines()[-1] == "0 False False"


def test_make_model_without_weights_writes_random_ones_that_serve_says_are_random(serve, tmp_path):
    out = tmp_path / "model"
    result = subprocess.run([str(REPO / "local_test" / "make_model.sh"), "tiny-random",
                             "--config", str(REPO / "tests" / "fixtures" / "tiny_open_clip_config.json"),
                             "--out", str(out), "--no-tar"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "RANDOM weights, seed 0" in result.stdout
    server = serve({"MODEL_DIR": str(out)})
    assert "SERVING RANDOM WEIGHTS" in server.log()
    info = requests.get(f"{server.url}/info", timeout=10).json()
    assert info["random_weights"] is True and "RANDOM weights (seed 0" in info["source"]


def test_the_default_start_without_the_hub_fails_within_seconds_naming_the_offline_ways(serve, tmp_path):
    skip_if_a_default_model_dir_holds_a_model()
    # The Hub's address refuses connections here, whatever network this machine has; the cache is empty.
    hub = f"http://127.0.0.1:{free_port()}"
    srv = serve({"HF_HUB_OFFLINE": "", "HF_ENDPOINT": hub, "HF_HUB_CACHE": str(tmp_path / "hub-cache")},
                wait_ready=False)
    # It used to retry each of two files for about 25 s.
    assert srv.wait_exit(timeout=30) != 0
    log = srv.log()
    assert f"the Hugging Face Hub ({hub}) cannot be reached" in log
    assert "Retrying in" not in log
    fatal = [line for line in log.splitlines() if "FATAL" in line]
    assert len(fatal) == 1
    for way in ("MODEL_DIR=DIR", "HF_HUB_OFFLINE=1", "MODEL_PRETRAINED=none"):
        assert way in fatal[0]
