"""A bounded LRU cache of zero-shot class weights, so that a label set classified again costs only the image
tower: on a hit no prompt is rendered, looked up in the text cache or encoded.

Keys are (model, labels, templates), in order: the weights of one label set with one template set do not
depend on the request they came in. Labels and templates are keyed by a SHA-256 digest, not kept: a client's
templates may be megabytes of text, and thousands of entries of them would be gigabytes. The capacity counts
class vectors (one per label), as TEXT_CACHE_SIZE counts texts; a label set larger than the whole capacity
is not kept. Weights are stored read-only.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Callable

import numpy as np

from . import metrics

Key = tuple[str, bytes, bytes]


def digest(texts: tuple[str, ...]) -> bytes:
    """One digest of the texts in order; each is length-prefixed, so that ("ab", "c") and ("a", "bc") differ."""
    sha = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8", "surrogatepass")
        sha.update(len(data).to_bytes(8, "little"))
        sha.update(data)
    return sha.digest()


class ClassWeightCache:
    def __init__(self, model_key: str, capacity: int):
        self._model_key = model_key
        self.capacity = capacity
        self._entries: OrderedDict[Key, np.ndarray] = OrderedDict()
        self._rows = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, labels: tuple[str, ...], templates: tuple[str, ...],
            build: Callable[[], np.ndarray]) -> np.ndarray:
        """The weights of `labels` with `templates`, calling `build` for them on a miss. Two requests that
        miss at once both build: the cache holds no lock while the model works."""
        key = (self._model_key, digest(labels), digest(templates))
        with self._lock:
            weights = self._entries.get(key)
            if weights is not None:
                self._entries.move_to_end(key)
                self.hits += 1
            else:
                self.misses += 1
        metrics.count_lookups(metrics.CLASS_WEIGHT_CACHE, int(weights is not None), int(weights is None))
        if weights is not None:
            return weights
        weights = np.array(build())
        weights.setflags(write=False)
        if len(labels) <= self.capacity:
            self._keep(key, weights)
        return weights

    def _keep(self, key: Key, weights: np.ndarray) -> None:
        with self._lock:
            if key not in self._entries:
                self._rows += len(weights)
            self._entries[key] = weights
            while self._rows > self.capacity:
                _, evicted = self._entries.popitem(last=False)
                self._rows -= len(evicted)

    def stats(self) -> dict:
        with self._lock:
            return {"capacity": self.capacity, "size": self._rows, "entries": len(self._entries),
                    "hits": self.hits, "misses": self.misses}
