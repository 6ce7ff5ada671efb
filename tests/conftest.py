"""Shared fixtures: tiny random OpenCLIP models saved in the layouts users ship, loaded the production way,
and the real ./serve started with given settings.

tests/unit: no ./serve and no subprocess, a fast inner loop (`pytest tests/unit`). tests/integration: the
real ./serve and other processes; every test there is marked `integration` (`-m integration` or
`-m "not integration"` select them). The helper modules both use sit next to this file and are imported by
their plain names: images, reference (open_clip computed directly), http_helper (post/get to a test client
or a running server), server (./serve in a process), static_server (local HTTP servers), text_towers.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "container"))
sys.path.insert(0, str(REPO / "tests"))
# No hub here: open_clip must never try to download anything during tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# One source for the tiny model's config: the Docker smoke test reads the same file.
TINY_CFG = json.loads((REPO / "tests" / "fixtures" / "tiny_open_clip_config.json").read_text())
# SigLIP-style: a learned logit bias, scored with a sigmoid.
TINY_SIGLIP_CFG = {**TINY_CFG, "init_logit_bias": -10.0}


INTEGRATION = REPO / "tests" / "integration"


def pytest_configure(config):
    config.addinivalue_line("markers", "integration: starts the real ./serve or another process (tests/integration)")


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.is_relative_to(INTEGRATION):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from clip_sagemaker.model_files import build_model_dir
    return build_model_dir(tmp_path_factory.mktemp("tiny") / "model", "tiny-test", model_cfg=TINY_CFG, seed=0)


@pytest.fixture(scope="session")
def tiny_siglip_dir(tmp_path_factory) -> Path:
    from clip_sagemaker.model_files import build_model_dir
    return build_model_dir(tmp_path_factory.mktemp("siglip") / "model", "tiny-siglip-test",
                           model_cfg=TINY_SIGLIP_CFG, seed=1)


@pytest.fixture(scope="session")
def settings(tiny_model_dir):
    from clip_sagemaker.settings import Settings
    # fp32 pinned: the value tests prove exactness on every CPU (an AMX CPU would default to bf16).
    # No wait to fill batches: after a large request the loop would hold each lone one up to 100 ms (its CPU
    # default), which made the fuzz tests three times slower. Batch forming has tests of its own
    # (test_batch_forming.py, test_model_loop.py), on loops built for them.
    return Settings(model_dir=str(tiny_model_dir), model_dir_explicit=True, max_batch_size=8, precision="fp32",
                    max_batch_wait_ms=0)


@pytest.fixture(scope="session")
def engine(settings):
    from clip_sagemaker.engine import build_engine
    from clip_sagemaker.worker_layout import Layout
    engine = build_engine(settings, Layout(workers=1, torch_threads=1, gpus=0))
    yield engine
    engine.stop()


@pytest.fixture(scope="session")
def app(settings, engine):
    from clip_sagemaker.app import create_app
    from clip_sagemaker.readiness import EngineSlot
    return create_app(settings, EngineSlot(engine))


@pytest.fixture()
def client(app):
    return app.test_client()


@pytest.fixture(scope="session")
def url_client(settings, engine):
    """A client of an app whose operator allowed image URLs on 127.0.0.1 (public endpoints refuse them)."""
    from clip_sagemaker.app import create_app
    from clip_sagemaker.engine import Engine
    from clip_sagemaker.readiness import EngineSlot

    allowed = settings.replace(image_url_allowed_hosts="127.0.0.1")
    url_engine = Engine(engine.model, allowed)
    yield create_app(allowed, EngineSlot(url_engine)).test_client()
    url_engine.stop()


@pytest.fixture(scope="session")
def reference(tiny_model_dir):
    """open_clip itself on the same weights, with no code of ours in between."""
    from reference import Reference
    return Reference(f"local-dir:{tiny_model_dir}")


@pytest.fixture(scope="session")
def siglip_reference(tiny_siglip_dir):
    from reference import Reference
    return Reference(f"local-dir:{tiny_siglip_dir}")


@pytest.fixture(scope="module")
def sagemaker_sdk_env(tmp_path_factory):
    """A MonkeyPatch under which the SageMaker SDK runs offline: telemetry opted out with the SDK's own
    config file (read on import and by every Session), its v2 warning silenced."""
    config = tmp_path_factory.mktemp("sagemaker-config") / "config.yaml"
    config.write_text("SchemaVersion: '1.0'\n"
                      "SageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SAGEMAKER_USER_CONFIG_OVERRIDE", str(config))
        patch.setenv("SAGEMAKER_ADMIN_CONFIG_OVERRIDE", str(config))
        patch.setenv("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
        yield patch


@pytest.fixture()
def serve(tmp_path):
    """Starts ./serve: `serve({"MODEL_DIR": ...})` returns a ready Server (with `wait_ready=False`, one
    just started); every server is stopped after the test, and one that was ready must exit 0."""
    from server import Servers
    with Servers(tmp_path) as servers:
        yield servers


@pytest.fixture(scope="module")
def serve_module(tmp_path_factory):
    """`serve` for module-scoped servers: they are stopped after the module's last test."""
    from server import Servers
    with Servers(tmp_path_factory.mktemp("serve")) as servers:
        yield servers
