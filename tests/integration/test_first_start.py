"""What a new user meets on the first `./serve`: `--help`, a start with no network, a model directory
of random weights."""
from __future__ import annotations

import os
import subprocess
import sys

from server import REPO


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
