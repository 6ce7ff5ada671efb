"""A multi-model endpoint driven the way SageMaker drives it, over HTTP against the real ./serve with
SAGEMAKER_MULTI_MODEL=true: ready with no model, two different model directories loaded by name and each
answering with its own model's values (against open_clip), a load past the memory limit refused with 507,
one model unloaded (404 after) and its memory share reused, while the other keeps answering throughout."""
from __future__ import annotations

import io
import json
import shutil
import threading

import numpy as np
import requests

from http_helper import get, post
from images import b64, pattern
from reference import cosine

TARGET = "X-Amzn-SageMaker-Target-Model"


def _load(server, name, url):
    return post(server, "/models", {"model_name": name, "url": str(url)}, **{TARGET: f"{name}.tar.gz"})


def _embed_text(server, name, text):
    response = post(server, f"/models/{name}/invoke", {"task": "embed", "texts": [text]}, **{TARGET: f"{name}.tar.gz"})
    return response.status_code, (response.json()["text_embeddings"][0] if response.status_code == 200 else None)


def test_two_models_load_answer_unload_and_the_memory_limit_holds(serve, tmp_path, tiny_model_dir, tiny_siglip_dir,
                                                                   reference, siglip_reference):
    from clip_sagemaker.multi_model import MEMORY_FACTOR

    estimate_mb = (tiny_model_dir / "open_clip_model.safetensors").stat().st_size * MEMORY_FACTOR / 2**20
    # Room for two tiny models' estimates, not three (the SigLIP one is the same size plus its bias).
    server = serve({"SAGEMAKER_MULTI_MODEL": "true", "MULTI_MODEL_MEMORY_MB": str(int(2.5 * estimate_mb)),
                    "SAGEMAKER_MODEL_SERVER_WORKERS": "2", "MODEL_DIR": ""})
    assert len(server.workers()) == 1  # one process holds every model, whatever the worker setting
    assert get(server, "/models").json() == {"models": []}

    assert _load(server, "clip", tiny_model_dir).status_code == 200
    assert _load(server, "siglip", tiny_siglip_dir).status_code == 200
    assert _load(server, "clip", tiny_model_dir).status_code == 409

    log_offset = len(server.log())
    status, vector = _embed_text(server, "clip", "a red car")
    assert status == 200 and cosine(vector, reference.texts(["a red car"])[0]) > 0.9999
    logged = server.requests_logged(log_offset)
    assert [(r["route"], r["target_model"]) for r in logged] == [("/models/clip/invoke", "clip.tar.gz")]
    image = pattern(7)
    npy = post(server, "/models/siglip/invoke", {"task": "embed", "images": [b64(image)]}, Accept="application/x-npy")
    assert npy.headers["Content-Type"] == "application/x-npy"
    assert cosine(np.load(io.BytesIO(npy.content))[0], siglip_reference.images([image])[0]) > 0.9999
    lines = post(server, "/models/siglip/invoke", b'{"text": "a dog"}\n{"text": "a cat"}\n', "application/jsonlines")
    records = [json.loads(line) for line in lines.text.splitlines()]
    assert [cosine(r["embedding"], ref) > 0.9999 for r, ref in zip(records, siglip_reference.texts(["a dog", "a cat"]))] \
        == [True, True]

    # SigLIP keeps answering, with its own values, while models are refused, unloaded and loaded.
    expected = siglip_reference.texts(["a lighthouse"])[0]
    stop, answers = threading.Event(), []

    def keep_asking():
        while not stop.is_set():
            answers.append(_embed_text(server, "siglip", "a lighthouse"))

    asker = threading.Thread(target=keep_asking)
    asker.start()
    try:
        third = tmp_path / "third"
        shutil.copytree(tiny_model_dir, third)
        refused = _load(server, "third", third)
        assert refused.status_code == 507
        error = refused.json()["error"]
        assert error["code"] == "insufficient_memory" and error["needed_mb"] > error["available_mb"]

        assert server_delete(server, "clip").status_code == 200
        assert get(server, "/models/clip").status_code == 404
        assert _embed_text(server, "clip", "a red car")[0] == 404
        assert server_delete(server, "clip").status_code == 404

        assert _load(server, "third", third).status_code == 200  # the unloaded model's share is free again
        status, vector = _embed_text(server, "third", "a red car")
        assert status == 200 and cosine(vector, reference.texts(["a red car"])[0]) > 0.9999
    finally:
        stop.set()
        asker.join(timeout=30)
    assert len(answers) >= 3
    assert all(status == 200 and cosine(vector, expected) > 0.9999 for status, vector in answers)
    names = [m["modelName"] for m in get(server, "/models").json()["models"]]
    assert names == ["siglip", "third"]


def server_delete(server, name):
    return requests.delete(f"{server.url}/models/{name}", timeout=30)
