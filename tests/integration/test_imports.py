"""What importing a module drags in, seen from a fresh interpreter (this one has torch loaded already)."""
from __future__ import annotations

import subprocess
import sys

from server import REPO


def test_the_http_layer_imports_no_torch():
    code = ("import sys; sys.path.insert(0, 'container'); import clip_sagemaker.app, clip_sagemaker.protocols; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "False"
