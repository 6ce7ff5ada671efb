"""The text embedding cache: repeated labels and prompts cost no forward pass."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from images import b64, pattern

from clip_sagemaker.text_cache import TextCache


class CountingEncoder:
    def __init__(self):
        self.calls: list[list[str]] = []

    def __call__(self, texts):
        self.calls.append(list(texts))
        return np.stack([np.full(4, float(len(t)), np.float32) for t in texts])


def test_cached_texts_are_not_encoded_again():
    cache, encoder = TextCache("m", capacity=10), CountingEncoder()
    first = cache.encode(["cat", "dog"], encoder)
    second = cache.encode(["dog", "cat", "bird"], encoder)
    assert encoder.calls == [["cat", "dog"], ["bird"]]
    np.testing.assert_array_equal(second[:2], first[::-1])
    assert cache.stats() == {"capacity": 10, "size": 3, "hits": 2, "misses": 3}


def test_a_text_repeated_within_one_call_is_encoded_once():
    cache, encoder = TextCache("m", capacity=10), CountingEncoder()
    out = cache.encode(["cat", "cat", "dog", "cat"], encoder)
    assert encoder.calls == [["cat", "dog"]] and out.shape == (4, 4)


def test_the_least_recently_used_text_is_evicted_first():
    cache, encoder = TextCache("m", capacity=2), CountingEncoder()
    cache.encode(["a", "b"], encoder)
    cache.encode(["a"], encoder)          # a is now the most recent
    cache.encode(["c"], encoder)          # evicts b
    cache.encode(["a", "b"], encoder)
    assert encoder.calls[-1] == ["b"] and cache.stats()["size"] == 2


def test_capacity_zero_disables_the_cache():
    cache, encoder = TextCache("m", capacity=0), CountingEncoder()
    cache.encode(["a"], encoder)
    cache.encode(["a"], encoder)
    assert encoder.calls == [["a"], ["a"]] and cache.stats()["size"] == 0


def test_cached_vectors_cannot_be_modified_by_a_caller():
    cache = TextCache("m", capacity=4)
    cache.encode(["a"], CountingEncoder())
    stored = cache._entries[("m", "a")]
    with pytest.raises(ValueError):
        stored[0] = 5.0


def test_concurrent_use_gives_every_caller_its_right_vectors():
    cache, encoder = TextCache("m", capacity=50), CountingEncoder()
    errors = []

    def worker(seed):
        texts = [f"label-{(seed + i) % 30}" for i in range(10)]
        out = cache.encode(texts, encoder)
        if not np.array_equal(out[:, 0], [len(t) for t in texts]):
            errors.append(seed)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert not errors


def test_known_labels_in_a_new_label_set_run_only_the_image_tower(client, engine, reference):
    # The same labels in another order are another label set (a class-weight cache miss, see
    # test_prompt_ensembles.py), but their prompts are known texts.
    classes = [["cat", 1], ["dog", 0], ["car", 0], ["tree", 0], ["house", 0], ["boat", 0]]
    body = {"images": [b64(pattern(70))], "classes": classes}
    first = client.post("/invocations", data=json.dumps(body), content_type="application/json").get_json()
    before_batches, before_hits = engine.loop.batches_run, engine.text_cache.hits
    body["classes"] = classes[::-1]
    second = client.post("/invocations", data=json.dumps(body), content_type="application/json").get_json()
    assert engine.loop.batches_run - before_batches == 1  # the image; the six prompts came from the cache
    assert engine.text_cache.hits - before_hits == 6
    assert second[0]["confidence"] == first[0]["confidence"]
    assert second[0]["prompts"][1] == first[0]["prompts"][1]  # the same labels ranked the same way
    info = client.get("/info").get_json()
    assert info["text_cache"]["hits"] >= 6 and info["trimmed_text"] is True


def test_jpeg_draft_decodes_near_the_model_size_and_png_is_untouched():
    from images import encode
    from clip_sagemaker.inputs import decode_image

    photo = pattern(71, size=(640, 480))
    drafted = decode_image(encode(photo, "JPEG", quality=90), "image", 10 ** 9, draft_size=224)
    assert drafted.size == (320, 240)  # half scale: the smallest that keeps both sides >= 224
    assert decode_image(encode(photo, "JPEG", quality=90), "image", 10 ** 9).size == (640, 480)
    assert decode_image(encode(photo, "PNG"), "image", 10 ** 9, draft_size=224).size == (640, 480)


def test_throughput_switches_are_settings():
    from clip_sagemaker.settings import Settings
    s = Settings.from_env({"TEXT_CACHE_SIZE": "0", "TEXT_TRIM": "false", "JPEG_DRAFT": "no"})
    assert (s.text_cache_size, s.trim_text, s.jpeg_draft) == (0, False, False)
    assert Settings.from_env({}).text_cache_size == 10_000
