"""The class-weight cache on its own: LRU by classes, keys by model, label order and templates, read-only
weights, and no client text kept in memory (see test_prompt_ensembles.py for it inside the server)."""
from __future__ import annotations

import numpy as np
import pytest

from clip_sagemaker.class_weight_cache import ClassWeightCache, digest


def weights_of(labels):
    return np.arange(len(labels) * 4, dtype=np.float32).reshape(len(labels), 4)


class Builder:
    def __init__(self):
        self.built = []

    def __call__(self, labels, templates):
        def build():
            self.built.append((labels, templates))
            return weights_of(labels)
        return build


def test_a_repeated_key_is_built_once_and_counted_as_a_hit():
    cache, build = ClassWeightCache("m", capacity=10), Builder()
    first = cache.get(("a", "b"), ("t {label}",), build(("a", "b"), ("t {label}",)))
    again = cache.get(("a", "b"), ("t {label}",), build(("a", "b"), ("t {label}",)))
    assert again is first and len(build.built) == 1
    assert cache.stats() == {"capacity": 10, "size": 2, "entries": 1, "hits": 1, "misses": 1}
    with pytest.raises(ValueError):
        first[0, 0] = 1.0  # shared between requests: read-only


@pytest.mark.parametrize("other", [(("b", "a"), ("t {label}",)), (("a", "b"), ("u {label}",)),
                                   (("a", "b"), ("t {label}", "u {label}")), (("ab",), ("t {label}",))])
def test_label_order_and_templates_are_part_of_the_key(other):
    cache, build = ClassWeightCache("m", capacity=10), Builder()
    cache.get(("a", "b"), ("t {label}",), build(("a", "b"), ("t {label}",)))
    cache.get(*other, build(*other))
    assert len(build.built) == 2


def test_the_least_recently_used_label_sets_go_first_counted_in_classes():
    cache, build = ClassWeightCache("m", capacity=5), Builder()
    for labels in (("a", "b"), ("c", "d"), ("a", "b"), ("e", "f")):  # 6 classes > 5: ("c", "d") goes
        cache.get(labels, ("t",), build(labels, ("t",)))
    assert cache.stats()["size"] == 4 and cache.stats()["entries"] == 2
    cache.get(("a", "b"), ("t",), build(("a", "b"), ("t",)))
    cache.get(("c", "d"), ("t",), build(("c", "d"), ("t",)))
    assert build.built[-1] == (("c", "d"), ("t",)) and len(build.built) == 4


def test_a_label_set_larger_than_the_cache_and_a_disabled_cache_keep_nothing():
    for capacity, labels in ((3, ("a", "b", "c", "d")), (0, ("a",))):
        cache, build = ClassWeightCache("m", capacity=capacity), Builder()
        cache.get(labels, ("t",), build(labels, ("t",)))
        cache.get(labels, ("t",), build(labels, ("t",)))
        assert len(build.built) == 2 and cache.stats()["size"] == 0


def test_keys_hold_digests_not_the_clients_texts():
    cache = ClassWeightCache("m", capacity=10)
    template = "x" * 100_000 + " {label}"
    cache.get(("a",), (template,), lambda: weights_of(("a",)))
    [key] = cache._entries
    assert all(len(part) <= 32 for part in key[1:])
    assert digest(("ab", "c")) != digest(("a", "bc"))
