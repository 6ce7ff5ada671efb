"""local_test/deploy.py run as a script: its --help for every subcommand (the rest of deploy.py is tested
in-process, with botocore's Stubber: tests/unit/test_deploy.py)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from server import REPO


@pytest.mark.parametrize("command", ["", "package-model", "push-image", "create-endpoint", "autoscale",
                                     "batch-transform", "create-async-endpoint", "create-serverless-endpoint",
                                     "create-multi-model-endpoint", "create-component-endpoint",
                                     "create-inference-component", "invoke", "invoke-async"])
def test_help_for_every_subcommand(command):
    argv = [sys.executable, str(REPO / "local_test" / "deploy.py")] + ([command] if command else []) + ["--help"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: deploy.py {command}".rstrip())
    if command == "batch-transform":
        assert "execution-parameters" in result.stdout
    if command == "create-async-endpoint":
        assert "HasBacklogWithoutCapacity" in result.stdout
