"""Model selection the earlier systems' way (CLIP_MODEL, MODEL_ID), through the real ./serve."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from http_helper import get, post

REVISION = "0123456789abcdef0123456789abcdef01234567"


def hub_cache(root, repo: str, model_dir):
    """A Hugging Face Hub cache holding `repo`, laid out as huggingface_hub writes it."""
    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(REVISION)
    snapshot = folder / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    for name in ("open_clip_config.json", "open_clip_model.safetensors"):
        shutil.copy(model_dir / name, snapshot / name)
    return root


def test_clip_model_hf_hub_id_loads_offline_from_the_cache(serve, tiny_model_dir, reference, tmp_path):
    from clip_sagemaker.model_source import resolve_model_source
    from clip_sagemaker.settings import Settings
    if resolve_model_source(Settings()).name.startswith("local-dir:"):
        pytest.skip("this machine has a model in /opt/ml/model, which would take precedence")
    cache = hub_cache(tmp_path / "hub", "test-org/tiny-clip", tiny_model_dir)
    srv = serve({"CLIP_MODEL": "hf-hub:test-org/tiny-clip", "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1",
                 "MODEL_ID": "tiny-from-the-hub"})
    info = get(srv, "/info").json()
    assert info["model"] == "tiny-from-the-hub" and "test-org/tiny-clip" in info["source"]
    answer = post(srv, "/embeddings", {"text": "red sofa"}).json()
    assert answer["model"] == "tiny-from-the-hub"
    np.testing.assert_allclose(answer["embeddings"], reference.texts(["red sofa"], normalize=False), atol=1e-4)


def test_clip_model_hf_hub_id_missing_from_the_cache_stops_serve(serve, tmp_path):
    from clip_sagemaker.model_source import resolve_model_source
    from clip_sagemaker.settings import Settings
    if resolve_model_source(Settings()).name.startswith("local-dir:"):
        pytest.skip("this machine has a model in /opt/ml/model, which would take precedence")
    srv = serve({"CLIP_MODEL": "hf-hub:test-org/not-there", "HF_HUB_CACHE": str(tmp_path / "empty"),
                 "HF_HUB_OFFLINE": "1"}, wait_ready=False)
    assert srv.wait_exit() != 0
    assert "FATAL" in srv.log() and "test-org/not-there" in srv.log()
